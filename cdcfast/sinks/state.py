"""Cassandra's reconciliation rules, so that every warehouse's current state converges to ``SELECT *``.

Every sink keeps, per row, the winning version of each cell with its write timestamp (and, for
collections, of each element), the row's liveness and deletion, and per partition its deletion and
range deletions. Applying a change is a merge by these rules, which are commutative and idempotent:
late or replayed events with older timestamps never win, and the same change applied twice or
from three replicas changes nothing.

* A cell beats another with a higher timestamp; on a tie a tombstone or expiring cell beats a live
  one, a tombstone beats an expiring one, then the later expiry, then the greater value
  (Cassandra's ``Cells.reconcile``).
* A deletion with timestamp T (row, partition, range, collection clear) removes every cell and
  liveness written at or before T.
* An expiring cell past its expiry is a tombstone: it hides, it does not resurrect older values.
* A row is visible when its liveness or any regular cell is live; static cells show with every row
  of their partition, or alone when the partition has no live row.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import TableDef
from cdcfast.events import (
    PARTITION_DELETE,
    RANGE_DELETE,
    Cell,
    ChangeEvent,
)
from cdcfast.sinks._state import apply_row_event, bind, raw_values, visible_row
from cdcfast.values import EMPTY, CounterContext, decode, decode_cell_path, decode_cell_value

NEVER = 0  # expires_at of a cell that does not expire
COUNTER_TYPE = CqlType("counter")
StaticView = tuple[dict[str, Any], dict[str, int], bool]  # a partition's static values, expiries, any live


class Version(msgspec.Struct, frozen=True, array_like=True):
    """One written version of a cell or collection element; ``value`` None is a tombstone. Stored
    as it is (msgpack ``[ts, value, expires_at]``, :mod:`cdcfast.sinks.rowstore`)."""

    ts: int
    value: bytes | None
    expires_at: int = NEVER  # seconds since the epoch

    def beats(self, other: Version) -> bool:
        if self.ts != other.ts:
            return self.ts > other.ts
        mine, theirs = self.value is None or self.expires_at != NEVER, other.value is None or other.expires_at != NEVER
        if mine != theirs:
            return mine
        if mine:
            if (self.value is None) != (other.value is None):
                return self.value is None
            if self.expires_at != other.expires_at:
                return self.expires_at > other.expires_at
        return (self.value or b"") > (other.value or b"")


def _keep(current: Version | None, new: Version) -> Version:
    return new if current is None or new.beats(current) else current


@dataclass(slots=True)
class RowState:
    liveness: Version | None = None  # value b"" marks a live primary key
    deletion_ts: int | None = None
    cells: dict[str, Version] = field(default_factory=dict)
    clears: dict[str, int] = field(default_factory=dict)  # complex column -> newest clear timestamp
    elements: dict[str, dict[bytes, Version]] = field(default_factory=dict)
    # Counter columns: the newest shard per counter id (clock, count), and the newest write time.
    counters: dict[str, dict[bytes, tuple[int, int]]] = field(default_factory=dict)
    counter_ts: dict[str, int] = field(default_factory=dict)

    def delete(self, ts: int) -> None:
        self.deletion_ts = ts if self.deletion_ts is None else max(self.deletion_ts, ts)

    def apply(self, event: ChangeEvent) -> None:
        """Fold a row event in: its liveness, row deletion and cells (compiled:
        :func:`cdcfast.sinks._state.apply_row_event`)."""
        apply_row_event(self, event, RowState._apply_counter)

    def _apply_counter(self, cell: Cell) -> None:
        context = decode(COUNTER_TYPE, cell.value or b"")
        assert isinstance(context, CounterContext)
        self._add_shards(cell.column, {s.counter_id.bytes: (s.clock, s.count) for s in context.shards}, cell.ts)

    def merge(self, other: RowState) -> None:
        """Fold another state of the same row in (a replica's, or a stored one)."""
        if other.liveness is not None:
            self.liveness = _keep(self.liveness, other.liveness)
        if other.deletion_ts is not None:
            self.delete(other.deletion_ts)
        for name, version in other.cells.items():
            self.cells[name] = _keep(self.cells.get(name), version)
        for name, ts in other.clears.items():
            self.clears[name] = max(self.clears.get(name, ts), ts)
        for name, elements in other.elements.items():
            mine = self.elements.setdefault(name, {})
            for path, version in elements.items():
                mine[path] = _keep(mine.get(path), version)
        for name, shards in other.counters.items():
            self._add_shards(name, shards, other.counter_ts[name])

    def _add_shards(self, column: str, shards: dict[bytes, tuple[int, int]], ts: int) -> None:
        mine = self.counters.setdefault(column, {})
        for counter_id, (clock, count) in shards.items():
            if counter_id not in mine or mine[counter_id][0] < clock:
                mine[counter_id] = (clock, count)
        self.counter_ts[column] = max(self.counter_ts.get(column, ts), ts)

    # -- visibility (the rest compiled: cdcfast.sinks._state.raw_values, visible_row) ------------
    def counter_total(self, column: str, shadow: int) -> int | None:
        """The counter's value: the sum of every leader's newest shard (docs/counters.md). A counter
        deletion is final, as in Cassandra."""
        shards = self.counters.get(column)
        if not shards or self.counter_ts[column] <= shadow or column in self.cells:
            return None
        return sum(count for _, count in shards.values())


# -- clustering order (range deletions need it) -----------------------------------------------
def _float_key(value: float) -> tuple[int, float]:
    return (1, 0.0) if math.isnan(value) else (0, value if value != 0 else math.copysign(0.0, value) - 0.0)


def _uuid_key(raw: bytes, time_based_only: bool) -> tuple:
    if len(raw) == 16 and raw[6] >> 4 == 1 and raw[8] & 0xC0 == 0x80:  # an RFC 4122 version 1 UUID
        time = (
            ((raw[6] & 0x0F) << 56) | (raw[7] << 48) | (raw[4] << 40) | (raw[5] << 32) | int.from_bytes(raw[:4], "big")
        )
        return (1, time, raw[8:]) if not time_based_only else (time, int.from_bytes(raw[8:], "big", signed=True))
    value = uuid.UUID(bytes=raw)
    if value.version == 1:
        return (1, value.time, raw[8:]) if not time_based_only else (value.time, struct.unpack(">q", raw[8:])[0])
    return (value.version or 0, raw)


def sort_key(ctype: CqlType) -> Callable[[bytes | None], Any]:
    """Cassandra's comparator for one clustering column, as a Python sort key of its bytes."""
    kind = ctype.kind

    def key(raw: bytes | None) -> Any:
        if raw is None or len(raw) == 0:
            return (0,)
        if kind in ("int", "bigint", "smallint", "tinyint", "varint", "decimal", "timestamp", "counter"):
            return (1, decode(ctype, raw))
        if kind in ("float", "double"):
            return (1, _float_key(decode(ctype, raw)))
        if kind == "timeuuid":
            return (1, _uuid_key(raw, True))
        if kind == "uuid":
            return (1, _uuid_key(raw, False))
        if kind == "time":
            return (1, decode(ctype, raw))
        return (1, raw)  # text, ascii, blob, inet, date, boolean, frozen collections: unsigned bytes

    return key


class _Reversed:
    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Reversed) -> bool:
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.key == other.key


