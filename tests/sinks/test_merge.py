"""Merge planning without a database: a sink kept in memory, written only what :func:`plan` says,
ends with the reconciliation model's own rows; replays plan nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from conftest import Corpus
from support.replay import cdc_events

from cdcfast.commitlog.schema import TableDef
from cdcfast.events import ChangeEvent
from cdcfast.sinks.merge import PartitionPlan, StoredPartition, partition_key_bytes, plan, row_key, scope
from cdcfast.sinks.state import TableState, VisibleRow


@dataclass
class MemorySink:
    """What a sink stores for one table: partition states and rows (state, visible, shown values)."""

    table: TableDef
    partitions: dict[bytes, bytes] = field(default_factory=dict)
    rows: dict[bytes, tuple[bytes, tuple[bytes, ...], bool, VisibleRow | None]] = field(default_factory=dict)

    def apply(self, events: list[ChangeEvent]) -> list[PartitionPlan]:
        pks = list(dict.fromkeys(tuple(e.partition_key) for e in events))
        stored = {pk: StoredPartition(self.partitions.get(partition_key_bytes(pk))) for pk in pks}
        whole, row_keys = scope(self.table, events)
        wanted_partitions = {partition_key_bytes(pk) for pk in whole}
        wanted_rows = set(row_keys)
        by_bytes = {partition_key_bytes(pk): pk for pk in pks}
        for key, (blob, pk_bytes, shown, _) in self.rows.items():
            if pk_bytes in wanted_partitions or key in wanted_rows:
                stored[by_bytes[pk_bytes]].rows[key] = (blob, shown)
        plans = plan(self.table, stored, events)
        for p in plans:
            if p.state is not None:
                self.partitions[p.pk_bytes] = p.state
            for key, row, blob in p.visible:
                self.rows[key] = (blob, p.pk_bytes, True, row)
            for key, blob in p.tombstones:
                self.rows[key] = (blob, p.pk_bytes, False, None)
            for key in p.gone:
                assert self.rows[key][2], "only a shown row can go"
                del self.rows[key]
        return plans


def shown(row: VisibleRow) -> tuple:
    return (
        row.partition_key,
        row.clustering,
        {k: v for k, v in row.values.items() if v is not None},
        row.expires,
        row.row_expires,
    )


def test_planned_rows_equal_the_model_and_replays_plan_nothing(corpus: Corpus) -> None:
    schema, events = cdc_events(corpus)
    for table in schema.cdc_tables():
        mine = [e for e in events if (e.keyspace, e.table) == (table.keyspace, table.name)]
        sink = MemorySink(table)
        for start in range(0, len(mine), 997):
            sink.apply(mine[start : start + 997])
        model = TableState(table)
        model.apply_all(mine)
        want = {row_key(pk, r.clustering): shown(r) for pk in model.partitions for r in model.visible_rows(pk)}
        got = {key: shown(row) for key, (_, _, visible, row) in sink.rows.items() if visible and row is not None}
        assert got.keys() == want.keys(), table.qualified_name
        assert got == want, table.qualified_name
        for start in range(0, min(len(mine), 6000), 1500):  # the same changes again, from another replica
            for p in sink.apply(mine[start : start + 1500]):
                assert (p.state, p.visible, p.tombstones, p.gone) == (None, [], [], []), table.qualified_name


def test_uuid_sort_keys_read_from_the_bytes_equal_the_uuid_module() -> None:
    import os
    import struct
    import uuid

    from cdcfast.sinks.state import _uuid_key

    def reference(raw: bytes, time_based_only: bool) -> tuple:
        value = uuid.UUID(bytes=raw)
        if value.version == 1:
            return (1, value.time, raw[8:]) if not time_based_only else (value.time, struct.unpack(">q", raw[8:])[0])
        return (value.version or 0, raw)

    samples = [uuid.uuid1().bytes, uuid.uuid4().bytes, bytes(16), b"\xff" * 16]
    for _ in range(2000):
        raw = bytearray(os.urandom(16))
        raw[6] = (raw[6] & 0x0F) | (0x10 if len(samples) % 2 else raw[6] & 0xF0)
        samples.append(bytes(raw))
    for raw in samples:
        for time_based_only in (True, False):
            assert _uuid_key(raw, time_based_only) == reference(raw, time_based_only), raw.hex()


# -- hand-made batches: paths the corpora reach rarely ------------------------------------------
import uuid  # noqa: E402

from cdcfast.commitlog.cqltypes import CqlType, parse_cql_type  # noqa: E402
from cdcfast.commitlog.schema import ColumnDef  # noqa: E402
from cdcfast.events import (  # noqa: E402
    CLEAR,
    DELETE,
    INSERT,
    PARTITION_DELETE,
    RANGE_DELETE,
    SET,
    TOMBSTONE,
    UPDATE,
    Cell,
)


def _table(static: bool) -> TableDef:
    int_type = CqlType("int")
    columns = {
        "v": ColumnDef("v", "regular", -1, CqlType("text"), "text"),
        "m": ColumnDef("m", "regular", -1, parse_cql_type("map<text, text>"), "map<text, text>"),
    }
    if static:
        columns["s"] = ColumnDef("s", "static", -1, CqlType("text"), "text")
    return TableDef(
        id=uuid.UUID(int=7 + static),
        keyspace="mp",
        name="st" if static else "rows",
        cdc=True,
        partition_key=[ColumnDef("id", "partition_key", 0, int_type, "int")],
        clustering=[ColumnDef("c", "clustering", 0, int_type, "int")],
        columns=columns,
    )


def _int(number: int) -> bytes:
    return number.to_bytes(4, "big", signed=True)


def _event(
    table: TableDef, op: str, pk: int, c: int | None, ts: int, cells: tuple[Cell, ...] = (), **more
) -> ChangeEvent:
    clustering = [] if c is None else [_int(c)]
    return ChangeEvent(b"", table.keyspace, table.name, op, [_int(pk)], clustering, ts, list(cells), **more)


def _insert(table: TableDef, pk: int, c: int, ts: int, v: str, m: dict[str, str], ttl_expires: int = 0) -> ChangeEvent:
    cells = [Cell("v", SET, ts, v.encode(), None, 100 if ttl_expires else 0, ttl_expires)]
    cells += [Cell("m", CLEAR, ts - 1)]
    cells += [Cell("m", SET, ts, value.encode(), key.encode()) for key, value in m.items()]
    return _event(table, INSERT, pk, c, ts, cells, liveness_ts=ts)


def _element(table: TableDef, pk: int, c: int, ts: int, key: str, value: str | None, expires: int = 0) -> ChangeEvent:
    kind, raw = (SET, value.encode()) if value is not None else (TOMBSTONE, None)
    return _event(table, UPDATE, pk, c, ts, [Cell("m", kind, ts, raw, key.encode(), 100 if expires else 0, expires)])


def _static(table: TableDef, pk: int, ts: int, s: str) -> ChangeEvent:
    return _event(table, UPDATE, pk, None, ts, [Cell("s", SET, ts, s.encode())], static=True)


def _range(table: TableDef, pk: int, start: int, end: int, ts: int) -> ChangeEvent:
    return _event(table, RANGE_DELETE, pk, None, ts, deletion_ts=ts, range_start=[_int(start)], range_end=[_int(end)])


def _model_rows(table: TableDef, events: list[ChangeEvent]) -> dict[bytes, tuple]:
    model = TableState(table)
    model.apply_all(events)
    return {row_key(pk, r.clustering): shown(r) for pk in model.partitions for r in model.visible_rows(pk)}


def _sink_rows(sink: MemorySink) -> dict[bytes, tuple]:
    return {key: shown(row) for key, (_, _, visible, row) in sink.rows.items() if visible and row is not None}


def _planned_keys(plans: list[PartitionPlan]) -> set[bytes]:
    return {key for p in plans for key, _, _ in p.visible} | {key for p in plans for key, _ in p.tombstones}


def _batches(table: TableDef) -> list[list[ChangeEvent]]:
    """Batches over partitions 1 and 2 (rows 1-5 each): untouched stored rows, one row changed,
    element overwrites (older and newer), TTLs, a range deletion across stored rows, static values,
    a row deleted beside untouched rows that still show, row deletions down to no row, a partition
    deletion, and rows again."""
    static = any(c.kind == "static" for c in table.columns.values())
    first = [
        _insert(table, pk, c, 1000 + c, f"v{pk}{c}", {"a": f"a{c}", "b": f"b{c}"}) for pk in (1, 2) for c in range(1, 6)
    ]
    if static:
        first += [_static(table, 1, 1000, "s1"), _static(table, 2, 1000, "s2")]
    batches = [
        first,
        [_event(table, UPDATE, 1, 3, 2000, [Cell("v", SET, 2000, b"new")])],  # one row of ten
        [
            _element(table, 1, 2, 900, "a", "older: loses"),
            _element(table, 1, 2, 2100, "a", "newer: wins"),
            _element(table, 1, 2, 2100, "b", None),
            _element(table, 2, 4, 2100, "c", "expiring", expires=1_900_000_000),
            _event(table, UPDATE, 2, 5, 2100, [Cell("v", SET, 2100, b"expiring v", None, 100, 1_800_000_000)]),
        ],
        [_range(table, 1, 2, 4, 2200), _event(table, UPDATE, 1, 3, 2300, [Cell("v", SET, 2300, b"after the range")])],
        [_event(table, DELETE, 1, 3, 2350, deletion_ts=2350)],  # rows 1 and 5 still show
        [_event(table, DELETE, 2, c, 2400, deletion_ts=2400) for c in range(1, 6)],
        [_event(table, DELETE, 1, c, 2500, deletion_ts=2500) for c in (1, 5)],
        [_event(table, PARTITION_DELETE, 1, None, 2600, deletion_ts=2600)],
        [_insert(table, 2, 9, 2700, "again", {"z": "z"}), _insert(table, 1, 1, 2700, "again", {})],
    ]
    if static:
        batches[3].append(_static(table, 2, 2200, "s2 again"))  # every row of partition 2 shows it
        batches[6].append(_static(table, 1, 2500, "s1 again"))
    return batches


def test_hand_made_batches_end_as_the_model_and_plan_only_what_changes() -> None:
    for table in (_table(static=False), _table(static=True)):
        sink = MemorySink(table)
        done: list[ChangeEvent] = []
        for number, batch in enumerate(_batches(table)):
            plans = sink.apply(batch)
            done += batch
            assert _sink_rows(sink) == _model_rows(table, done), (table.name, number)
            if number == 1:  # only row 3 of partition 1 changes: the nine others are not rewritten
                assert _planned_keys(plans) == {row_key([_int(1)], [_int(3)])}, table.name
            for p in sink.apply(batch):  # a replay plans nothing
                assert (p.state, p.visible, p.tombstones, p.gone) == (None, [], [], []), (table.name, number)
        assert _sink_rows(sink) == _model_rows(table, done)


def test_the_static_only_row_shows_while_no_row_does() -> None:
    table = _table(static=True)
    sink = MemorySink(table)
    batches = _batches(table)
    for batch in batches[:6]:  # partition 2: every row deleted, its static value set before
        sink.apply(batch)
    placeholder = sink.rows[row_key([_int(2)], None)]
    assert placeholder[2] and placeholder[3] is not None
    assert placeholder[3].values["s"] == b"s2 again" and placeholder[3].values["v"] is None
    for batch in batches[6:]:
        sink.apply(batch)
    assert row_key([_int(2)], None) not in sink.rows  # a row shows again: the static-only row went


def test_new_rows_with_collection_elements_are_planned_as_the_model_has_them() -> None:
    """New rows written by one event each (planned straight from the event, without the model):
    elements after a clear, elements the clear hides, expiring elements beside lasting ones, an
    expiring liveness, and rows nothing shows (only a clear, or elements older than it)."""
    from cdcfast.sinks.rowstore import encode_row

    for table in (_table(static=False), _table(static=True)):

        def cells(c: int, *more: Cell, table: TableDef = table) -> ChangeEvent:
            return _event(table, UPDATE, 1, c, 3000, more)

        batch = [
            _insert(table, 1, 1, 3000, "one", {"a": "x", "b": "y"}),
            _insert(table, 1, 2, 3000, "two", {}, ttl_expires=1_700_000_000),
            cells(3, Cell("m", SET, 3000, b"x", b"a", 100, 1_900_000_000), Cell("m", SET, 3000, b"y", b"b")),
            cells(
                4,
                Cell("m", SET, 3000, b"x", b"a", 100, 1_900_000_000),
                Cell("m", SET, 3000, b"y", b"b", 9, 1_800_000_000),
            ),
            cells(5, Cell("m", CLEAR, 3000), Cell("m", SET, 3000, b"hidden", b"a"), Cell("v", SET, 3000, b"shows")),
            cells(6, Cell("m", CLEAR, 3000)),  # nothing shows: a row tombstone
            cells(7, Cell("m", CLEAR, 3000), Cell("m", SET, 2999, b"older", b"a")),  # nor here
            _event(
                table,
                INSERT,
                1,
                8,
                3000,
                [Cell("m", SET, 3000, b"z", b"c", 100, 1_600_000_000)],
                liveness_ts=3000,
                liveness_ttl=100,
                liveness_expires_at=1_650_000_000,
            ),
            cells(9, Cell("v", SET, 3000, b"lasting"), Cell("m", SET, 3000, b"z", b"c", 100, 1_600_000_000)),
        ]
        if table.name == "st":
            batch.append(_static(table, 2, 3000, "other partition"))
        model = TableState(table)
        model.apply_all(batch)
        partition = model.partitions[(_int(1),)]
        static = model.static_view(partition)
        want_visible, want_tombstones = {}, {}
        for clustering, row in partition.rows.items():
            key = row_key([_int(1)], clustering)
            seen = model.visible_row((_int(1),), partition, clustering, row, static)
            if seen is None:
                want_tombstones[key] = encode_row(row)
            else:
                want_visible[key] = (shown(seen), encode_row(row))
        plans = [p for p in plan(table, {}, batch) if p.pk == (_int(1),)]
        got_visible = {key: (shown(row), blob) for p in plans for key, row, blob in p.visible}
        got_tombstones = dict(t for p in plans for t in p.tombstones)
        assert set(want_tombstones) == {row_key([_int(1)], [_int(c)]) for c in (6, 7)}
        assert got_visible == want_visible, table.name
        assert got_tombstones == want_tombstones, table.name


# -- the batch's keys, compiled (cdcfast.sinks._merge.batch_keys) ----------------------------------
from cdcfast.sinks.merge import batch_keys  # noqa: E402


def _reference_keys(events: list[ChangeEvent]) -> tuple[list, list, dict, list]:
    """What batch_keys gives, from the Python definitions: each event's partition key and row key
    (None for a partition-level event), each partition's key bytes, the partition-level partitions."""
    pks = [tuple(e.partition_key) for e in events]
    partition_level = [e.static or e.op in (PARTITION_DELETE, RANGE_DELETE) for e in events]
    keys = [None if level else row_key(e.partition_key, e.clustering) for e, level in zip(events, partition_level)]
    pk_bytes = {pk: partition_key_bytes(pk) for pk in pks}
    return pks, keys, pk_bytes, list(dict.fromkeys(pk for pk, level in zip(pks, partition_level) if level))


