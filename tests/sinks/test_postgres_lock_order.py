"""Writers of several nodes into one PostgreSQL database never deadlock (a real server).

Writers of replicas apply the same changes, each in its own transactions. Everything a writer locks
it locks in one order that every writer follows: tables in name order; per table its change-log
rows and dead letters in event-id order, then its partitions in key order (a truncation too, before
deleting rows).
Each test makes the crossing that another order would deadlock on, with a third session holding a
lock until both writers wait: PostgreSQL would end one of them ("deadlock detected").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest
from support.schemas import tables_schema, text_insert
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.commitlog.schema import TableDef
from cdcfast.events import TRUNCATE, ChangeEvent
from cdcfast.sinks.merge import partition_key_bytes
from cdcfast.sinks.poison import DeadLetter
from cdcfast.sinks.postgres import PostgresSink

pytestmark = pytest.mark.services
TS = 1_700_000_000_000_000


def insert(keyspace: str, table: str, pk: int, position: int) -> ChangeEvent:
    return text_insert(keyspace, table, pk, 1, position, TS + position)


@dataclass
class Scene:
    """Two writers (``first``, ``second``) into one fresh database, a third session (``holder``) in
    a transaction of its own, and a connection to watch them (``probe``)."""

    keyspace: str
    tables: dict[tuple[str, str], TableDef]
    first: PostgresSink
    second: PostgresSink
    holder: asyncpg.Connection
    holding: asyncpg.transaction.Transaction
    probe: asyncpg.Connection

    async def hold_partition(self, table: str, pk: int) -> None:
        await self.holder.execute(
            f'SELECT 1 FROM "{self.keyspace}"."{table}__partitions" WHERE _pk = $1 FOR UPDATE',
            partition_key_bytes([pk.to_bytes(4, "big")]),
        )

    async def writing(self, sink: PostgresSink, events: list[ChangeEvent], node: str) -> asyncio.Future[None]:
        """``sink`` applying ``events`` as ``node``'s batch, once it waits for a lock (or is done)."""
        write = asyncio.ensure_future(sink.apply(events, self.tables, node, (1, events[-1].position)))
        await self.waits(sink, write, node)
        return write

    async def waits(self, sink: PostgresSink, write: asyncio.Future[None], node: str) -> None:
        """Until ``sink``'s backend waits for a lock (or ``write`` is done)."""
        assert sink.conn is not None
        pid = sink.conn.get_server_pid()
        for _ in range(300):
            if write.done():
                return
            query = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
            if await self.probe.fetchval(query, pid):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{node}'s writer neither waited for a lock nor ended within 15 s")

    async def both_end(self, *writes: asyncio.Future[None]) -> None:
        """Once the holder lets go, each write ends, none with an error."""
        await self.holding.rollback()
        outcomes = await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 60)
        assert [o for o in outcomes if o is not None] == []


@asynccontextmanager
async def scene(names: tuple[str, ...], stored: bool) -> AsyncIterator[Scene]:
    """``stored``: each table's partitions 1 and 2 written first (each writer then locks rows that exist)."""
    dsn = ensure_services(["postgres"])["postgres"]
    keyspace = "lo_" + uuid.uuid4().hex[:8]
    schema = tables_schema(keyspace, names)
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}
    database = await fresh_database(dsn)
    first, second = PostgresSink(database, name="pg"), PostgresSink(database, name="pg")
    for sink in (first, second):
        await sink.connect()
        await sink.prepare(schema)
    if stored:
        await first.apply([insert(keyspace, t, pk, pk) for t in names for pk in (1, 2)], tables, "node0", None)
    holder, probe = await asyncpg.connect(database), await asyncpg.connect(database)
    holding = holder.transaction()
    await holding.start()
    try:
        yield Scene(keyspace, tables, first, second, holder, holding, probe)
    finally:
        for connection in (holder, probe):
            await connection.close()
        for sink in (first, second):
            await sink.close()


