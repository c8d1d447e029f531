"""Each writer's events/s next to a bare COPY / native insert of the same rows, in the same run.

    python bench/bench_writers.py [--corpus c50-v8-lz4] [--out bench/results/writers.json]

Needs the throwaway servers (scripts/services.sh start). For each sink: a fresh database, then
(1) the writer applying every change event of the corpus (change log + merged state + checkpoint,
in batches of 5000), and (2) a bare load of the same change-log rows: binary COPY for PostgreSQL
and TimescaleDB, one columnar native insert per batch for ClickHouse. Prints both rates and their
ratio (the target: the writer at 70% or more of the bare rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from clickhouse_driver import Client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.services import ensure_services  # noqa: E402

from cdcfast.commitlog import CommitLogReader, load_schema  # noqa: E402
from cdcfast.events import events_from_batch  # noqa: E402
from cdcfast.sinks import open_sink  # noqa: E402
from cdcfast.sinks.postgres import CHANGE_COLUMNS, _jsonb, change_record  # noqa: E402
from cdcfast.sinks.postgres import TableWriter as PostgresTable  # noqa: E402
from cdcfast.transform.typemap import load_mappings  # noqa: E402

BATCH = 5000


def corpus_events(name: str) -> tuple:
    corpus = REPO.parent / "shared" / "corpus" / name
    scratch = tempfile.mkdtemp()
    with tarfile.open(corpus / "cdc_raw.tar.gz") as tar:
        tar.extractall(scratch, filter="data")
    schema = load_schema(corpus / "schema")
    cdc = {(t.keyspace, t.name) for t in schema.cdc_tables()}
    events = [
        e
        for b in CommitLogReader(schema).read_paths([Path(scratch) / "cdc_raw"])
        for e in events_from_batch(b)
        if (e.keyspace, e.table) in cdc
    ]
    return schema, events


async def fresh_postgres(dsn: str) -> str:
    name = "b_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


async def writer_rate(kind: str, dsn: str, schema, events) -> float:
    sink = open_sink(kind, dsn, kind)
    await sink.connect()
    await sink.prepare(schema)
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        part = events[i : i + BATCH]
        await sink.apply(part, tables, "bench", (part[-1].segment_id, part[-1].position))
    seconds = time.perf_counter() - start
    await sink.close()
    return len(events) / seconds


def change_rows(schema, events) -> list:
    """The writers' own change-log rows for every event (rendered before any clock starts)."""
    mappings = load_mappings()
    codecs = {(t.keyspace, t.name): PostgresTable(t, mappings, timescale=False).codec for t in schema.cdc_tables()}
    return [codecs[(e.keyspace, e.table)].change_row(e, "bench") for e in events]


async def bare_postgres_rate(dsn: str, schema, events, timescale: bool) -> float:
    """A binary COPY of the same change-log rows into a table defined like the change logs."""
    rows = change_rows(schema, events)
    records = [change_record(*r) for r in rows]
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=_jsonb, decoder=bytes, schema="pg_catalog", format="binary")
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
    start = time.perf_counter()
    for i in range(0, len(records), BATCH):
        await conn.copy_records_to_table("bare", records=records[i : i + BATCH], columns=CHANGE_COLUMNS)
    seconds = time.perf_counter() - start
    await conn.close()
    return len(records) / seconds


def bare_clickhouse_rate(dsn: str, schema, events) -> float:
    """One columnar native insert per batch of the same change-log rows, into a table defined like
    the change logs."""
    rows = change_rows(schema, events)
    client = Client.from_url(dsn)
    client.execute("DROP TABLE IF EXISTS default.bare")
    client.execute(
        "CREATE TABLE default.bare (event_id UUID, op String, ts Int64, change_time DateTime('UTC'), "
        "segment_id Int64, position Int32, source String, key String, cells Nullable(String), "
        "deletion_ts Nullable(Int64), range Nullable(String)) ENGINE = ReplacingMergeTree ORDER BY event_id"
    )
    records = [(uuid.UUID(bytes=r.event_id), r.op, r.ts, max(0, r.ts // 1_000_000), *r[3:]) for r in rows]
    start = time.perf_counter()
    for i in range(0, len(records), BATCH):
        part = records[i : i + BATCH]
        client.execute("INSERT INTO default.bare VALUES", [list(c) for c in zip(*part)], columnar=True)
    seconds = time.perf_counter() - start
    client.execute("DROP TABLE default.bare")
    return len(records) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="c50-v8-lz4")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "writers.json")
    args = parser.parse_args()
    dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
    schema, events = corpus_events(args.corpus)
    results = {}
    for kind, service in (("postgresql", "postgres"), ("timescaledb", "timescaledb")):
        writer = asyncio.run(writer_rate(kind, asyncio.run(fresh_postgres(dsns[service])), schema, events))
        bare = asyncio.run(
            bare_postgres_rate(asyncio.run(fresh_postgres(dsns[service])), schema, events, kind == "timescaledb")
        )
        results[kind] = {
            "writer_events_per_s": round(writer),
            "bare_copy_rows_per_s": round(bare),
            "ratio": round(writer / bare, 3),
        }
    client = Client.from_url(dsns["clickhouse"])
    for database in ("shop", "clinic", "telemetry", "types", "cdcfast"):
        client.execute(f"DROP DATABASE IF EXISTS `{database}`")
    writer = asyncio.run(writer_rate("clickhouse", dsns["clickhouse"], schema, events))
    bare = bare_clickhouse_rate(dsns["clickhouse"], schema, events)
    results["clickhouse"] = {
        "writer_events_per_s": round(writer),
        "bare_insert_rows_per_s": round(bare),
        "ratio": round(writer / bare, 3),
    }
    for sink, figures in results.items():
        print(sink, figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"corpus": args.corpus, "events": len(events), **results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
