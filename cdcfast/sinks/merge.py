"""Merge planning shared by every writer: stored partition states + events -> rows to write.

A writer loads the stored state a batch touches (see :func:`scope`: each partition's own state, and
either all its rows and row tombstones or just the rows the batch changes), applies the batch with
:class:`TableState`, and writes back what it loaded: visible rows into the current-state table,
invisible rows' states into the tombstone table (so that late events with older timestamps still
lose), partition states beside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from cdcfast.commitlog.schema import TableDef
from cdcfast.events import PARTITION_DELETE, RANGE_DELETE, ChangeEvent
from cdcfast.sinks.rowstore import decode_partition, decode_row, encode_partition, encode_row
from cdcfast.sinks.state import PartitionState, TableState, VisibleRow

_key_encoder = msgspec.msgpack.Encoder()
_key_decoder = msgspec.msgpack.Decoder(tuple[list[bytes], list[bytes | None] | None])


def partition_key_bytes(pk: Iterable[bytes]) -> bytes:
    return _key_encoder.encode(list(pk))


def row_key(pk: Iterable[bytes], clustering: Iterable[bytes | None] | None) -> bytes:
    """The stored identity of a row; ``clustering`` None is a static-only partition's row."""
    return _key_encoder.encode((list(pk), None if clustering is None else list(clustering)))


def split_row_key(key: bytes) -> tuple[tuple[bytes, ...], tuple[bytes | None, ...] | None]:
    pk, clustering = _key_decoder.decode(key)
    return tuple(pk), None if clustering is None else tuple(clustering)


def by_table(events: Iterable[ChangeEvent]) -> dict[tuple[str, str], list[ChangeEvent]]:
    """Events grouped by (keyspace, table), each group in commit log order."""
    groups: dict[tuple[str, str], list[ChangeEvent]] = {}
    for event in events:
        groups.setdefault((event.keyspace, event.table), []).append(event)
    return groups


def scope(table: TableDef, events: list[ChangeEvent]) -> tuple[list[tuple[bytes, ...]], list[bytes]]:
    """Which stored state a batch needs: whole partitions (partition or range deletions, static
    changes, any change in a table with static columns, whose values show on every row), and
    single rows for the rest. Returns (partition keys to load whole, row keys to load)."""
    has_static = any(c.kind == "static" for c in table.columns.values())
    whole: dict[tuple[bytes, ...], None] = {}
    for event in events:
        if has_static or event.static or event.op in (PARTITION_DELETE, RANGE_DELETE):
            whole[tuple(event.partition_key)] = None
    rows = {
        row_key(event.partition_key, event.clustering): None
        for event in events
        if tuple(event.partition_key) not in whole
    }
    return list(whole), list(rows)


@dataclass
class StoredPartition:
    """What a sink holds for one partition: its state blob and its rows' state blobs by row key."""

    state: bytes | None
    rows: dict[bytes, bytes] = field(default_factory=dict)


@dataclass
class PartitionPlan:
    pk: tuple[bytes, ...]
    pk_bytes: bytes
    state: bytes
    visible: list[tuple[bytes, VisibleRow, bytes]]  # (row key, row, row state)
    tombstones: list[tuple[bytes, bytes]]  # (row key, row state)


def plan(
    table: TableDef, stored: dict[tuple[bytes, ...], StoredPartition], events: list[ChangeEvent]
) -> list[PartitionPlan]:
    """Apply ``events`` (all of ``table``) to the stored partitions they touch."""
    model = TableState(table)
    for pk, partition in stored.items():
        state = decode_partition(partition.state) if partition.state else PartitionState()
        for key, blob in partition.rows.items():
            _, clustering = split_row_key(key)
            if clustering is not None:
                state.rows[clustering] = decode_row(blob)
        model.partitions[pk] = state
    touched: dict[tuple[bytes, ...], None] = {}
    for event in events:
        model.apply(event)
        touched[tuple(event.partition_key)] = None
    plans = []
    for pk in touched:
        merged = model.partitions[pk]
        visible = model.visible_rows(pk)
        shown = {row.clustering for row in visible}
        plans.append(
            PartitionPlan(
                pk=pk,
                pk_bytes=partition_key_bytes(pk),
                state=encode_partition(merged),
                visible=[
                    (
                        row_key(pk, row.clustering),
                        row,
                        encode_row(merged.rows[row.clustering]) if row.clustering is not None else b"",
                    )
                    for row in visible
                ],
                tombstones=[(row_key(pk, ck), encode_row(row)) for ck, row in merged.rows.items() if ck not in shown],
            )
        )
    return plans
