"""Each writer's events/s next to a bare COPY / native insert of the same rows, in the same run.

    python bench/bench_writers.py [--corpus c50-v8-lz4] [--segments DIR [--segment-count N]] [--rounds 3]
        [--batch 5000] [--sinks postgresql,timescaledb,clickhouse] [--out bench/results/writers.json]

Needs the throwaway servers (scripts/services.sh start). For each sink, ``--rounds`` times in turn:

1. the writer applying every change event of the corpus into a fresh database (change log, merged
   state, checkpoint; batches of 5000 events by default, as the pipeline sends them);
2. the bare load: the same change-log rows (rendered by the writers' own encoders before the clock
   starts, down to the bytes on the wire: binary COPY rows, Native-format columns) into a fresh
   table defined like the change logs (same columns and types, the same unique key; a hypertable
   on TimescaleDB; a ``ReplacingMergeTree`` on ``event_id`` on ClickHouse), by binary COPY resp.
   one native insert per batch, with the writers' session settings (LZ4 TOAST compression on
   PostgreSQL). The ratio is against this bare load;
3. the same rows encoded by the drivers in the timed part (asyncpg's ``copy_records_to_table``,
   clickhouse-driver's columnar insert of Python values), as the bare load was measured before
   session 7 (``bare_driver``).

Each side's best round counts (the machines are shared and noisy), and their ratio is printed (the
target: the writer at 70% or more of the bare rate), next to the ratio of each side's median round.
The CPU seconds of this process and of the server (PostgreSQL: the connection's backend;
ClickHouse: the server process, merges included), read from /proc when the server runs here, are
recorded too: where each side's time goes.

The corpus is decoded into events before anything is timed and kept out of the garbage collector's
sight (``gc.freeze``): a writer process holds one batch at a time, not a whole corpus.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from clickhouse_driver import Client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.services import ensure_services  # noqa: E402
from throwaway_databases import Databases  # noqa: E402

from cdcfast.commitlog import CommitLogReader, discover, load_schema  # noqa: E402
from cdcfast.events import events_from_batch  # noqa: E402
from cdcfast.sinks import open_sink  # noqa: E402
from cdcfast.sinks._chnative import change_log_columns  # noqa: E402
from cdcfast.sinks._pgcopy import change_row_copy  # noqa: E402
from cdcfast.sinks.clickhouse import CHANGE_LOG_COLUMNS, CHANGE_LOG_DEFINITION, CHANGE_LOG_TYPES  # noqa: E402
from cdcfast.sinks.clickhouse import change_record as clickhouse_record  # noqa: E402
from cdcfast.sinks.clickhouse_native import NativeClient, NativeRows  # noqa: E402
from cdcfast.sinks.postgres import CHANGE_COLUMNS, _jsonb, binary_copy, change_record  # noqa: E402
from cdcfast.sinks.postgres import TableWriter as PostgresTable  # noqa: E402
from cdcfast.transform.typemap import load_mappings  # noqa: E402

BATCH = 5000
CLICKHOUSE_DATABASES = ("shop", "clinic", "telemetry", "types", "cdcfast")


def corpus_events(name: str, segments: Path | None = None, count: int | None = None) -> tuple:
    """Every CDC change of the corpus' segments, or of the first ``count`` segments in ``segments``
    (``cdcfast generate`` output for the corpus' schema)."""
    corpus = REPO.parent / "shared" / "corpus" / name
    schema = load_schema(corpus / "schema")
    if segments is not None:
        paths = [s.path for s in discover([segments])][:count]
    else:
        scratch = tempfile.mkdtemp()
        with tarfile.open(corpus / "cdc_raw.tar.gz") as tar:
            tar.extractall(scratch, filter="data")
        paths = [Path(scratch) / "cdc_raw"]
    cdc = {(t.keyspace, t.name) for t in schema.cdc_tables()}
    events = [
        e
        for b in CommitLogReader(schema).read_paths(paths)
        for e in events_from_batch(b)
        if (e.keyspace, e.table) in cdc
    ]
    return schema, events


def change_rows(schema, events) -> list:
    """The writers' own change-log rows for every event (rendered before any clock starts)."""
    mappings = load_mappings()
    codecs = {(t.keyspace, t.name): PostgresTable(t, mappings, timescale=False).codec for t in schema.cdc_tables()}
    return [codecs[(e.keyspace, e.table)].change_row(e, "bench") for e in events]


class Clock:
    """Wall time, this process's CPU time and (when readable) a PostgreSQL backend's CPU time."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, backend_pid: int | None = None) -> None:
        self.pid = backend_pid
        self.wall, self.cpu, self.server = time.perf_counter(), time.process_time(), self._server()

    def _server(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, TypeError):
            return None
        return (int(fields[11]) + int(fields[12])) / self.TICK

    def stop(self, count: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        out: dict[str, Any] = {"per_s": count / wall, "seconds": wall, "client_cpu_s": time.process_time() - self.cpu}
        server = self._server()
        if server is not None and self.server is not None:
            out["server_cpu_s"] = server - self.server
        return out


def clickhouse_pid() -> int | None:
    """The ClickHouse server's pid, as scripts/services.sh reports it (its CPU time is the server's)."""
    status = subprocess.run(
        ["bash", str(REPO / "scripts" / "services.sh"), "status"],
        env=dict(os.environ, CDCFAST_SERVICES="clickhouse"),
        capture_output=True,
        text=True,
    )
    match = re.search(r"pid=(\d+)", status.stdout)
    return int(match.group(1)) if match else None


async def writer_run(kind: str, dsn: str, schema, events) -> dict[str, Any]:
    sink = open_sink(kind, dsn, kind)
    await sink.connect()
    await sink.prepare(schema)
    pid = await sink.conn.fetchval("SELECT pg_backend_pid()") if kind != "clickhouse" else clickhouse_pid()
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}
    clock = Clock(pid)
    for i in range(0, len(events), BATCH):
        part = events[i : i + BATCH]
        await sink.apply(part, tables, "bench", (part[-1].segment_id, part[-1].position))
    result = clock.stop(len(events))
    await sink.close()
    return result


async def bare_postgres_run(
    dsn: str, records: list[tuple], timescale: bool, encoded: list[bytes] | None = None
) -> dict[str, Any]:
    """A binary COPY of the same change-log rows into a table defined like the change logs: rows in
    binary COPY form already (``encoded``), else ``records`` encoded by asyncpg."""
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=_jsonb, decoder=bytes, schema="pg_catalog", format="binary")
    await conn.execute("SET default_toast_compression = 'lz4'")  # as the writers do: the same server work
    key = "event_id, change_time" if timescale else "event_id"
    await conn.execute(
        "CREATE TABLE bare (event_id uuid NOT NULL, op text NOT NULL, ts bigint NOT NULL, "
        "change_time timestamptz NOT NULL, segment_id bigint NOT NULL, position integer NOT NULL, "
        "source text NOT NULL, key jsonb NOT NULL, cells jsonb, deletion_ts bigint, range jsonb, "
        f"PRIMARY KEY ({key}))"
    )
    if timescale:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        await conn.execute("SELECT create_hypertable('bare', 'change_time')")
    clock = Clock(await conn.fetchval("SELECT pg_backend_pid()"))
    for i in range(0, len(records), BATCH):
        if encoded is not None:
            source = binary_copy(encoded[i : i + BATCH])
            await conn.copy_to_table("bare", source=source, columns=CHANGE_COLUMNS, format="binary")
        else:
            await conn.copy_records_to_table("bare", records=records[i : i + BATCH], columns=CHANGE_COLUMNS)
    result = clock.stop(len(records))
    await conn.close()
    return result


def bare_clickhouse_run(dsn: str, records: list[tuple], encoded: list[list[bytes]] | None = None) -> dict[str, Any]:
    """One native insert per batch of the same change-log rows, into a table defined like the
    change logs: each batch's Native-format columns already made (``encoded``), else ``records``
    encoded by clickhouse-driver."""
    client = NativeClient.from_url(dsn)
    client.execute("DROP TABLE IF EXISTS default.bare")
    client.execute(f"CREATE TABLE default.bare ({CHANGE_LOG_DEFINITION}) ENGINE = ReplacingMergeTree ORDER BY event_id")
    clock = Clock(clickhouse_pid())
    for n, i in enumerate(range(0, len(records), BATCH)):
        part = records[i : i + BATCH]
        if encoded is not None:
            columns = encoded[n]
            data = NativeRows(part, CHANGE_LOG_TYPES, lambda _: columns, lambda _: [])  # noqa: B023 - used at once
            client.execute(f"INSERT INTO default.bare ({', '.join(CHANGE_LOG_COLUMNS)}) VALUES", data)
        else:
            client.execute("INSERT INTO default.bare VALUES", [list(c) for c in zip(*part)], columnar=True)
    result = clock.stop(len(records))
    client.execute("DROP TABLE default.bare")
    return result


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best round, with every round's rate and their median (the median round's CPU seconds too)."""
    top = max(runs, key=lambda r: r["per_s"])
    middle = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in top.items()} | {
        "rounds_per_s": [round(r["per_s"]) for r in runs],
        "median_per_s": round(middle["per_s"]),
        "median_round": {k: round(v, 3) for k, v in middle.items()},
    }


