"""Poison events: changes a warehouse cannot hold (a date PostgreSQL has no room for, a varint too
wide for a ClickHouse column, U+0000 in PostgreSQL text). Each is screened out before the merge and
kept in the sink's dead-letter table with the reason, table, segment and position; the rest of the
batch, and of the table, keeps flowing. ``cdcfast dlq replay`` applies them again later (for
instance after changing the type mapping); replays are idempotent, as all writes are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from cdcfast.commitlog.schema import TableDef
from cdcfast.errors import CdcfastError
from cdcfast.events import COUNTER, SET, ChangeEvent
from cdcfast.sinks.changelog import change_row
from cdcfast.sinks.state import frozen_bytes

EVENT_ENCODER = msgspec.msgpack.Encoder()
EVENT_DECODER = msgspec.msgpack.Decoder(ChangeEvent)


@dataclass(frozen=True)
class DeadLetter:
    event: ChangeEvent
    reason: str

    @property
    def payload(self) -> bytes:
        return EVENT_ENCODER.encode(self.event)


def screen(
    table: TableDef, events: list[ChangeEvent], convert: Callable[[str, bytes], Any], source: str
) -> tuple[list[ChangeEvent], list[DeadLetter]]:
    """Split ``events`` into those the sink can store and dead letters.

    ``convert(column, serialized value)`` is the sink's own column conversion; it raises a
    :class:`CdcfastError` (ValueMappingError, ValueDecodeError) for a value it cannot store.
    """
    good: list[ChangeEvent] = []
    dead: list[DeadLetter] = []
    for event in events:
        try:
            change_row(table, event, source)
            for column, raw in zip(table.partition_key + table.clustering, event.partition_key + event.clustering):
                if raw is not None:
                    convert(column.name, raw)
            for cell in event.cells:
                column_def = table.columns.get(cell.column)
                if column_def is None or cell.value is None or cell.kind not in (SET, COUNTER):
                    continue
                if column_def.type.is_complex:
                    convert(cell.column, frozen_bytes(column_def.type, [(cell.path or b"", cell.value)]))
                elif cell.kind == SET:
                    convert(cell.column, cell.value)
        except CdcfastError as exc:
            dead.append(DeadLetter(event, str(exc)))
            continue
        good.append(event)
    return good, dead
