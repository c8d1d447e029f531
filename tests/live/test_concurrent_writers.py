"""Several nodes' ClickHouse writers into one sink: interleavings that used to lose updates.

With replication factor 3, every node's cdcfast writes every change into the same ClickHouse sink
(tests/live/test_live_cluster.py). A writer's state update reads the stored partition and row
states, merges its batch and inserts what changed; ClickHouse has no transactions to make that
atomic. Each writer therefore keeps its own version of a row (``_source``), merges every writer's
versions when it reads, and after its insert looks again: a version another writer stored
meanwhile is merged and written over the winning one (docs/exactly-once.md, "Several writers").

Each test holds one writer right after its reads while another writer applies its batch
completely, then lets the first one finish: the stored state must equal what Cassandra answers
after all the writes, whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid

import pytest
from clickhouse_driver import Client
from support.schemas import one_table_schema
from support.services import ensure_services
from support.throwaway import made_clickhouse_database

from cdcfast.events import PARTITION_DELETE, UPDATE, Cell, ChangeEvent
from cdcfast.sinks import clickhouse
from cdcfast.sinks.clickhouse import ClickHouseSink
from cdcfast.sinks.errors import ErrorClass, classify

pytestmark = pytest.mark.services


def update(keyspace: str, column: str, value: str, ts: int, seq: int = 1) -> ChangeEvent:
    """``UPDATE t USING TIMESTAMP ts SET column = value WHERE id = 1 AND seq = <seq>``"""
    return ChangeEvent(
        b"", keyspace=keyspace, table="t", op=UPDATE, partition_key=[ID_1], clustering=[seq.to_bytes(4, "big")],
        ts=ts, cells=[Cell(column, 0, ts, value.encode())],
    ).with_content_id()  # fmt: skip


def partition_delete(keyspace: str, ts: int) -> ChangeEvent:
    """``DELETE FROM t USING TIMESTAMP ts WHERE id = 1``"""
    return ChangeEvent(
        b"", keyspace=keyspace, table="t", op=PARTITION_DELETE, partition_key=[ID_1], clustering=[], ts=ts,
        deletion_ts=ts, deletion_time=1,
    ).with_content_id()  # fmt: skip


ID_1 = b"\0\0\0\1"


class HeldAfterReads:
    """Make a sink stop right after it has read the stored row states, until released."""

    def __init__(self, sink: ClickHouseSink) -> None:
        self.reached, self.released = threading.Event(), threading.Event()
        execute = sink.client.execute

        def held(query: str, *args, **kwargs):
            result = execute(query, *args, **kwargs)
            if query.lstrip().startswith("SELECT") and "__rows" in query and not self.released.is_set():
                self.reached.set()
                self.released.wait(60)
            return result

        sink.client.execute = held

    def restore(self, sink: ClickHouseSink) -> None:
        self.released.set()
        del sink.client.execute  # the instance attribute goes: the class's method again


class Race:
    """Two nodes' ClickHouse writers (``a`` and ``b``) into one sink, on one table ``t``."""

    def __init__(self, static: bool = False) -> None:
        self.dsn = ensure_services(["clickhouse"])["clickhouse"]
        self.keyspace = "race_" + uuid.uuid4().hex[:10]
        self.columns = "id, seq, a, b, c" + (", s" if static else "")
        self.schema = one_table_schema(self.keyspace, static)
        self.tables = {(t.keyspace, t.name): t for t in self.schema.tables.values()}
        made_clickhouse_database(self.dsn, self.keyspace)
        self.a, self.b = self._connect(), self._connect()
        self.positions = {"node-a": 0, "node-b": 0}

    def _connect(self) -> ClickHouseSink:
        async def connect() -> ClickHouseSink:
            sink = ClickHouseSink(self.dsn, name="clickhouse")
            await sink.connect()
            await sink.prepare(self.schema)
            return sink

        return asyncio.run(connect())

    def apply(self, sink: ClickHouseSink, events: list[ChangeEvent]) -> None:
        if sink not in (self.a, self.b):  # ``cdcfast dlq replay`` of node A's letters: no checkpoint
            asyncio.run(sink.apply(events, self.tables, "node-a", None))
            return
        source = "node-a" if sink is self.a else "node-b"
        self.positions[source] += 1
        asyncio.run(sink.apply(events, self.tables, source, (1, self.positions[source])))

    def interleave(
        self, first: ClickHouseSink, first_events: list, second: ClickHouseSink, *second_batches: list
    ) -> None:
        """``first`` reads; ``second`` applies its batches; then ``first`` merges and writes."""
        hold = HeldAfterReads(first)
        errors: list[BaseException] = []

        def apply_first() -> None:
            try:
                self.apply(first, first_events)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        thread = threading.Thread(target=apply_first)
        thread.start()
        if not hold.reached.wait(60):
            hold.restore(first)
            thread.join()
            raise RuntimeError("the writer never read the stored row states: update this test to the writer")
        try:
            for batch in second_batches:
                self.apply(second, batch)
        finally:
            hold.restore(first)
            thread.join()
        if errors:
            raise errors[0]

    def state(self) -> list[tuple]:
        query = f"SELECT {self.columns} FROM `{self.keyspace}`.t ORDER BY seq"
        return Client.from_url(self.dsn).execute(query)