def main() -> int:
    global BATCH
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="c50-v8-lz4")
    parser.add_argument("--segments", type=Path, help="generated segments for the corpus' schema instead of its own")
    parser.add_argument("--segment-count", type=int, help="with --segments: only the first N")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=BATCH, help="events per batch (the pipeline's tuning.batch_size)")
    parser.add_argument("--sinks", default="postgresql,timescaledb,clickhouse")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "writers.json")
    args = parser.parse_args()
    BATCH = args.batch
    dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
    schema, events = corpus_events(args.corpus, args.segments, args.segment_count)
    rows = change_rows(schema, events)
    pg_records = [change_record(*r) for r in rows]
    pg_encoded = [change_row_copy(*r) for r in rows]
    ch_records = [clickhouse_record(*r) for r in rows]
    ch_encoded = [change_log_columns([tuple(r) for r in rows[i : i + BATCH]]) for i in range(0, len(rows), BATCH)]
    gc.collect()
    gc.freeze()
    results: dict[str, Any] = {}
    services = {"postgresql": "postgres", "timescaledb": "timescaledb", "clickhouse": "clickhouse"}
    databases = Databases("b_")
    for kind in args.sinks.split(","):
        writer_runs, bare_runs, driver_runs = [], [], []
        for _ in range(args.rounds):
            if kind == "clickhouse":
                client = Client.from_url(dsns["clickhouse"])
                for database in CLICKHOUSE_DATABASES:
                    client.execute(f"DROP DATABASE IF EXISTS `{database}`")
                writer_runs.append(asyncio.run(writer_run(kind, dsns["clickhouse"], schema, events)))
                bare_runs.append(bare_clickhouse_run(dsns["clickhouse"], ch_records, ch_encoded))
                driver_runs.append(bare_clickhouse_run(dsns["clickhouse"], ch_records))
            else:
                dsn = dsns[services[kind]]
                writer_runs.append(asyncio.run(writer_run(kind, databases.fresh(dsn), schema, events)))
                timescale = kind == "timescaledb"
                bare_runs.append(
                    asyncio.run(bare_postgres_run(databases.fresh(dsn), pg_records, timescale, pg_encoded))
                )
                driver_runs.append(asyncio.run(bare_postgres_run(databases.fresh(dsn), pg_records, timescale)))
                databases.drop_all()
        writer, bare, driver = best(writer_runs), best(bare_runs), best(driver_runs)
        results[kind] = {
            "writer": writer,
            "bare": bare,
            "bare_driver": driver,
            "ratio": round(writer["per_s"] / bare["per_s"], 3),
            "median_ratio": round(writer["median_per_s"] / bare["median_per_s"], 3),
            "ratio_to_bare_driver": round(writer["per_s"] / driver["per_s"], 3),
        }
        print(
            f"{kind}: writer {writer['per_s']:,.0f} events/s {writer['rounds_per_s']}, "
            f"bare {bare['per_s']:,.0f} rows/s {bare['rounds_per_s']}, ratio {results[kind]['ratio']:.1%} "
            f"(medians: {results[kind]['median_ratio']:.1%}); bare with the driver's encoding "
            f"{driver['per_s']:,.0f} rows/s, ratio {results[kind]['ratio_to_bare_driver']:.1%} "
            f"(load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()}
    args.out.write_text(
        json.dumps(
            {
                "corpus": args.corpus,
                "segments": str(args.segments) if args.segments else None,
                "events": len(events),
                "batch": BATCH,
                "machine": machine,
                **results,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
