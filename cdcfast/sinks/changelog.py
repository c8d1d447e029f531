"""Change-log rows, the same for every warehouse: one per event, values as lossless JSON."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import orjson

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import ColumnDef, TableDef
from cdcfast.errors import CdcfastError
from cdcfast.events import TRUNCATE, ChangeEvent
from cdcfast.sinks.truncation import record_json
from cdcfast.transform.typemap import json_value
from cdcfast.values import decode, decode_cell_path, decode_cell_value

CELL_KINDS = ("set", "tombstone", "clear", "counter")


class ChangeRow(NamedTuple):
    event_id: bytes
    op: str
    ts: int  # write timestamp, microseconds
    segment_id: int
    position: int
    source: str
    key: str  # JSON object: primary key column -> value
    cells: str | None  # JSON array of the changed cells
    deletion_ts: int | None
    range: str | None  # JSON object: the bounds of a range deletion


def element_key_type(ctype: CqlType) -> CqlType:
    """The type of a complex column's cell path: list timeuuid, set element, map key, UDT field name."""
    if ctype.kind == "list":
        return CqlType("timeuuid")
    if ctype.kind == "udt":
        return CqlType("text")
    return ctype.params[0]


def element_value_type(ctype: CqlType, path: bytes | None) -> CqlType | None:
    """The type of a complex column's cell value (None for sets: their cells carry no value)."""
    if ctype.kind == "list":
        return ctype.params[0]
    if ctype.kind == "map":
        return ctype.params[1]
    if ctype.kind == "udt" and path is not None:
        return ctype.params[int.from_bytes(path, "big", signed=True)]
    return None


class UnrenderableValue(CdcfastError):
    """Bytes the change log cannot render (not a value of the column's type, or one JSON cannot
    hold), naming the keyspace, table and column; the change becomes a dead letter."""


@contextmanager
def _rendering(table: TableDef, column: str) -> Iterator[None]:
    try:
        yield
    except UnrenderableValue:
        raise
    except CdcfastError as exc:
        raise UnrenderableValue(f"{table.keyspace}.{table.name}, column {column}: {exc}") from exc


def _json(table: TableDef, column: ColumnDef, raw: bytes) -> Any:
    with _rendering(table, column.name):
        return json_value(column.type, decode(column.type, raw))


def _key(table: TableDef, event: ChangeEvent) -> str:
    key = {c.name: _json(table, c, raw) for c, raw in zip(table.partition_key, event.partition_key)}
    for c, raw in zip(table.clustering, event.clustering):
        key[c.name] = None if raw is None else _json(table, c, raw)
    return orjson.dumps(key).decode()


def _cells(table: TableDef, event: ChangeEvent) -> str | None:
    if not event.cells:
        return None
    out: list[dict[str, Any]] = []
    for cell in event.cells:
        column = table.columns.get(cell.column)
        entry: dict[str, Any] = {"col": cell.column, "kind": CELL_KINDS[cell.kind], "ts": cell.ts}
        with _rendering(table, cell.column):
            if column is not None and cell.path is not None:
                entry["path"] = json_value(element_key_type(column.type), decode_cell_path(column.type, cell.path))
            if column is not None and cell.value is not None:
                if column.type.is_complex:
                    value_type = element_value_type(column.type, cell.path)
                    value = decode_cell_value(column.type, cell.value, cell.path)
                else:
                    value_type, value = column.type, decode(column.type, cell.value)
                entry["value"] = None if value_type is None else json_value(value_type, value)
        if cell.ttl:
            entry["ttl"], entry["expires_at"] = cell.ttl, cell.expires_at
        out.append(entry)
    return orjson.dumps(out).decode()


def _range(table: TableDef, event: ChangeEvent) -> str | None:
    if event.op == TRUNCATE:  # what a truncation covers: its record
        return record_json(event).decode()
    if event.range_start is None and event.range_end is None:
        return None

    def bound(values: list[bytes | None] | None) -> list[Any]:
        return [None if v is None else _json(table, c, v) for c, v in zip(table.clustering, values or [])]

    return orjson.dumps(
        {
            "start": bound(event.range_start),
            "start_inclusive": event.range_start_inclusive,
            "end": bound(event.range_end),
            "end_inclusive": event.range_end_inclusive,
        }
    ).decode()


def change_row(table: TableDef, event: ChangeEvent, source: str) -> ChangeRow:
    return ChangeRow(
        event.event_id,
        event.op,
        event.ts,
        event.segment_id,
        event.position,
        source,
        _key(table, event),
        _cells(table, event),
        event.deletion_ts,
        _range(table, event),
    )
