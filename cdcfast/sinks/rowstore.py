"""Row and partition states as stored next to the data in every sink (msgpack bytes)."""

from __future__ import annotations

import msgspec

from cdcfast.sinks.state import PartitionState, RangeDeletion, RowState, Version


class _StoredVersion(msgspec.Struct, array_like=True):
    ts: int
    value: bytes | None
    expires_at: int


class _StoredRow(msgspec.Struct, array_like=True, omit_defaults=True):
    liveness: _StoredVersion | None = None
    deletion_ts: int | None = None
    cells: dict[str, _StoredVersion] = {}
    clears: dict[str, int] = {}
    elements: dict[str, list[tuple[bytes, _StoredVersion]]] = {}
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
_row_decoder = msgspec.msgpack.Decoder(_StoredRow)
_partition_decoder = msgspec.msgpack.Decoder(_StoredPartition)


def _version_out(v: Version) -> _StoredVersion:
    return _StoredVersion(v.ts, v.value, v.expires_at)


def _version_in(v: _StoredVersion) -> Version:
    return Version(v.ts, v.value, v.expires_at)


def _row_out(row: RowState) -> _StoredRow:
    return _StoredRow(
        liveness=_version_out(row.liveness) if row.liveness else None,
        deletion_ts=row.deletion_ts,
        cells={k: _version_out(v) for k, v in row.cells.items()},
        clears=dict(row.clears),
        elements={k: [(p, _version_out(v)) for p, v in e.items()] for k, e in row.elements.items()},
        counters={k: [(cid, clock, count) for cid, (clock, count) in s.items()] for k, s in row.counters.items()},
        counter_ts=dict(row.counter_ts),
    )


def _row_in(stored: _StoredRow) -> RowState:
    return RowState(
        liveness=_version_in(stored.liveness) if stored.liveness else None,
        deletion_ts=stored.deletion_ts,
        cells={k: _version_in(v) for k, v in stored.cells.items()},
        clears=dict(stored.clears),
        elements={k: {p: _version_in(v) for p, v in e} for k, e in stored.elements.items()},
        counters={k: {cid: (clock, count) for cid, clock, count in s} for k, s in stored.counters.items()},
        counter_ts=dict(stored.counter_ts),
    )


def encode_row(row: RowState) -> bytes:
    return _encoder.encode(_row_out(row))


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
