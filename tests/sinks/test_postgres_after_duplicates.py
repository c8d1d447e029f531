"""PostgreSQL and TimescaleDB change logs keep every new change after a duplicate.

After a batch meets an event id already in the change log (another replica's writer, a replay), the
writer applies it again and writes the next batches' change-log rows through staging. An earlier
version looked the next batches' ids up instead, and a batch with no id there used to COPY the
already consumed screening: nothing, so its change-log rows were lost while its state was merged
and its checkpoint moved. Seen with three nodes' cdcfast writing into one sink
(tests/live/test_live_cluster.py): writes missing from both change logs, present in ClickHouse's.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.commitlog.schema import schema_from_rows
from cdcfast.events import UPDATE, Cell, ChangeEvent
from cdcfast.sinks.postgres import STAGED_BATCHES, PostgresSink

pytestmark = pytest.mark.services


def one_table(keyspace: str):
    def column(name: str, kind: str, position: int, ctype: str) -> dict:
        return {
            "keyspace_name": keyspace, "table_name": "t", "column_name": name, "kind": kind,
            "position": position, "type": ctype, "clustering_order": "none",
        }  # fmt: skip

    return schema_from_rows(
        {
            "keyspaces": [{"keyspace_name": keyspace, "durable_writes": True, "replication": {}}],
            "tables": [{"keyspace_name": keyspace, "table_name": "t", "id": str(uuid.uuid4()), "cdc": True}],
            "columns": [column("id", "partition_key", 0, "int"), column("v", "regular", -1, "text")],
            "types": [],
            "dropped_columns": [],
        },
        source="test",
    )


def change(keyspace: str, key: int) -> ChangeEvent:
    ts = 1_700_000_000_000_000 + key
    return ChangeEvent(
        b"", keyspace=keyspace, table="t", op=UPDATE, partition_key=[key.to_bytes(4, "big")], clustering=[],
        ts=ts, cells=[Cell("v", 0, ts, f"value {key}".encode())], segment_id=1, position=key,
    ).with_content_id()  # fmt: skip


@pytest.mark.parametrize("flavour", ["postgres", "timescaledb"])
def test_new_changes_after_a_duplicate_reach_the_change_log(flavour: str) -> None:
    dsn = ensure_services([flavour])[flavour]
    keyspace = "dup_" + uuid.uuid4().hex[:10]
    schema = one_table(keyspace)
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}

    async def run() -> None:
        sink = PostgresSink(await fresh_database(dsn), name=flavour, timescale=flavour == "timescaledb")
        await sink.connect()
        try:
            await sink.prepare(schema)
            await sink.apply([change(keyspace, 1)], tables, "node1", (1, 1))
            # node2 logged the same change, then new ones: one batch each, more than staging lasts
            await sink.apply([change(keyspace, 1)], tables, "node2", (1, 1))
            keys = range(2, STAGED_BATCHES + 4)
            for key in keys:
                await sink.apply([change(keyspace, key)], tables, "node2", (1, key))
            # and one batch of a new change with a duplicate in it
            await sink.apply([change(keyspace, 1), change(keyspace, 99)], tables, "node2", (1, 99))
            assert sink.conn is not None
            logged = sorted(r[0] for r in await sink.conn.fetch(f'SELECT ts FROM "{keyspace}".t_changes'))
            want = sorted(change(keyspace, k).ts for k in [1, *keys, 99])
            assert logged == want, f"change log {logged}, want {want}"
            state = sorted(tuple(r) for r in await sink.conn.fetch(f'SELECT id, v FROM "{keyspace}".t'))
            assert state == [(k, f"value {k}") for k in [1, *keys, 99]]
        finally:
            await sink.close()

    asyncio.run(run())