def clustering_comparator(table: TableDef) -> Callable[[list[bytes | None]], list[Any]]:
    keys = [(sort_key(c.type), c.reversed) for c in table.clustering]

    def convert(values: list[bytes | None]) -> list[Any]:
        out = []
        for (key, reverse), raw in zip(keys, values):
            k = key(raw)
            out.append(_Reversed(k) if reverse else k)
        return out

    return convert


def _compare_prefix(row: list[Any], bound: list[Any]) -> int:
    for a, b in zip(row, bound):
        if a < b:
            return -1
        if b < a:
            return 1
    return 0


@dataclass(frozen=True)
class RangeDeletion:
    start: list[bytes | None]
    start_inclusive: bool
    end: list[bytes | None]
    end_inclusive: bool
    ts: int


def covers(deletion: RangeDeletion, row: list[Any], start: list[Any], end: list[Any]) -> bool:
    if start:
        c = _compare_prefix(row, start)
        if c < 0 or (c == 0 and not deletion.start_inclusive):
            return False
    if end:
        c = _compare_prefix(row, end)
        if c > 0 or (c == 0 and not deletion.end_inclusive):
            return False
    return True


@dataclass
class PartitionState:
    deletion_ts: int | None = None
    ranges: list[RangeDeletion] = field(default_factory=list)
    static: RowState = field(default_factory=RowState)
    rows: dict[tuple, RowState] = field(default_factory=dict)

    def merge(self, other: PartitionState) -> None:
        """Fold another state of the same partition in (another writer's: its deletions and static
        row; the rows are not part of a stored partition state)."""
        if other.deletion_ts is not None:
            ts = self.deletion_ts
            self.deletion_ts = other.deletion_ts if ts is None else max(ts, other.deletion_ts)
        self.ranges += [r for r in other.ranges if r not in self.ranges]
        self.static.merge(other.static)