def _reference_scope(table: TableDef, events: list[ChangeEvent]) -> tuple[list, list]:
    """:func:`scope` as it was written in Python, event by event."""
    has_static = any(c.kind == "static" for c in table.columns.values())
    whole = {
        tuple(e.partition_key): None
        for e in events
        if has_static or e.static or e.op in (PARTITION_DELETE, RANGE_DELETE)
    }
    rows = {row_key(e.partition_key, e.clustering): None for e in events if tuple(e.partition_key) not in whole}
    return list(whole), list(rows)


def _assert_keys_agree(table: TableDef, events: list[ChangeEvent]) -> None:
    keys = batch_keys(events)
    pks, row_keys, pk_bytes, partition_level = _reference_keys(events)
    assert keys.pks == pks
    assert keys.keys == row_keys
    assert keys.pk_bytes == pk_bytes and list(keys.pk_bytes) == list(pk_bytes)
    assert keys.partitions == {encoded: pk for pk, encoded in pk_bytes.items()}
    assert list(keys.partition_level) == partition_level
    counted: dict[bytes, int] = {}
    for key in row_keys:
        if key is not None:
            counted[key] = counted.get(key, 0) + 1
    assert keys.counts == counted
    assert scope(table, events, keys) == scope(table, events) == _reference_scope(table, events)


