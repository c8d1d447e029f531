"""Row and partition states as stored next to the data in every sink (msgpack bytes)."""

from __future__ import annotations

import msgspec

from cdcfast.sinks._state import row_fields as _row_fields  # a row state's stored fields, compiled
from cdcfast.sinks.state import PartitionState, RangeDeletion, RowState, Version


class _StoredRow(msgspec.Struct, array_like=True, omit_defaults=True):
    liveness: Version | None = None
    deletion_ts: int | None = None
    cells: dict[str, Version] = {}
    clears: dict[str, int] = {}
    elements: dict[str, list[tuple[bytes, Version]]] = {}
    counters: dict[str, list[tuple[bytes, int, int]]] = {}
    counter_ts: dict[str, int] = {}


class _StoredRange(msgspec.Struct, array_like=True):
    start: list[bytes | None]
    start_inclusive: bool
    end: list[bytes | None]
    end_inclusive: bool
    ts: int


class _StoredPartition(msgspec.Struct, array_like=True, omit_defaults=True):
    deletion_ts: int | None = None
    ranges: list[_StoredRange] = []
    static: _StoredRow | None = None


_encoder = msgspec.msgpack.Encoder()
_NONE: dict = {}  # an empty field of a stored row (array-like: every field is written)
# For the compiled planner (cdcfast/sinks/_merge.pyx), which writes encode_new_row's bytes itself:
encode_fields = _encoder.encode  # a stored row's fields (in ``_StoredRow``'s order) as its msgpack array
EMPTY_FIELD = _NONE
_row_decoder = msgspec.msgpack.Decoder(_StoredRow)
_partition_decoder = msgspec.msgpack.Decoder(_StoredPartition)


def _row_out(row: RowState) -> _StoredRow:
    return _StoredRow(*_row_fields(row))


def _row_in(stored: _StoredRow) -> RowState:
    return RowState(
        liveness=stored.liveness,
        deletion_ts=stored.deletion_ts,
        cells=stored.cells,
        clears=stored.clears,
        elements={k: dict(e) for k, e in stored.elements.items()} if stored.elements else {},
        counters={k: {cid: (clock, count) for cid, clock, count in s} for k, s in stored.counters.items()}
        if stored.counters
        else {},
        counter_ts=stored.counter_ts,
    )


def encode_row(row: RowState) -> bytes:
    return _encoder.encode(_row_fields(row))


VersionFields = tuple[int, "bytes | None", int]  # (ts, value, expires_at): what a Version encodes as


def encode_new_row(
    liveness: Version | VersionFields | None,
    cells: dict[str, Version] | dict[str, VersionFields],
    clears: dict[str, int] | None = None,
    elements: dict[str, list[tuple[bytes, Version]]] | dict[str, list[tuple[bytes, VersionFields]]] | None = None,
) -> bytes:
    """``encode_row`` of a row state with a liveness, simple cells, clears and collection elements
    only (the same bytes; ``elements``: each column's (path, version) pairs in the row's order); its
    versions may be given as their ``(ts, value, expires_at)`` fields."""
    return _encoder.encode((liveness, None, cells, clears or _NONE, elements or _NONE, _NONE, _NONE))


def decode_row(data: bytes) -> RowState:
    return _row_in(_row_decoder.decode(data))


def encode_partition(partition: PartitionState) -> bytes:
    """The partition-level state: deletion, range deletions and the static row (not the rows)."""
    ranges = [_StoredRange(r.start, r.start_inclusive, r.end, r.end_inclusive, r.ts) for r in partition.ranges]
    return _encoder.encode(_StoredPartition(partition.deletion_ts, ranges, _row_out(partition.static)))


def decode_partition(data: bytes) -> PartitionState:
    stored = _partition_decoder.decode(data)
    return PartitionState(
        deletion_ts=stored.deletion_ts,
        ranges=[RangeDeletion(r.start, r.start_inclusive, r.end, r.end_inclusive, r.ts) for r in stored.ranges],
        static=_row_in(stored.static) if stored.static else RowState(),
    )
