"""The ClickHouse writer's writes stay in order (a real 18.16 server).

The writer sends a table's change log, then its state (partition states, then rows), then the next
table's change log and so on. A write the server refuses stops the writes after it, also when the
server refuses it after taking its data (the writer does not wait for that answer before preparing
its next write, only before sending it): a refused state write of one table leaves every later table
of the batch untouched, and the error is the server's own (the writer's isolation of poison relies
on both: a change it dead-letters must have no effect).
"""

from __future__ import annotations

import asyncio

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException, TypeMismatchError
from support.clickhouse_tables import ThrowawayTables
from support.schemas import text_insert

from cdcfast.events import PARTITION_DELETE, ChangeEvent
from cdcfast.sinks.clickhouse import ClickHouseSink

pytestmark = pytest.mark.services
TS = 1_700_000_000_000_000
TABLES = ("first", "second", "third")


def insert(keyspace: str, table: str, seq: int) -> ChangeEvent:
    return text_insert(keyspace, table, 1, seq, seq, TS + seq)


def counts(client: Client, keyspace: str) -> dict[str, tuple[int, int]]:
    """Per table: (change-log rows, state rows), each stored once however often written."""
    return {
        t: (
            client.execute(f"SELECT count() FROM `{keyspace}`.`{t}_changes` FINAL")[0][0],
            client.execute(f"SELECT count() FROM `{keyspace}`.`{t}__rows` FINAL")[0][0],
        )
        for t in TABLES
    }


def test_a_refused_state_write_stops_the_later_tables_writes() -> None:
    db = ThrowawayTables("fx_", TABLES)
    dsn, keyspace, schema, tables, client = db.dsn, db.keyspace, db.schema, db.tables, db.client
    events = [insert(keyspace, t, seq) for t in TABLES for seq in range(1, 4)]

    async def run() -> None:
        sink = ClickHouseSink(dsn)
        await sink.connect()
        await sink.prepare(schema)
        # The second table's state refuses text in column a (altered by hand, as an operator might).
        client.execute(f"ALTER TABLE `{keyspace}`.second__rows MODIFY COLUMN a Nullable(UInt8)")
        with pytest.raises(TypeMismatchError, match="Column a"):
            await sink.apply(events, tables, keyspace, (1, 9))
        assert counts(client, keyspace) == {"first": (3, 3), "second": (3, 0), "third": (0, 0)}
        assert await sink.checkpoint(keyspace) is None
        # The sink goes on: the tables it can write, written in full.
        later = [e for e in events if e.table != "second"]
        await sink.apply(later, tables, keyspace, (1, 9))
        assert counts(client, keyspace) == {"first": (3, 3), "second": (3, 0), "third": (3, 3)}
        assert await sink.checkpoint(keyspace) == (1, 9)
        await sink.close()

    asyncio.run(run())


@pytest.mark.parametrize("refusing", ["second_changes", "second__rows", "second__partitions"])
def test_a_write_the_server_refuses_stops_the_later_writes(refusing: str) -> None:
    """The server refuses a write after taking its data (a materialized view fails on it): the
    writer learns it before its next write (it may prepare the next table's rows meanwhile), and
    writes nothing after it, neither of this table nor of later ones."""
    db = ThrowawayTables("fr_", TABLES)
    dsn, keyspace, schema, tables, client = db.dsn, db.keyspace, db.schema, db.tables, db.client
    # each table: three rows, and a partition deleted (a partition state to write)
    events = [e for t in TABLES for e in [*(insert(keyspace, t, seq) for seq in range(1, 4)), deletion(keyspace, t)]]
    order = [f"{t}{suffix}" for t in TABLES for suffix in ("_changes", "__partitions", "__rows")]  # as written

    async def run() -> None:
        sink = ClickHouseSink(dsn)
        await sink.connect()
        await sink.prepare(schema)
        db.refuse_writes_to(refusing)
        with pytest.raises(ServerException, match="throwIf"):
            await sink.apply(events, tables, keyspace, (1, 9))
        later = order[order.index(refusing) + 1 :]
        assert all(rows(client, keyspace, table) == 0 for table in later), {t: rows(client, keyspace, t) for t in later}
        assert await sink.checkpoint(keyspace) is None
        client.execute(f"DROP TABLE `{keyspace}`.refuse")
        await sink.apply(events, tables, keyspace, (1, 9))  # applied again: all of it, once
        assert counts(client, keyspace) == {t: (4, 3) for t in TABLES}
        assert all(rows(client, keyspace, f"{t}__partitions") == 1 for t in TABLES)
        assert await sink.checkpoint(keyspace) == (1, 9)
        await sink.close()

    asyncio.run(run())


def deletion(keyspace: str, table: str) -> ChangeEvent:
    return ChangeEvent(
        b"",
        keyspace=keyspace,
        table=table,
        op=PARTITION_DELETE,
        partition_key=[(2).to_bytes(4, "big")],
        clustering=[],
        ts=TS + 10,
        deletion_ts=TS + 10,
        deletion_time=1_700_000_000,
        segment_id=1,
        position=10,
    ).with_content_id()


def rows(client: Client, keyspace: str, table: str) -> int:
    return client.execute(f"SELECT count() FROM `{keyspace}`.`{table}`")[0][0]


def test_partition_states_stored_without_their_rows_are_made_right_by_the_replay() -> None:
    """A partition deletion's state stored, the rows it hides refused (as a crash between the two
    would leave them): applying the batch again hides the rows."""
    db = ThrowawayTables("fp_", ("first",))
    dsn, keyspace, schema, tables, client = db.dsn, db.keyspace, db.schema, db.tables, db.client
    rows_of_2 = [text_insert(keyspace, "first", 2, seq, seq, TS + seq) for seq in range(1, 4)]

    def shown() -> list[tuple]:
        return client.execute(f"SELECT id, seq FROM `{keyspace}`.first ORDER BY id, seq")

    async def run() -> None:
        sink = ClickHouseSink(dsn)
        await sink.connect()
        await sink.prepare(schema)
        await sink.apply(rows_of_2, tables, keyspace, (1, 5))
        assert shown() == [(2, 1), (2, 2), (2, 3)]
        db.refuse_writes_to("first__rows")
        with pytest.raises(ServerException, match="throwIf"):
            await sink.apply([deletion(keyspace, "first")], tables, keyspace, (1, 10))
        assert rows(client, keyspace, "first__partitions") == 1  # the deletion's state is stored
        client.execute(f"DROP TABLE `{keyspace}`.refuse")
        await sink.apply([deletion(keyspace, "first")], tables, keyspace, (1, 10))
        assert shown() == []
        await sink.close()

    asyncio.run(run())
