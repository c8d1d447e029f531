"""The corpus' schema history replayed live: ``cdcfast supervise`` (following, never restarted)
tails c50-v8-lz4's snapshots while its ``schema/NNN.json`` files appear in the schema folder, and
every sink follows: ``shop.users.loyalty_tier`` added, ``phone`` kept (dropped_columns: keep),
``shop.returns`` created, ``shop.scratch`` created, written and dropped (kept, marked dropped), and
each state ends equal to Cassandra's ``SELECT`` with every change logged once.

The snapshots are coarser than the schema steps: ``after-seed`` and ``mid-updates`` are published
with the schema of the seed tables (014.json, before any schema-evolution statement), then the
schema files up to 019.json (loyalty_tier, phone dropped, ALTER TYPE, returns, scratch) before the
schema-evolution mutations (``after-schema``) are published; 020/021 (scratch dropped) follow, then
the bulk snapshots and the final cdc_raw.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from clickhouse_driver import Client
from conftest import CORPUS_ROOT, Corpus
from supervisor.test_tailing import publish
from support.expected import as_of, differences, load_expected
from support.pipeline import supervise_command, timescale_dsn
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import as_clickhouse_holds, clickhouse_state, fresh_clickhouse, fresh_database, postgres_state

from cdcfast.commitlog import load_schema

pytestmark = [pytest.mark.services, pytest.mark.slow]
CORPUS = "c50-v8-lz4"
POLL = 0.5


def publish_final(corpus: Corpus, cdc_raw: Path, gone: set[str]) -> None:
    """The node's cdc_raw after the workload (drained): every segment with an idx."""
    for idx in sorted(corpus.cdc_raw.glob("*_cdc.idx")):
        log = idx.name.replace("_cdc.idx", ".log")
        if log in gone:
            continue
        shutil.copyfile(corpus.cdc_raw / log, cdc_raw / (log + ".tmp"))
        (cdc_raw / (log + ".tmp")).replace(cdc_raw / log)
    for idx in sorted(corpus.cdc_raw.glob("*_cdc.idx")):
        if idx.name.replace("_cdc.idx", ".log") not in gone:
            shutil.copyfile(idx, cdc_raw / idx.name)


def copy_schemas(corpus: Corpus, folder: Path, up_to: int) -> None:
    for path in sorted(corpus.schema_dir.glob("*.json")):
        if int(path.stem) <= up_to and not (folder / path.name).exists():
            shutil.copyfile(path, folder / (path.name + ".tmp"))
            (folder / (path.name + ".tmp")).replace(folder / path.name)


async def pg_counts(dsn: str) -> Counter:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE tablename LIKE '%\\_changes' "
            "AND schemaname IN ('shop', 'clinic', 'telemetry', 'types')"
        )
        out: Counter = Counter()
        for schema, table in rows:
            out[(schema, table[: -len("_changes")])] = await conn.fetchval(f'SELECT count(*) FROM "{schema}"."{table}"')
        return out
    finally:
        await conn.close()


def ch_counts(dsn: str) -> Counter:
    client = Client.from_url(dsn)
    out: Counter = Counter()
    for database, table in client.execute(
        "SELECT database, name FROM system.tables WHERE database IN ('shop', 'clinic', 'telemetry', 'types') "
        "AND endsWith(name, '_changes')"
    ):
        out[(database, table[: -len("_changes")])] = client.execute(
            f"SELECT count() FROM `{database}`.`{table}` FINAL"
        )[0][0]
    return out


