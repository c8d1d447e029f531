"""Tailing a live cdc_raw: a corpus' snapshot states appear one after the other, as a node writes
them; cdcfast delivers each newly durable stretch and deletes what every sink has."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
from conftest import CORPUS_ROOT, Corpus
from support.pipeline import supervise_command
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.events import events_from_batch

pytestmark = pytest.mark.services
CORPUS = "c50-v8-lz4"
POLL = 0.5
STATES = ["after-seed", "mid-updates", "after-schema", "bulk-10000", "bulk-30000", "bulk-50000"]


def publish(corpus: Corpus, label: str, cdc_raw: Path, gone: set[str]) -> None:
    """Make ``cdc_raw`` look as the node's did at ``label``: segments first, then their idx files
    (an idx only ever points at synced data). Segments already deleted by cdcfast stay deleted."""
    state = corpus.snapshots / label
    for idx in sorted(state.glob("*_cdc.idx")):
        log = idx.name.replace("_cdc.idx", ".log")
        if log in gone:
            continue
        source = state / log if (state / log).exists() else corpus.cdc_raw / log
        shutil.copyfile(source, cdc_raw / (log + ".tmp"))
        (cdc_raw / (log + ".tmp")).replace(cdc_raw / log)
    for idx in sorted(state.glob("*_cdc.idx")):
        if idx.name.replace("_cdc.idx", ".log") not in gone:
            shutil.copyfile(idx, cdc_raw / idx.name)


def expected_changes(corpus: Corpus, label: str, scratch: Path) -> int:
    """Change events of the CDC tables a reader sees at ``label`` (the durable prefix)."""
    from commitlog.test_corpus_reference import assemble_snapshot

    folder = assemble_snapshot(corpus, label, scratch / label)
    schema = load_schema(corpus.schema_dir)
    cdc = {(t.keyspace, t.name) for t in schema.cdc_tables()}
    ids = {
        e.event_id
        for b in CommitLogReader(schema, require_idx=True).read_paths([folder])
        for e in events_from_batch(b)
        if (e.keyspace, e.table) in cdc
    }
    return len(ids)


async def delivered(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    tables = await conn.fetch(
        "SELECT schemaname, tablename FROM pg_tables "
        "WHERE tablename LIKE '%\\_changes' AND schemaname NOT LIKE 'pg\\_temp%'"
    )
    total = 0
    for row in tables:
        total += await conn.fetchval(f'SELECT count(*) FROM "{row["schemaname"]}"."{row["tablename"]}"')
    await conn.close()
    return total


def test_snapshot_states_are_delivered_as_they_become_durable(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    cdc_raw = tmp_path / "cdc_raw"
    cdc_raw.mkdir()
    process = subprocess.Popen(
        supervise_command(
            cdc_raw, corpus.schema_dir, dsn, state=tmp_path / "state", poll=POLL, extra=("--cdc-total-space", "1MiB")
        ),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "log", "w"),
    )
    gone: set[str] = set()
    try:
        for label in STATES:
            want = expected_changes(corpus, label, tmp_path / "expected")
            published = time.monotonic()
            publish(corpus, label, cdc_raw, gone)
            while asyncio.run(delivered(dsn)) < want:
                assert process.poll() is None, (tmp_path / "log").read_text()[-3000:]
                assert time.monotonic() - published < 120, f"{label}: not delivered"
                time.sleep(0.1)
            assert asyncio.run(delivered(dsn)) == want, f"{label}: more than the durable prefix was delivered"
            # COMPLETED and delivered segments are deleted (within a poll or two); the rest stay.
            time.sleep(3 * POLL)
            present = {p.name for p in cdc_raw.glob("*.log")}
            for idx in (corpus.snapshots / label).glob("*_cdc.idx"):
                log = idx.name.replace("_cdc.idx", ".log")
                if "COMPLETED" in idx.read_text():
                    assert log not in present, f"{label}: {log} delivered but not deleted"
                    gone.add(log)
                elif log not in gone:
                    assert log in present, f"{label}: {log} deleted before it was complete"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        # A 1 MiB cdc_total_space is soon 80% full: the operator is warned (metrics carry it too).
        assert "cdc_raw is filling" in (tmp_path / "log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
