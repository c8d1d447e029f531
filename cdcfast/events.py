"""The change-event model every sink consumes, built from decoded batches.

One :class:`ChangeEvent` per changed row (static rows included), per partition deletion and per
range deletion. Values stay in Cassandra's serialized form (``bytes``), typed by the table schema:
decoding them is the sinks' business, masking rewrites them in place, and the event id is computed
from them, so that the same change read from any replica, or read twice, has the same id.

Operations follow Cassandra's own distinction: a row written with primary-key liveness (INSERT) is
an ``insert``; a row with cells only (UPDATE) is an ``update``; a row deletion is a ``delete``.

A ``truncate`` is the whole table emptied by TRUNCATE. Cassandra records it only in system.local
(:mod:`cdcfast.commitlog.system`); its event comes where that record is in the commit log, names
the truncated CDC table, has no key, cells or deletion, and carries the record: this node's
changes of the table at or before (``truncated_segment_id``, ``truncated_position``) are gone, at
``truncated_at`` (ms). See docs/truncate.md for what a sink does with it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

import msgspec

from cdcfast._events import EventBuilder
from cdcfast.commitlog.batch import (
    CELL_COMPLEX_DELETION,
    CELL_COUNTER,
    CELL_HAS_PATH,
    CELL_TOMBSTONE,
    NO_DELETION,
    ROW_DELETED,
    ROW_EXPIRING,
    ROW_HAS_LIVENESS,
    STATIC_ROW,
    Batch,
)
from cdcfast.commitlog.schema import TableDef
from cdcfast.commitlog.system import SYSTEM_LOCAL_ID, TRUNCATED_AT, read_truncation_record

INSERT, UPDATE, DELETE, PARTITION_DELETE, RANGE_DELETE, TRUNCATE = (
    "insert",
    "update",
    "delete",
    "partition_delete",
    "range_delete",
    "truncate",
)

# Cell kinds
SET = 0  # a value written
TOMBSTONE = 1  # the cell (or one collection element) deleted
CLEAR = 2  # a non-frozen collection/UDT cleared: elements older than ``ts`` are gone
COUNTER = 3  # a counter context (the leader's shard), see docs/counters.md

# Bounds of a range deletion: (clustering prefix, inclusive)
_START_INCLUSIVE = {1: True, 7: False, 2: True, 5: False}
_END_INCLUSIVE = {6: True, 0: False, 2: False, 5: True}


# gc=False: events and cells never form reference cycles; untracked, millions of them cost the
# cyclic collector nothing (a writer decodes its batches 2.3x faster).
class Cell(msgspec.Struct, array_like=True, frozen=True, gc=False):
    column: str
    kind: int
    ts: int
    value: bytes | None = None  # serialized CQL value (for complex columns: the element's value)
    path: bytes | None = None  # complex columns: list timeuuid, set element, map key, UDT field index
    ttl: int = 0
    expires_at: int = 0  # seconds since the epoch when the cell expires; 0: never


class ChangeEvent(msgspec.Struct, array_like=True, frozen=True, gc=False):
    event_id: bytes
    keyspace: str
    table: str
    op: str
    partition_key: list[bytes]  # one serialized value per partition key column
    clustering: list[bytes | None]  # the row's clustering values (empty for static rows)
    ts: int  # write timestamp: the newest timestamp in the change (microseconds)
    cells: list[Cell] = []
    static: bool = False
    deletion_ts: int | None = None  # row, partition or range deletion (markedForDeleteAt)
    deletion_time: int | None = None  # its local deletion time (seconds)
    liveness_ts: int | None = None  # primary-key liveness (INSERT)
    liveness_ttl: int = 0
    liveness_expires_at: int = 0
    range_start: list[bytes | None] | None = None
    range_start_inclusive: bool = True
    range_end: list[bytes | None] | None = None
    range_end_inclusive: bool = True
    segment_id: int = 0  # where it was read: travels with the event for checkpoints
    position: int = 0
    # truncate: this node's changes of the table at or before this commit log position are gone
    truncated_segment_id: int = 0
    truncated_position: int = 0
    truncated_at: int | None = None  # truncate: when (ms since the epoch; None in pre-2.1 records)
    # truncate: this node's changes of the table after the recorded position and read before the
    # record (writes that raced the TRUNCATE and survive it); the parser fills it, not the id
    raced: list[ChangeEvent] = []

    @property
    def qualified_table(self) -> str:
        return f"{self.keyspace}.{self.table}"

    def with_content_id(self) -> ChangeEvent:
        return msgspec.structs.replace(self, event_id=content_id(self))


_ID_ENCODER = msgspec.msgpack.Encoder()


def content_id(event: ChangeEvent) -> bytes:
    """16 bytes of BLAKE2b over everything that makes the change what it is, and nothing about
    where it was read (segment, position, replica).

    A truncation is one node's record: its time and the position it names are what it is (each
    replica truncates at its own time and position, so each replica's record is a change of its
    own); where the record itself was read is not."""
    identity: tuple = (
        event.keyspace,
        event.table,
        event.op,
        event.partition_key,
        event.clustering,
        event.static,
        event.deletion_ts,
        event.liveness_ts,
        event.liveness_ttl,
        event.range_start,
        event.range_start_inclusive,
        event.range_end,
        event.range_end_inclusive,
        [(c.column, c.kind, c.ts, c.value, c.path, c.ttl) for c in event.cells],
    )
    if event.op == TRUNCATE:
        identity += (event.ts, event.truncated_at, event.truncated_segment_id, event.truncated_position)
    return hashlib.blake2b(_ID_ENCODER.encode(identity), digest_size=16).digest()


def split_partition_key(table: TableDef, key: bytes) -> list[bytes]:
    """Components of a partition key: composite keys are (u16 length, bytes, 0x00) each."""
    if len(table.partition_key) <= 1:
        return [key]
    parts, offset = [], 0
    for _ in table.partition_key:
        (length,) = struct.unpack_from(">H", key, offset)
        parts.append(key[offset + 2 : offset + 2 + length])
        offset += 3 + length
    return parts


def _cells(batch: Batch, first: int, count: int, table_index: int) -> tuple[list[Cell], int]:
    columns = batch.data_columns(table_index)
    arena = batch.arena
    out: list[Cell] = []
    newest = NO_DELETION
    for _row, col, flags, ts, ttl, ldt, path_off, path_len, value_off, value_len in batch.cells[
        first : first + count
    ].tolist():
        name = columns[col].name
        newest = max(newest, ts)
        if flags & CELL_COMPLEX_DELETION:
            out.append(Cell(name, CLEAR, ts))
            continue
        path = arena[path_off : path_off + path_len] if flags & CELL_HAS_PATH else None
        if flags & CELL_TOMBSTONE:
            out.append(Cell(name, TOMBSTONE, ts, None, path))
            continue
        kind = COUNTER if flags & CELL_COUNTER else SET
        out.append(Cell(name, kind, ts, arena[value_off : value_off + value_len], path, ttl, ldt if ttl else 0))
    return out, newest


def _truncations(batch: Batch, table_index: int, first_row: int, n_rows: int, common: dict) -> Iterator[ChangeEvent]:
    """The truncations of CDC tables recorded by one system.local partition update: its
    ``truncated_at`` elements that are written (removals, on DROP TABLE, are not truncations)."""
    names = [c.name for c in batch.data_columns(table_index)]
    if TRUNCATED_AT not in names:
        return
    column = names.index(TRUNCATED_AT)
    cdc = {t.id: t for t in batch.tables if t.cdc}
    arena = batch.arena
    for r in batch.rows[first_row : first_row + n_rows].tolist():
        first_cell, n_cells = r[-2], r[-1]
        for _row, col, flags, ts, _ttl, _ldt, path_off, path_len, value_off, value_len in batch.cells[
            first_cell : first_cell + n_cells
        ].tolist():
            if col != column or flags & (CELL_TOMBSTONE | CELL_COMPLEX_DELETION) or not flags & CELL_HAS_PATH:
                continue
            record = read_truncation_record(
                arena[path_off : path_off + path_len], arena[value_off : value_off + value_len]
            )
            table = cdc.get(record.table_id) if record is not None else None
            if record is None or table is None:
                continue  # a system table's, a non-CDC table's, or one this schema does not have
            yield ChangeEvent(
                b"",
                keyspace=table.keyspace,
                table=table.name,
                op=TRUNCATE,
                partition_key=[],
                clustering=[],
                ts=ts,
                truncated_segment_id=record.segment_id,
                truncated_position=record.position,
                truncated_at=record.truncated_at,
                **common,
            ).with_content_id()


def events_from_batch(batch: Batch) -> Iterator[ChangeEvent]:
    """Every change in ``batch``, in commit log order, each with its content id: system.local gives
    only the truncations of CDC tables it records.

    Built by the compiled builder (cdcfast/_events.pyx), which makes exactly the events of
    :func:`events_from_batch_python`, ids included, about ten times faster."""
    return iter(_BUILDER.build(batch, _system_local_index(batch)))


def _system_local_index(batch: Batch) -> int:
    return next((i for i, t in enumerate(batch.tables) if t.id == SYSTEM_LOCAL_ID), -1)


def events_from_batch_python(batch: Batch) -> Iterator[ChangeEvent]:
    """:func:`events_from_batch` in plain Python: the definition the compiled builder is held to
    (tests/events/test_compiled_events.py), and the baseline of bench/bench_events.py."""
    rows = batch.rows
    local = _system_local_index(batch)
    for p in batch.partitions.tolist():
        segment_id, position, _size, table_index = p[0], p[1], p[2], p[3]
        pk_off, pk_len, pdel_ts, pdel_ldt, static_row, first_row, n_rows = p[4:11]
        if table_index == local:
            yield from _truncations(batch, local, first_row, n_rows, {"segment_id": segment_id, "position": position})
            continue
        table = batch.tables[table_index]
        key = split_partition_key(table, batch.arena[pk_off : pk_off + pk_len])
        common = {
            "keyspace": table.keyspace,
            "table": table.name,
            "partition_key": key,
            "segment_id": segment_id,
            "position": position,
        }
        if pdel_ts != NO_DELETION:
            yield ChangeEvent(
                b"",
                op=PARTITION_DELETE,
                clustering=[],
                ts=pdel_ts,
                deletion_ts=pdel_ts,
                deletion_time=pdel_ldt,
                **common,
            ).with_content_id()
        indexes = ([static_row] if static_row >= 0 else []) + list(range(first_row, first_row + n_rows))
        open_marker: tuple[list[bytes | None], bool] | None = None
        for index in indexes:
            r = rows[index]
            kind = int(r["kind"])
            clustering = batch.clustering(int(r["first_clustering"]), int(r["n_clustering"]))
            if kind >= 2:  # range tombstone markers: pair each opening with its closing
                bound = int(r["bound_kind"])
                if open_marker is not None and bound in _END_INCLUSIVE:
                    deletion = (int(r["del_ts"]), int(r["del_ldt"]))
                    yield ChangeEvent(
                        b"",
                        op=RANGE_DELETE,
                        clustering=[],
                        ts=deletion[0],
                        deletion_ts=deletion[0],
                        deletion_time=deletion[1],
                        range_start=open_marker[0],
                        range_start_inclusive=open_marker[1],
                        range_end=clustering,
                        range_end_inclusive=_END_INCLUSIVE[bound],
                        **common,
                    ).with_content_id()
                    open_marker = None
                if bound in _START_INCLUSIVE:  # a boundary closes one range and opens the next
                    open_marker = (clustering, _START_INCLUSIVE[bound])
                continue
            yield _row_event(batch, r, table_index, clustering, kind == STATIC_ROW, common)


def _row_event(batch: Batch, r, table_index: int, clustering, static: bool, common: dict) -> ChangeEvent:
    flags = int(r["flags"])
    cells, newest = _cells(batch, int(r["first_cell"]), int(r["n_cells"]), table_index)
    fields: dict = {}
    if flags & ROW_HAS_LIVENESS:
        fields["liveness_ts"] = int(r["live_ts"])
        newest = max(newest, fields["liveness_ts"])
        if flags & ROW_EXPIRING:
            fields["liveness_ttl"] = int(r["live_ttl"])
            fields["liveness_expires_at"] = int(r["live_ldt"])
    if flags & ROW_DELETED:
        fields["deletion_ts"] = int(r["del_ts"])
        fields["deletion_time"] = int(r["del_ldt"])
        newest = max(newest, fields["deletion_ts"])
    if flags & ROW_HAS_LIVENESS:
        op = INSERT
    elif flags & ROW_DELETED and not cells:
        op = DELETE
    else:
        op = UPDATE
    return ChangeEvent(
        b"", op=op, clustering=[] if static else clustering, ts=newest, cells=cells, static=static, **fields, **common
    ).with_content_id()


_BUILDER = EventBuilder(ChangeEvent, Cell, (INSERT, UPDATE, DELETE, PARTITION_DELETE, RANGE_DELETE), _truncations)
