"""Names Cassandra allows and SQL does not like: keywords, spaces, quotes, capitals."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from clickhouse_driver import Client
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.commitlog.schema import schema_from_rows
from cdcfast.events import INSERT, SET, Cell, ChangeEvent
from cdcfast.sinks import open_sink

pytestmark = pytest.mark.services
KEYSPACE, TABLE = "Select", "order"
COLUMNS = {"from": "int", "Weird Name": "text", 'quote"d': "text", "back`tick": "text"}


def schema():
    rows = {
        "keyspaces": [{"keyspace_name": KEYSPACE, "durable_writes": True}],
        "tables": [
            {"keyspace_name": KEYSPACE, "table_name": TABLE, "id": "11111111-2222-1333-8444-555555555555", "cdc": True}
        ],
        "columns": [
            {
                "keyspace_name": KEYSPACE,
                "table_name": TABLE,
                "column_name": name,
                "type": ctype,
                "kind": "partition_key" if name == "from" else "regular",
                "position": 0 if name == "from" else -1,
            }
            for name, ctype in COLUMNS.items()
        ],
        "types": [],
        "dropped_columns": [],
    }
    return schema_from_rows(rows)


def event() -> ChangeEvent:
    cells = [Cell(name, SET, 1000, value=f"value of {name}".encode()) for name in COLUMNS if name != "from"]
    return ChangeEvent(
        b"",
        KEYSPACE,
        TABLE,
        INSERT,
        [(7).to_bytes(4, "big")],
        [],
        ts=1000,
        cells=cells,
        liveness_ts=1000,
        segment_id=1,
        position=100,
    ).with_content_id()


@pytest.mark.parametrize("kind", ["postgresql", "clickhouse"])
def test_keywords_spaces_and_quotes_in_names(kind: str) -> None:
    service = "postgres" if kind == "postgresql" else "clickhouse"
    dsn = ensure_services([service])[service]
    if kind == "postgresql":
        dsn = asyncio.run(fresh_database(dsn))
    else:
        Client.from_url(dsn).execute(f"DROP DATABASE IF EXISTS `{KEYSPACE}`")
    tables = {(t.keyspace, t.name): t for t in schema().tables.values()}

    async def run() -> None:
        sink = open_sink(kind, dsn, kind)
        await sink.connect()
        await sink.apply([event()], tables, "node1", (1, 100))
        await sink.close()

    asyncio.run(run())
    if kind == "postgresql":

        async def read() -> list:
            conn = await asyncpg.connect(dsn)
            rows = await conn.fetch('SELECT "from", "Weird Name", "quote""d", "back`tick" FROM "Select"."order"')
            await conn.close()
            return [tuple(r) for r in rows]

        rows = asyncio.run(read())
    else:
        rows = Client.from_url(dsn).execute(
            'SELECT `from`, `Weird Name`, `quote"d`, `back\\`tick` FROM `Select`.`order`'
        )
    assert rows == [(7, "value of Weird Name", 'value of quote"d', "value of back`tick")]