class TableState:
    """One table's current state, in memory: the reference model every sink follows."""

    def __init__(self, table: TableDef) -> None:
        self.table = table
        self.partitions: dict[tuple[bytes, ...], PartitionState] = {}
        self._order = clustering_comparator(table)
        self._range_bounds: dict[int, tuple[RangeDeletion, list[Any], list[Any]]] = {}
        self.regular = [c for c in table.columns.values() if c.kind == "regular"]
        self.static_columns = [c for c in table.columns.values() if c.kind == "static"]
        # (name, kind) of each: what _raw_values asks of a column, resolved once
        self._regular_kinds = [_value_kind(c) for c in self.regular]
        self._static_kinds = [_value_kind(c) for c in self.static_columns]

    def apply(self, event: ChangeEvent) -> PartitionState:
        pk = tuple(event.partition_key)
        partition = self.partitions.get(pk)
        if partition is None:  # (not setdefault: it would build a state per event to throw away)
            partition = self.partitions[pk] = PartitionState()
        if event.op == PARTITION_DELETE:
            ts = event.deletion_ts or 0
            partition.deletion_ts = ts if partition.deletion_ts is None else max(partition.deletion_ts, ts)
        elif event.op == RANGE_DELETE:
            deletion = RangeDeletion(
                list(event.range_start or []),
                event.range_start_inclusive,
                list(event.range_end or []),
                event.range_end_inclusive,
                event.deletion_ts or 0,
            )
            if deletion not in partition.ranges:  # a replayed range deletion is the same one
                partition.ranges.append(deletion)
        elif event.static:
            partition.static.apply(event)
        else:
            clustering = tuple(event.clustering)
            row = partition.rows.get(clustering)
            if row is None:
                row = partition.rows[clustering] = RowState()
            apply_row_event(row, event, RowState._apply_counter)  # (row.apply, a call less)
        return partition

    def apply_all(self, events: Iterable[ChangeEvent]) -> None:
        for event in events:
            if event.keyspace == self.table.keyspace and event.table == self.table.name:
                self.apply(event)

    def _row_shadow(self, partition: PartitionState, clustering: tuple, row: RowState) -> int:
        shadow = partition.deletion_ts or -(2**63)  # (a partition deletion at 0 shadows nothing)
        if row.deletion_ts is not None and row.deletion_ts > shadow:
            shadow = row.deletion_ts
        if partition.ranges:
            key = self._order(list(clustering))
            for deletion in partition.ranges:
                if deletion.ts > shadow and covers(deletion, key, *self._bounds(deletion)):
                    shadow = deletion.ts
        return shadow

    def _bounds(self, deletion: RangeDeletion) -> tuple[list[Any], list[Any]]:
        """A range deletion's bounds as clustering sort keys (kept: every row of the partition needs them)."""
        known = self._range_bounds.get(id(deletion))
        if known is None or known[0] is not deletion:
            known = self._range_bounds[id(deletion)] = (
                deletion,
                self._order(deletion.start),
                self._order(deletion.end),
            )
        return known[1], known[2]

    def _raw_values(
        self, row: RowState, columns: list[tuple[str, int]], shadow: int, now: int | None
    ) -> tuple[dict[str, Any], dict[str, int], int]:
        """Winning values (serialized bytes; element lists for complex columns; totals for
        counters), the expiry of each expiring one, and how many are live (not None). ``columns``:
        (name, kind) pairs (:func:`_value_kind`). Compiled: :func:`cdcfast.sinks._state.raw_values`."""
        return raw_values(row, columns, shadow, now)

    def visible_rows(self, pk: tuple[bytes, ...], now: int | None = None) -> list[VisibleRow]:
        """The rows ``SELECT *`` shows for one partition as of ``now`` (None: ignoring TTLs, with
        each expiring value's expiry reported instead)."""
        partition = self.partitions.get(pk)
        if partition is None:
            return []
        static = self.static_view(partition, now)
        out = []
        for clustering, row in partition.rows.items():
            visible = self.visible_row(pk, partition, clustering, row, static, now)
            if visible is not None:
                out.append(visible)
        if not out:
            placeholder = self.static_only_row(pk, static)
            if placeholder is not None:
                out.append(placeholder)
        return out

    def static_view(self, partition: PartitionState, now: int | None = None) -> StaticView:
        """The partition's static values (shown with each of its rows), their expiries, and whether
        any is live."""
        static_shadow = partition.deletion_ts if partition.deletion_ts is not None else -(2**63)
        values, expires, live = self._raw_values(partition.static, self._static_kinds, static_shadow, now)
        return values, expires, live > 0

    def visible_row(
        self,
        pk: tuple[bytes, ...],
        partition: PartitionState,
        clustering: tuple,
        row: RowState,
        static: StaticView,
        now: int | None = None,
    ) -> VisibleRow | None:
        """One row as ``SELECT *`` shows it, or None when it is not visible (compiled:
        :func:`cdcfast.sinks._state.visible_row`)."""
        return visible_row(self, pk, partition, clustering, row, static, now)

    def static_only_row(self, pk: tuple[bytes, ...], static: StaticView) -> VisibleRow | None:
        """What a partition without visible rows shows: its static values alone, if any is live."""
        static_values, static_expires, static_live = static
        if not static_live:
            return None
        keeps = [static_expires.get(c.name, NEVER) for c in self.static_columns if static_values[c.name] is not None]
        return VisibleRow(
            pk,
            None,
            {**static_values, **{c.name: None for c in self.regular}},
            static_expires,
            NEVER if NEVER in keeps else max(keeps),
        )

    def select(self, now: int) -> Iterator[dict[str, Any]]:
        """What ``SELECT *`` returns as of ``now`` (seconds): decoded values, rows in no particular order."""
        columns = {c.name: c for c in self.table.columns.values()}
        for pk in self.partitions:
            for row in self.visible_rows(pk, now):
                yield row.decoded(self.table, columns)