def test_schema_history_followed_live_into_every_sink(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
    fresh_clickhouse(dsns["clickhouse"])
    pg = asyncio.run(fresh_database(dsns["postgres"]))
    ts = asyncio.run(fresh_database(dsns["timescaledb"]))
    ch = dsns["clickhouse"]
    final, events = cdc_events(corpus)
    want_counts = Counter((e.keyspace, e.table) for e in {e.event_id: e for e in events}.values())

    cdc_raw, schema_dir = tmp_path / "cdc_raw", tmp_path / "schema"
    cdc_raw.mkdir()
    schema_dir.mkdir()
    copy_schemas(corpus, schema_dir, 14)  # every seed table, before any schema-evolution statement
    log = tmp_path / "log"
    process = subprocess.Popen(
        supervise_command(cdc_raw, schema_dir, pg, timescale_dsn(ts), ch, state=tmp_path / "state", poll=POLL),
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    gone: set[str] = set()  # segments delivered and deleted by cdcfast: never published again

    def note_deleted() -> None:
        gone.update(
            idx.name.replace("_cdc.idx", ".log")
            for idx in corpus.cdc_raw.glob("*_cdc.idx")
            if (cdc_raw / idx.name.replace("_cdc.idx", ".log")).exists() is False
            and idx.name.replace("_cdc.idx", ".log") in published
        )
        published.update(p.name for p in cdc_raw.glob("*.log"))

    published: set[str] = set()

    def settle(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-5000:]
            time.sleep(0.2)

    try:
        for label in ("after-seed", "mid-updates"):
            note_deleted()
            publish(corpus, label, cdc_raw, gone)
            settle(4)
        copy_schemas(corpus, schema_dir, 19)  # ADD loyalty_tier .. CREATE TABLE scratch
        settle(4)
        note_deleted()
        publish(corpus, "after-schema", cdc_raw, gone)
        settle(6)
        copy_schemas(corpus, schema_dir, 21)  # DROP TABLE scratch, and the final schema
        settle(4)
        for label in ("bulk-10000", "bulk-30000", "bulk-50000"):
            note_deleted()
            publish(corpus, label, cdc_raw, gone)
            settle(3)
        note_deleted()
        publish_final(corpus, cdc_raw, gone)
        started = time.monotonic()
        while True:
            assert process.poll() is None, log.read_text()[-5000:]
            got = [asyncio.run(pg_counts(pg)), asyncio.run(pg_counts(ts)), ch_counts(ch)]
            if all(all(g[k] >= n for k, n in want_counts.items()) for g in got):
                break
            assert time.monotonic() - started < 600, f"not delivered: {got} vs {want_counts}"
            time.sleep(1)
        settle(3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log.read_text()[-5000:]
    finally:
        if process.poll() is None:
            process.kill()

    text = log.read_text()
    assert "Traceback" not in text, text[-5000:]
    assert '"level": "error"' not in text, "no sink went down: " + text[-5000:]
    assert "segment deleted before reading" not in text
    # Zero duplicates: each change logged once in each sink (scratch's too: it was captured).
    for name, got in (
        ("postgresql", asyncio.run(pg_counts(pg))),
        ("timescaledb", asyncio.run(pg_counts(ts))),
        ("clickhouse", ch_counts(ch)),
    ):
        for key, n in want_counts.items():
            assert got[key] == n, f"[{name}] {key}: {got[key]} change-log rows, expected {n}"
        assert got[("shop", "scratch")] > 0, f"[{name}] shop.scratch was captured while it existed"
    # Each state equals Cassandra's SELECT.
    when = as_of(corpus.root)
    failures = []
    for table in final.cdc_tables():
        want = load_expected(corpus.root, table)
        for name, got in (
            ("postgresql", asyncio.run(postgres_state(pg, table, when))),
            ("timescaledb", asyncio.run(postgres_state(ts, table, when))),
        ):
            if got != want:
                failures.append(f"[{name}] " + differences(table, got, want))
        got, held = clickhouse_state(ch, table, when), as_clickhouse_holds(table, want)
        if got != held:
            failures.append("[clickhouse] " + differences(table, got, held))
    assert not failures, "\n\n".join(failures)
    # The migrations: loyalty_tier added, phone kept, scratch kept and marked dropped.
    scratch_id = str(load_schema(corpus.schema_dir / "019.json").by_name("shop", "scratch").id)
    for dsn in (pg, ts):
        conn_columns, registry = asyncio.run(pg_catalog(dsn))
        assert {"loyalty_tier", "phone"} <= conn_columns
        assert registry[("shop", "scratch")] == (scratch_id, "dropped")
        assert registry[("shop", "users")][1] == "live"
    client = Client.from_url(ch)
    names = {
        r[0]
        for r in client.execute("SELECT name FROM system.columns WHERE database = 'shop' AND table = 'users__rows'")
    }
    assert {"loyalty_tier", "phone"} <= names
    registry = {
        (r[0], r[1]): (str(r[2]), r[3])
        for r in client.execute("SELECT keyspace, table, table_id, status FROM cdcfast.tables FINAL")
    }
    assert registry[("shop", "scratch")] == (scratch_id, "dropped")


async def pg_catalog(dsn: str) -> tuple[set[str], dict]:
    conn = await asyncpg.connect(dsn)
    try:
        columns = {
            r[0]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'shop' AND table_name = 'users'"
            )
        }
        registry = {
            (r[0], r[1]): (str(r[2]), r[3])
            for r in await conn.fetch('SELECT keyspace, "table", table_id, status FROM cdcfast.tables')
        }
        return columns, registry
    finally:
        await conn.close()