@pytest.fixture
def race() -> Race:
    return Race()


def test_two_writers_lose_no_update(race: Race) -> None:
    """Three updates of one row, each to its own column, logged by two nodes in different orders
    (A: e1 e2 e3, B: e2 e1 e3), one event per batch; twice one writer is held after its reads."""
    ks = race.keyspace
    e1, e2, e3 = (update(ks, c, f"{c} set", n * 1_000_000) for n, c in enumerate("abc", 1))
    race.interleave(race.a, [e1], race.b, [e2])  # a read before b stored e2
    race.apply(race.b, [e1])
    race.interleave(race.b, [e3], race.a, [e2])  # b read before a stored e2
    race.apply(race.a, [e3])
    # each writer has applied e1, e2 and e3; Cassandra's row has a, b and c set
    assert race.state() == [(1, 1, "a set", "b set", "c set")]


def test_an_older_row_stored_over_a_racing_deletion_is_hidden(race: Race) -> None:
    """B reads partition 1 for row 2 (written at ts 5); meanwhile A stores row 2, then a deletion of
    the partition at ts 10 (row 2 hidden); then B stores row 2 over it. B's later deletion changes
    nothing it can see. Cassandra: the deletion shadows row 2."""
    ks = race.keyspace
    row2, deletion = update(ks, "a", "two", 5, seq=2), partition_delete(ks, 10)
    race.interleave(race.b, [row2], race.a, [row2], [deletion])
    race.apply(race.b, [deletion])
    assert race.state() == []


def test_a_cell_written_before_a_racing_deletion_is_hidden_the_newer_one_stays(race: Race) -> None:
    """Row 1 has a (ts 5). B reads it and stores b (ts 15) while A stores a partition deletion at
    ts 10: Cassandra shows the row with b only (a is shadowed, b is newer than the deletion)."""
    ks = race.keyspace
    a5, b15, deletion = update(ks, "a", "a5", 5), update(ks, "b", "b15", 15), partition_delete(ks, 10)
    race.apply(race.a, [a5])
    race.apply(race.b, [a5])
    race.interleave(race.b, [b15], race.a, [deletion])
    race.apply(race.a, [b15])
    race.apply(race.b, [deletion])
    assert race.state() == [(1, 1, None, "b15", None)]


def test_replaying_a_batch_changes_nothing_with_several_writers(race: Race) -> None:
    """Both nodes apply the same batches twice (a restart replays from an older checkpoint)."""
    ks = race.keyspace
    batch = [update(ks, "a", "a1", 1), update(ks, "b", "b2", 2, seq=2), partition_delete(ks, 0)]
    for sink in (race.a, race.b, race.a, race.b):
        race.apply(sink, batch)
    assert race.state() == [(1, 1, "a1", None, None), (1, 2, None, "b2", None)]


def test_state_tables_of_an_earlier_version_get_writers_versions(race: Race) -> None:
    """State tables made before writers kept their own versions (no ``_source`` in the sorting key)
    are migrated when a writer starts: what they hold stays, and a race after that loses nothing."""
    ks, client = race.keyspace, Client.from_url(race.dsn)
    race.apply(race.a, [update(ks, "a", "a1", 1)])
    for table, dropped in (("t__rows", ", _source String, _basis UInt64"), ("t__partitions", ", _source String")):
        made = client.execute(f"SHOW CREATE TABLE `{ks}`.`{table}`")[0][0]
        earlier = re.sub(r",\s*_source String(,\s*_basis UInt64)?", "", made)
        earlier = earlier.replace("ORDER BY (_pk, _key, _source)", "ORDER BY (_pk, _key)")
        earlier = earlier.replace("ORDER BY (_pk, _source)", "ORDER BY _pk")
        assert earlier != made and "_source" not in earlier, made
        columns = [name for name, *_ in client.execute(f"DESCRIBE TABLE `{ks}`.`{table}`") if name not in dropped]
        client.execute(f"RENAME TABLE `{ks}`.`{table}` TO `{ks}`.`{table}_new`")
        client.execute(earlier)
        listed = ", ".join(columns)
        client.execute(f"INSERT INTO `{ks}`.`{table}` ({listed}) SELECT {listed} FROM `{ks}`.`{table}_new`")
        client.execute(f"DROP TABLE `{ks}`.`{table}_new`")
    client.execute(f"DROP TABLE `{ks}`.t")  # the view as it was: every stored row that shows
    client.execute(
        f"CREATE VIEW `{ks}`.t AS SELECT id, seq, a, b, c FROM `{ks}`.t__rows FINAL "
        f"WHERE _visible = 1 AND _version > (SELECT max(_version) FROM `{ks}`.t__truncations)"
    )
    race.a, race.b = race._connect(), race._connect()  # writers start: the tables are migrated
    for table, key in (("t__rows", "_pk, _key, _source"), ("t__partitions", "_pk, _source")):
        query = "SELECT sorting_key FROM system.tables WHERE database = %(d)s AND name = %(t)s"
        assert client.execute(query, {"d": ks, "t": table}) == [(key,)]
    b2, c3 = update(ks, "b", "b2", 2), update(ks, "c", "c3", 3)
    race.interleave(race.a, [b2], race.b, [c3])
    race.apply(race.a, [c3])
    race.apply(race.b, [b2])
    assert race.state() == [(1, 1, "a1", "b2", "c3")]