_SIMPLE, _COMPLEX, _COUNTER = 0, 1, 2  # how a column's visible value is found (TableState._raw_values)


def _value_kind(column: Any) -> tuple[str, int]:
    ctype = column.type
    return column.name, _COUNTER if ctype.is_counter else _COMPLEX if ctype.is_complex else _SIMPLE


class VisibleRow(msgspec.Struct):
    """One row as ``SELECT *`` shows it, values still serialized (see :meth:`TableState.visible_rows`)."""

    partition_key: tuple[bytes, ...]
    clustering: tuple[bytes | None, ...] | None  # None: a partition with static values only
    values: dict[str, Any]
    expires: dict[str, int]  # column -> seconds since the epoch, for expiring values
    row_expires: int  # when nothing keeps the row alive any more; NEVER if never

    def decoded(self, table: TableDef, columns: dict) -> dict[str, Any]:
        out = {c.name: decode(c.type, raw) for c, raw in zip(table.partition_key, self.partition_key)}
        for i, c in enumerate(table.clustering):
            raw = None if self.clustering is None else self.clustering[i]
            out[c.name] = None if raw is None else decode(c.type, raw)
        for name, raw in self.values.items():
            out[name] = column_value(columns[name].type, raw)
        return out


bind(Version, VisibleRow)


def column_value(ctype: CqlType, raw: Any) -> Any:
    """A visible value decoded: bytes, element list (complex) or counter total (int)."""
    if raw is None or ctype.is_counter:
        return raw
    if ctype.is_complex:
        return _complex_value(ctype, raw)
    return _simple_value(ctype, raw)


def _simple_value(ctype: CqlType, raw: bytes) -> Any:
    value = decode(ctype, raw)
    return None if value is EMPTY and ctype.kind not in ("text", "ascii", "blob") else value


def ordered_elements(ctype: CqlType, elements: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Elements in Cassandra's order: lists by timeuuid, sets and maps by the key comparator, UDT
    fields by index."""
    key = sort_key(CqlType("timeuuid") if ctype.kind == "list" else ctype.params[0]) if ctype.kind != "udt" else None
    return sorted(elements, key=(lambda item: key(item[0])) if key else (lambda item: item[0]))


def frozen_bytes(ctype: CqlType, elements: list[tuple[bytes, bytes]]) -> bytes:
    """The elements of a non-frozen column as the value of the same type frozen (§6.2 layout)."""
    elements = ordered_elements(ctype, elements)
    if ctype.kind == "udt":
        fields: list[bytes | None] = [None] * len(ctype.field_names)
        for path, value in elements:
            index = struct.unpack(">h", path)[0]
            if 0 <= index < len(fields):
                fields[index] = value
        return b"".join(struct.pack(">i", -1) if f is None else struct.pack(">i", len(f)) + f for f in fields)
    parts = [struct.pack(">i", len(elements))]
    for path, value in elements:
        if ctype.kind == "list":
            parts.append(struct.pack(">i", len(value)) + value)
        elif ctype.kind == "set":
            parts.append(struct.pack(">i", len(path)) + path)
        else:
            parts.append(struct.pack(">i", len(path)) + path + struct.pack(">i", len(value)) + value)
    return b"".join(parts)


def _complex_value(ctype: CqlType, elements: list[tuple[bytes, bytes]]) -> Any:
    elements = ordered_elements(ctype, elements)
    if ctype.kind == "list":
        return [decode_cell_value(ctype, value) for _, value in elements]
    if ctype.kind == "set":
        return [decode_cell_path(ctype, path) for path, _ in elements]
    if ctype.kind == "map":
        return [(decode_cell_path(ctype, path), decode_cell_value(ctype, value)) for path, value in elements]
    fields: dict[str, Any] = {name: None for name in ctype.field_names}
    for path, value in elements:
        fields[decode_cell_path(ctype, path)] = decode_cell_value(ctype, value, path)
    return fields
