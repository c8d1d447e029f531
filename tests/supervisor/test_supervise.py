"""``cdcfast supervise``: the multiprocess pipeline from a cdc_raw folder into every sink."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clickhouse_driver import Client
from conftest import USER_KEYSPACES, Corpus
from support.expected import as_of, differences, load_expected
from support.services import ensure_services
from support.sinks import clickhouse_state, fresh_database, postgres_state

from cdcfast.commitlog import load_schema
from cdcfast.sinks.clickhouse import TableWriter as ClickHouseTable
from cdcfast.transform.typemap import ClickHouseFeatures, load_mappings

pytestmark = pytest.mark.services


def supervise(cdc_raw: Path, schema: Path, *sinks: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "cdcfast.cli",
        "supervise",
        "--cdc-raw",
        str(cdc_raw),
        "--schema",
        str(schema),
        "--until-idle",
        "--poll-interval",
        "0.2",
        "--node",
        "node1",
        *extra,
    ]
    for sink in sinks:
        args += ["--sink", sink]
    return subprocess.run(args, capture_output=True, text=True, timeout=900)


def test_until_idle_replays_a_corpus_into_every_sink(corpus: Corpus, tmp_path: Path) -> None:
    dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
    client = Client.from_url(dsns["clickhouse"])
    for database in (*USER_KEYSPACES, "cdcfast"):
        client.execute(f"DROP DATABASE IF EXISTS `{database}`")
    pg = asyncio.run(fresh_database(dsns["postgres"]))
    ts = asyncio.run(fresh_database(dsns["timescaledb"]))
    cdc_raw = tmp_path / "cdc_raw"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    result = supervise(cdc_raw, corpus.schema_dir, pg, "timescaledb://" + ts.split("://", 1)[1], dsns["clickhouse"])
    assert result.returncode == 0, result.stderr[-5000:]
    schema = load_schema(corpus.schema_dir)
    when = as_of(corpus.root)
    failures = []
    for table in schema.cdc_tables():
        want = load_expected(corpus.root, table)
        for name, got in (
            ("postgresql", asyncio.run(postgres_state(pg, table, when))),
            ("timescaledb", asyncio.run(postgres_state(ts, table, when))),
        ):
            if got != want:
                failures.append(f"[{name}] " + differences(table, got, want))
        got = clickhouse_state(dsns["clickhouse"], table, when)
        writer = ClickHouseTable(table, load_mappings(), ClickHouseFeatures.from_version("18.16"))
        for row in want.values():  # documented: a null frozen collection is [] in ClickHouse
            for c in table.columns.values():
                if writer.sql_type(c).startswith("Array") and row[c.name] in ((), frozenset()):
                    row[c.name] = None
        if got != want:
            failures.append("[clickhouse] " + differences(table, got, want))
    assert not failures, "\n\n".join(failures)
    # Delivered and COMPLETED: the segments are gone; segments without an idx are Cassandra's to delete.
    left = sorted(p.name for p in cdc_raw.iterdir())
    assert not [n for n in left if n.endswith("_cdc.idx")], left
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdcfast.cli",
            "status",
            "--json",
            "--cdc-raw",
            str(cdc_raw),
            "--schema",
            str(corpus.schema_dir),
            "--node",
            "node1",
            "--sink",
            pg,
            "--sink",
            dsns["clickhouse"],
        ],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert not report["supervisor"]["running"]
    for name in ("postgresql", "clickhouse"):
        sink = report["sinks"][name]
        assert sink["reachable"] and sink["dlq_depth"] == 0 and sink["lag_segments"] == 0, sink
        assert sink["checkpoint"][0] > 0
    # A second run finds everything delivered and changes nothing.
    again = supervise(cdc_raw, corpus.schema_dir, pg, dsns["clickhouse"])
    assert again.returncode == 0, again.stderr[-3000:]