def test_changes_logged_by_one_node_each_racing_are_both_kept(race: Race) -> None:
    """Each node logged a change the other did not (e.g. a write that reached one replica only, its
    hint not replayed yet), and the two batches race: no later batch repairs the row, so the writer
    that stored last must find the other's version after its insert."""
    ks = race.keyspace
    race.interleave(race.a, [update(ks, "a", "only a", 1)], race.b, [update(ks, "b", "only b", 2)])
    assert race.state() == [(1, 1, "only a", "only b", None)]


def test_a_deletion_logged_by_one_node_racing_a_newer_cell_leaves_the_newer_cell(race: Race) -> None:
    """Row 1 has a (ts 5) on both nodes. Only A logged the partition deletion (ts 10), only B the
    update of b (ts 15); B read before A's deletion was stored. Cassandra: the row shows b only."""
    ks = race.keyspace
    a5 = update(ks, "a", "a5", 5)
    race.apply(race.a, [a5])
    race.apply(race.b, [a5])
    race.interleave(race.b, [update(ks, "b", "b15", 15)], race.a, [partition_delete(ks, 10)])
    assert race.state() == [(1, 1, None, "b15", None)]


def test_writers_that_keep_racing_fail_the_batch_as_transient_and_it_applies_again(
    race: Race, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that finds other writers' versions after each of its rewrites gives up after
    SETTLE_ROUNDS: a transient error (the writer retries the batch with backoff), never a stop."""
    ks = race.keyspace
    monkeypatch.setattr(clickhouse, "SETTLE_ROUNDS", 0)  # no round left: as if others kept writing
    with pytest.raises(Exception) as raised:
        race.apply(race.a, [update(ks, "a", "a1", 1)])
    assert classify(raised.value) is ErrorClass.TRANSIENT
    assert "other writers kept changing" in str(raised.value) and f"{ks}.t" in str(raised.value)
    monkeypatch.undo()
    race.apply(race.a, [update(ks, "a", "a1", 1)])
    assert race.state() == [(1, 1, "a1", None, None)]


def static_update(keyspace: str, value: str, ts: int) -> ChangeEvent:
    """``UPDATE t USING TIMESTAMP ts SET s = value WHERE id = 1`` (s: a static column)"""
    return ChangeEvent(
        b"", keyspace=keyspace, table="t", op=UPDATE, partition_key=[ID_1], clustering=[], ts=ts,
        cells=[Cell("s", 0, ts, value.encode())], static=True,
    ).with_content_id()  # fmt: skip


def test_a_static_value_logged_by_one_node_racing_a_new_row_shows_on_it() -> None:
    """Table with a static column s. Row 1 exists on both nodes. Only A logged ``s = 'x'`` (ts 5),
    only B a new row 2 (ts 6); B read the partition before A's static value was stored. Cassandra
    shows s = 'x' on both rows."""
    race = Race(static=True)
    ks = race.keyspace
    row1 = update(ks, "a", "one", 1)
    race.apply(race.a, [row1])
    race.apply(race.b, [row1])
    race.interleave(race.b, [update(ks, "a", "two", 6, seq=2)], race.a, [static_update(ks, "x", 5)])
    assert race.state() == [(1, 1, "one", None, None, "x"), (1, 2, "two", None, None, "x")]


def test_a_dead_letter_replay_racing_its_own_nodes_writer_loses_nothing(race: Race) -> None:
    """``cdcfast dlq replay`` applies node A's letters (with A's name, no checkpoint) while node A's
    writer runs: the replay read before the writer stored its batch, and stores after it."""
    ks = race.keyspace
    replay = race._connect()
    race.interleave(replay, [update(ks, "b", "replayed", 2)], race.a, [update(ks, "a", "live", 1)])
    assert race.state() == [(1, 1, "live", "replayed", None)]
