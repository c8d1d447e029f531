"""Writers of several nodes into one PostgreSQL database lock partitions in one order (a real server).

Each writer locks a batch's partition rows table by table, in key order within a table. If two
writers took the tables in different orders (the order their batches first mention them), one could
hold a partition of the first table while waiting for one of the second that the other holds, and
the other wait for the first: PostgreSQL would end one transaction as a deadlock. Tables are taken
in name order, so a batch mentioning ``t2`` first waits for ``t1`` holding nothing.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from support.schemas import tables_schema
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.events import INSERT, TRUNCATE, Cell, ChangeEvent
from cdcfast.sinks.merge import partition_key_bytes
from cdcfast.sinks.postgres import PostgresSink

pytestmark = pytest.mark.services
TS = 1_700_000_000_000_000


def insert(keyspace: str, table: str, pk: int, position: int) -> ChangeEvent:
    return ChangeEvent(
        b"",
        keyspace=keyspace,
        table=table,
        op=INSERT,
        partition_key=[pk.to_bytes(4, "big")],
        clustering=[(1).to_bytes(4, "big")],
        ts=TS + position,
        liveness_ts=TS + position,
        cells=[Cell("a", 0, TS + position, f"{table} {pk}".encode())],
        segment_id=1,
        position=position,
    ).with_content_id()


async def waits_on_a_lock(probe: asyncpg.Connection, sink: PostgresSink, task: asyncio.Future[None]) -> None:
    """Until ``sink``'s backend waits for a lock (or its write ended)."""
    assert sink.conn is not None
    pid = sink.conn.get_server_pid()
    for _ in range(300):
        if task.done():
            return
        if await probe.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the writer neither waited for a lock nor ended within 15 s")


def test_writers_whose_batches_name_tables_in_other_orders_do_not_deadlock() -> None:
    dsn = ensure_services(["postgres"])["postgres"]
    keyspace = "lo_" + uuid.uuid4().hex[:8]
    schema = tables_schema(keyspace, ("t1", "t2"))
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}

    async def run() -> None:
        database = await fresh_database(dsn)
        first, second = PostgresSink(database, name="pg"), PostgresSink(database, name="pg")
        for sink in (first, second):
            await sink.connect()
        # Every partition stored once, so that each writer locks rows that exist.
        await first.apply([insert(keyspace, t, pk, pk) for t in ("t1", "t2") for pk in (1, 2)], tables, "node0", None)
        holder, probe = await asyncpg.connect(database), await asyncpg.connect(database)
        holder_tx = holder.transaction()
        await holder_tx.start()
        await holder.execute(
            f'SELECT 1 FROM "{keyspace}"."t1__partitions" WHERE _pk = $1 FOR UPDATE',
            partition_key_bytes([(1).to_bytes(4, "big")]),
        )
        # node2's batch names t2 first, then t1's partitions 1 (held above) and 2.
        node2 = asyncio.ensure_future(
            second.apply(
                [insert(keyspace, "t2", 1, 10), insert(keyspace, "t1", 1, 11), insert(keyspace, "t1", 2, 12)],
                tables,
                "node2",
                (1, 12),
            )
        )
        await waits_on_a_lock(probe, second, node2)
        # node1's batch names t1 (partition 2) first, then t2 (partition 1).
        node1 = asyncio.ensure_future(
            first.apply([insert(keyspace, "t1", 2, 20), insert(keyspace, "t2", 1, 21)], tables, "node1", (1, 21))
        )
        await waits_on_a_lock(probe, first, node1)
        await holder_tx.commit()
        outcomes = await asyncio.wait_for(asyncio.gather(node1, node2, return_exceptions=True), 60)
        assert [o for o in outcomes if o is not None] == []
        assert await first.checkpoint("node1") == (1, 21) and await first.checkpoint("node2") == (1, 12)
        for connection in (holder, probe):
            await connection.close()
        for sink in (first, second):
            await sink.close()

    asyncio.run(run())


