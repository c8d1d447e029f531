"""Reading sink contents back for comparison with expected/ (PostgreSQL, TimescaleDB, ClickHouse)."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
from clickhouse_driver import Client

from cdcfast.commitlog import load_schema
from cdcfast.sinks.clickhouse import TableWriter as ClickHouseTable
from cdcfast.sinks.postgres import TableWriter as PostgresTable
from cdcfast.transform.typemap import ClickHouseFeatures, load_mappings
from support.expected import as_of, canonical_rows, differences, load_expected
from support.throwaway import made_postgres_database
from support.warehouse import from_clickhouse, from_postgres


def fresh_clickhouse(dsn: str) -> Client:
    """ClickHouse without the corpora's databases (keyspaces are database names there) or cdcfast's."""
    client = Client.from_url(dsn)
    for database in ("shop", "clinic", "telemetry", "types", "cdcfast"):
        client.execute(f"DROP DATABASE IF EXISTS `{database}`")
    return client


async def fresh_database(dsn: str) -> str:
    """A new, empty database on ``dsn``'s server (its DSN), dropped when the current test ends."""
    name = "s_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    made_postgres_database(dsn, name)
    return dsn.rsplit("/", 1)[0] + "/" + name


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


async def postgres_change_rows(dsn: str, schema) -> int:  # noqa: ANN001 (Schema)
    """Rows in the change logs of ``schema``'s CDC tables in PostgreSQL ``dsn``."""
    conn = await asyncpg.connect(dsn)
    total = 0
    for table in schema.cdc_tables():
        total += await conn.fetchval(f'SELECT count(*) FROM "{table.keyspace}"."{table.name}_changes"')
    await conn.close()
    return total


def postgres_differences(dsn: str, corpus) -> list[str]:  # noqa: ANN001 (conftest.Corpus)
    """How each CDC table's state in PostgreSQL ``dsn`` differs from the corpus' ``expected/``."""
    schema, when = load_schema(corpus.schema_dir), as_of(corpus.root)
    failures = []
    for table in schema.cdc_tables():
        got, want = asyncio.run(postgres_state(dsn, table, when)), load_expected(corpus.root, table)
        if got != want:
            failures.append(differences(table, got, want))
    return failures


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


def as_clickhouse_holds(table, want: dict, features: ClickHouseFeatures | None = None) -> dict:
    """Cassandra's rows (canonical, as ``load_expected``) as ClickHouse can hold them: documented, an
    Array column cannot be NULL, so a null and an empty collection are both [] and read back as None."""
    writer = ClickHouseTable(table, load_mappings(), features or ClickHouseFeatures.from_version("18.16"))
    arrays = [c.name for c in table.columns.values() if writer.sql_type(c).startswith("Array")]
    out = {key: dict(row) for key, row in want.items()}
    for row in out.values():
        for name in arrays:
            if row[name] in ((), frozenset()):
                row[name] = None
    return out