def test_batch_keys_equal_the_python_keys_on_every_corpus_event(corpus: Corpus) -> None:
    schema, events = cdc_events(corpus)
    for table in schema.cdc_tables():
        mine = [e for e in events if (e.keyspace, e.table) == (table.keyspace, table.name)]
        for start in range(0, len(mine), 997):
            _assert_keys_agree(table, mine[start : start + 997])


def test_batch_keys_of_odd_keys_equal_the_python_keys() -> None:
    """Values of every msgpack length class (0, 255, 256, 65535, 65536 bytes), null clustering values,
    more than 15 clustering values (msgpack's longer array header), and no clustering at all."""
    table = _table(static=False)
    sizes = [0, 1, 255, 256, 65535, 65536]
    events = [
        ChangeEvent(b"", "mp", "rows", UPDATE, [b"p" * size], [b"c" * other], 1, [])
        for size in sizes
        for other in sizes
    ]
    events += [
        ChangeEvent(b"", "mp", "rows", UPDATE, [b"a", b"b"], [None, b"x"] * 9, 1, []),
        ChangeEvent(b"", "mp", "rows", UPDATE, [b"a", b"b"], [], 1, []),
        ChangeEvent(b"", "mp", "rows", UPDATE, [b"a"] * 16, [None], 1, []),
        ChangeEvent(b"", "mp", "rows", PARTITION_DELETE, [b"a", b"b"], [], 1, [], deletion_ts=1),
        ChangeEvent(b"", "mp", "rows", UPDATE, [b"a", b"b"], [b"x"], 1, [], static=True),
    ]
    _assert_keys_agree(table, events + events[:3])
    _assert_keys_agree(_table(static=True), events)
