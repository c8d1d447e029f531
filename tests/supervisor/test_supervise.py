"""``cdcfast supervise``: the multiprocess pipeline from a cdc_raw folder into every sink."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from clickhouse_driver import Client
from conftest import USER_KEYSPACES, Corpus
from support.expected import as_of, canonical_rows, differences, load_expected
from support.services import ensure_services
from support.warehouse import from_clickhouse, from_postgres

from cdcfast.commitlog import load_schema
from cdcfast.sinks.clickhouse import TableWriter as ClickHouseTable
from cdcfast.sinks.postgres import TableWriter as PostgresTable
from cdcfast.transform.typemap import ClickHouseFeatures, load_mappings

pytestmark = pytest.mark.services


async def fresh_database(dsn: str) -> str:
    name = "s_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


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


async def postgres_state(dsn: str, table, when: int) -> dict:
    writer = PostgresTable(table, load_mappings(), timescale=False)
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=str, decoder=json.loads, schema="pg_catalog")
    rows = await conn.fetch(f'SELECT * FROM "{table.keyspace}"."{table.name}_as_of"(to_timestamp($1))', when)
    await conn.close()
    columns = table.partition_key + table.clustering + list(table.columns.values())
    return canonical_rows(
        table, [{c.name: from_postgres(c.type, writer.targets[c.name].sql, r[c.name]) for c in columns} for r in rows]
    )


def clickhouse_state(dsn: str, table, when: int) -> dict:
    client = Client.from_url(dsn)
    writer = ClickHouseTable(
        table, load_mappings(), ClickHouseFeatures.from_version(client.execute("SELECT version()")[0][0])
    )
    rows = client.execute(writer.as_of_select(f"toDateTime({when})"), settings={"strings_as_bytes": True})
    columns = table.partition_key + table.clustering + list(table.columns.values())
    got = canonical_rows(
        table, [{c.name: from_clickhouse(c.type, writer.sql_type(c), v) for c, v in zip(columns, row)} for row in rows]
    )
    return got


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
    # A second run finds everything delivered and changes nothing.
    again = supervise(cdc_raw, corpus.schema_dir, pg, dsns["clickhouse"])
    assert again.returncode == 0, again.stderr[-3000:]