def test_writers_whose_batches_name_tables_in_other_orders_do_not_deadlock() -> None:
    async def run() -> None:
        async with scene(("t1", "t2"), stored=True) as s:
            ks = s.keyspace
            await s.hold_partition("t1", 1)
            # node2's batch names t2 first, then t1's partitions 1 (held) and 2.
            node2 = await s.writing(
                s.second, [insert(ks, "t2", 1, 10), insert(ks, "t1", 1, 11), insert(ks, "t1", 2, 12)], "node2"
            )
            # node1's batch names t1 (partition 2) first, then t2 (partition 1).
            node1 = await s.writing(s.first, [insert(ks, "t1", 2, 20), insert(ks, "t2", 1, 21)], "node1")
            await s.both_end(node1, node2)
            assert await s.first.checkpoint("node1") == (1, 21) and await s.first.checkpoint("node2") == (1, 12)

    asyncio.run(run())


def test_writers_whose_change_logs_hold_the_same_events_in_other_orders_do_not_deadlock() -> None:
    """Replicas' commit logs hold the same changes (the same event ids) in their own orders. Each
    writer inserts a table's change-log rows in event-id order: one that meets an id another writer
    holds waits for it holding only smaller ids, never the other way round."""

    async def run() -> None:
        async with scene(("t1",), stored=False) as s:
            one, two, held = (insert(s.keyspace, "t1", pk, pk) for pk in (1, 2, 3))
            await s.holder.execute(  # a third writer's change-log row of ``held``, not committed yet
                f'INSERT INTO "{s.keyspace}"."t1_changes" (event_id, op, ts, change_time, segment_id, position, '
                "source, key) VALUES ($1, 'insert', 0, now(), 1, 3, 'node3', '{}')",
                uuid.UUID(bytes=held.event_id),
            )
            node1 = await s.writing(s.first, [one, held, two], "node1")
            node2 = await s.writing(s.second, [two, held, one], "node2")
            await s.both_end(node1, node2)
            assert await s.probe.fetchval(f'SELECT count(*) FROM "{s.keyspace}"."t1_changes"') == 3

    asyncio.run(run())


def test_a_truncation_beside_another_writers_merge_does_not_deadlock() -> None:
    """A writer applying a TRUNCATE empties the table's partitions, rows and row tombstones. It
    locks the partitions first, in key order, as a merging writer does: it waits for a partition
    another writer holds before it has deleted any of that writer's rows."""

    async def run() -> None:
        async with scene(("t1", "t2"), stored=True) as s:
            ks = s.keyspace
            truncation = ChangeEvent(
                b"", ks, "t1", TRUNCATE, [], [], TS + 30, segment_id=1, position=30,
                truncated_segment_id=1, truncated_position=30, truncated_at=(TS + 30) // 1000,
            ).with_content_id()  # fmt: skip
            await s.hold_partition("t2", 1)
            # node2 merges t1's partition 1 (locked; its row rewritten once t2's partition is locked too).
            node2 = await s.writing(s.second, [insert(ks, "t1", 1, 40), insert(ks, "t2", 1, 41)], "node2")
            node1 = await s.writing(s.first, [truncation], "node1")
            await s.both_end(node1, node2)
            assert await s.first.checkpoint("node1") == (1, 30) and await s.first.checkpoint("node2") == (1, 41)

    asyncio.run(run())


def test_writers_storing_the_same_dead_letters_in_other_orders_do_not_deadlock() -> None:
    """Dead letters (one row per change and sink) are stored in event-id order too: replicas'
    writers refusing the same changes store them without waiting for each other in a cycle."""

    async def run() -> None:
        async with scene(("t1",), stored=False) as s:
            one, two, held = (DeadLetter(insert(s.keyspace, "t1", pk, pk), "refused") for pk in (1, 2, 3))
            await s.holder.execute(  # a third writer's letter for ``held``, not committed yet
                'INSERT INTO cdcfast.dead_letters (event_id, sink, source, keyspace, "table", segment_id, '
                "position, reason, event) VALUES ($1, 'pg', 'node3', $2, 't1', 1, 3, 'refused', '')",
                uuid.UUID(bytes=held.event.event_id),
                s.keyspace,
            )
            node1 = asyncio.ensure_future(s.first.store_dead_letters([one, held, two], "node1"))
            await s.waits(s.first, node1, "node1")
            node2 = asyncio.ensure_future(s.second.store_dead_letters([two, held, one], "node2"))
            await s.waits(s.second, node2, "node2")
            await s.both_end(node1, node2)
            assert await s.probe.fetchval("SELECT count(*) FROM cdcfast.dead_letters") == 3  # each change once

    asyncio.run(run())