def test_writers_whose_change_logs_hold_the_same_events_in_other_orders_do_not_deadlock() -> None:
    """Replicas' commit logs hold the same changes (the same event ids) in their own orders. Each
    writer inserts a table's change-log rows in event-id order: one that meets an id another writer
    holds waits for it holding only smaller ids, never the other way round."""
    dsn = ensure_services(["postgres"])["postgres"]
    keyspace = "lo_" + uuid.uuid4().hex[:8]
    schema = tables_schema(keyspace, ("t1",))
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}
    one, two, held = (insert(keyspace, "t1", pk, pk) for pk in (1, 2, 3))

    async def run() -> None:
        database = await fresh_database(dsn)
        first, second = PostgresSink(database, name="pg"), PostgresSink(database, name="pg")
        for sink in (first, second):
            await sink.connect()
            await sink.prepare(schema)
        holder, probe = await asyncpg.connect(database), await asyncpg.connect(database)
        holder_tx = holder.transaction()
        await holder_tx.start()
        await holder.execute(  # a third writer's change-log row of ``held``, not committed yet
            f'INSERT INTO "{keyspace}"."t1_changes" (event_id, op, ts, change_time, segment_id, position, '
            "source, key) VALUES ($1, 'insert', 0, now(), 1, 3, 'node3', '{}')",
            uuid.UUID(bytes=held.event_id),
        )
        node1 = asyncio.ensure_future(first.apply([one, held, two], tables, "node1", (1, 3)))
        await waits_on_a_lock(probe, first, node1)
        node2 = asyncio.ensure_future(second.apply([two, held, one], tables, "node2", (1, 3)))
        await waits_on_a_lock(probe, second, node2)
        await holder_tx.rollback()
        outcomes = await asyncio.wait_for(asyncio.gather(node1, node2, return_exceptions=True), 60)
        assert [o for o in outcomes if o is not None] == []
        assert await probe.fetchval(f'SELECT count(*) FROM "{keyspace}"."t1_changes"') == 3
        for connection in (holder, probe):
            await connection.close()
        for sink in (first, second):
            await sink.close()

    asyncio.run(run())


def test_a_truncation_beside_another_writers_merge_does_not_deadlock() -> None:
    """A writer applying a TRUNCATE empties the table's partitions, rows and row tombstones. It
    locks the partitions first, in key order, as a merging writer does: it waits for a partition
    another writer holds before it has deleted any of that writer's rows."""
    dsn = ensure_services(["postgres"])["postgres"]
    keyspace = "lo_" + uuid.uuid4().hex[:8]
    schema = tables_schema(keyspace, ("t1", "t2"))
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}
    truncation = ChangeEvent(
        b"", keyspace, "t1", TRUNCATE, [], [], TS + 30, segment_id=1, position=30,
        truncated_segment_id=1, truncated_position=30, truncated_at=(TS + 30) // 1000,
    ).with_content_id()  # fmt: skip

    async def run() -> None:
        database = await fresh_database(dsn)
        first, second = PostgresSink(database, name="pg"), PostgresSink(database, name="pg")
        for sink in (first, second):
            await sink.connect()
        await first.apply([insert(keyspace, t, 1, 1) for t in ("t1", "t2")], tables, "node0", None)
        holder, probe = await asyncpg.connect(database), await asyncpg.connect(database)
        holder_tx = holder.transaction()
        await holder_tx.start()
        await holder.execute(
            f'SELECT 1 FROM "{keyspace}"."t2__partitions" WHERE _pk = $1 FOR UPDATE',
            partition_key_bytes([(1).to_bytes(4, "big")]),
        )
        # node2 merges t1's partition 1 (locked; its row rewritten once t2's partition is locked too).
        node2 = asyncio.ensure_future(
            second.apply([insert(keyspace, "t1", 1, 40), insert(keyspace, "t2", 1, 41)], tables, "node2", (1, 41))
        )
        await waits_on_a_lock(probe, second, node2)
        node1 = asyncio.ensure_future(first.apply([truncation], tables, "node1", (1, 30)))
        await waits_on_a_lock(probe, first, node1)
        await holder_tx.commit()
        outcomes = await asyncio.wait_for(asyncio.gather(node1, node2, return_exceptions=True), 60)
        assert [o for o in outcomes if o is not None] == []
        assert await first.checkpoint("node1") == (1, 30) and await first.checkpoint("node2") == (1, 41)
        for connection in (holder, probe):
            await connection.close()
        for sink in (first, second):
            await sink.close()

    asyncio.run(run())
