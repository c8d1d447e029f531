"""Poison events: changes a warehouse cannot hold (a date PostgreSQL has no room for, a varint too
wide for a ClickHouse column, U+0000 in PostgreSQL text). Each is screened out before the merge and
kept in the sink's dead-letter table with the reason, table, segment and position; the rest of the
batch, and of the table, keeps flowing. ``cdcfast dlq replay`` applies them again later (for
instance after changing the type mapping); replays are idempotent, as all writes are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class ReplayReport:
    """What ``cdcfast dlq replay`` did: the letters waiting, those applied, those skipped (with why)
    and how many still cannot be stored."""

    waiting: int = 0
    replayed: list[bytes] = field(default_factory=list)
    skipped: list[tuple[ChangeEvent, str]] = field(default_factory=list)
    unstorable: int = 0


async def replay_dead_letters(sink: Any, tables: dict[tuple[str, str], TableDef]) -> ReplayReport:
    """Apply again the dead letters never replayed, and mark those applied. A letter at or before a
    later truncation of its table from the same source is skipped: applying it would resurrect a
    truncated row (docs/truncate.md). Letters of tables the schema does not have stay waiting."""
    from cdcfast.sinks.errors import ErrorClass, classify
    from cdcfast.sinks.truncation import covered_by

    report = ReplayReport()
    truncations: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for letter in await sink.dead_letters():
        if letter["replayed_at"] is not None:
            continue
        report.waiting += 1
        event, source = EVENT_DECODER.decode(letter["event"]), letter["source"]
        table = tables.get((event.keyspace, event.table))
        if table is None:
            report.unstorable += 1
            continue
        writer = await sink.table_writer(table)
        if (event.keyspace, event.table) not in truncations:
            truncations[(event.keyspace, event.table)] = await sink.truncations(table)
        covering = covered_by(source, event.segment_id, event.position, truncations[(event.keyspace, event.table)])
        if covering is not None:
            report.skipped.append(
                (
                    event,
                    f"at or before the truncation of {table.qualified_name} from {source} "
                    f"(recorded position {covering[1]}:{covering[2]}): TRUNCATE emptied it",
                )
            )
            continue
        good, _ = screen(table, [event], writer.convert_value, source)
        refused = getattr(sink, "refused", None)  # a column the warehouse still refuses to add
        if refused is not None and refused.set_aside({(event.keyspace, event.table): [event]}):
            good = []
        if not good:
            report.unstorable += 1
            continue
        try:
            await sink.apply(good, tables, source, None)
        except Exception as exc:  # noqa: BLE001 - classified: only a refused value is this letter's own
            if classify(exc) is not ErrorClass.POISON:
                raise
            report.unstorable += 1  # the warehouse still refuses it (docs/failures.md): it stays
            continue
        report.replayed.append(event.event_id)
    await sink.mark_replayed(report.replayed)
    return report
