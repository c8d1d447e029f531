"""Per-table value encoders, bound once per table: the hot path of every writer.

The generic functions (:func:`cdcfast.values.decode`, :func:`cdcfast.transform.typemap.json_value`,
:meth:`TargetType.to_target`) dispatch on the CQL type for every value. Here each column gets its own
closures, chosen once from its type, with the common scalar kinds decoded inline (``int.from_bytes``,
``str(raw, "utf-8")``, ``struct``). They give exactly what the generic functions give, for every
input: anything unusual (a wrong length, bad UTF-8, an ``EMPTY`` value, a composite type) goes
through the generic function, which also raises the same errors. ``tests/sinks/test_encode.py``
checks the equivalence on every value of every corpus.

:class:`TableCodec` renders a change-log row (:func:`cdcfast.sinks.changelog.change_row`) and
converts values for the sink's columns (:func:`cdcfast.transform.typemap.convert_cell`), and
:meth:`TableCodec.screen` splits a batch into storable events and dead letters exactly as
:func:`cdcfast.sinks.poison.screen` does, converting each value once: the converted key and cell
values are remembered per batch (:class:`Converted`) for the state rows.

Compiled parts: the screening loop's change-log JSON (cdcfast/sinks/_changelog.pyx), the default
PostgreSQL rules of the scalar types and the state rows' per-column loop (cdcfast/sinks/_scalars.pyx);
each hands anything unusual to the Python functions here, which decide and raise as before.
"""

from __future__ import annotations

import gc
import math
import struct
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import partial
from typing import Any

import orjson

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import ColumnDef, TableDef
from cdcfast.errors import CdcfastError
from cdcfast.events import COUNTER, SET, TRUNCATE, Cell, ChangeEvent
from cdcfast.sinks._changelog import BatchRender, TableRender
from cdcfast.sinks._scalars import ScalarTarget, row_values, scalar_kind
from cdcfast.sinks.changelog import CELL_KINDS, ChangeRow, element_key_type
from cdcfast.sinks.poison import DeadLetter, screen
from cdcfast.sinks.state import VisibleRow, frozen_bytes, sort_key
from cdcfast.sinks.truncation import record_json
from cdcfast.transform.typemap import (
    JSON_SAFE_INTEGER,
    POSTGRES_TARGETS,
    TargetType,
    ValueMappingError,
    json_value,
    null_text_key,
)
from cdcfast.values import EMPTY, ValueDecodeError, decode, decode_cell_path, decode_cell_value, udt_field_index

_INT_SIZES = {"tinyint": 1, "smallint": 2, "int": 4, "bigint": 8, "timestamp": 8, "time": 8}
_FLOATS = {"float": struct.Struct(">f"), "double": struct.Struct(">d")}
_DATE_EPOCH = 2**31
_DECIMAL_SCALE = 10**6  # decimals with a scale beyond this take the generic decoder
_from_bytes = int.from_bytes
_UUID = uuid.UUID


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a batch is applied. A batch makes hundreds of
    thousands of short-lived dicts and tuples, which reference counting frees; the collector would
    scan them again and again (about a sixth of a writer's time). Collection resumes after the batch
    (a collector paused by someone else stays paused)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def fast_decoder(ctype: CqlType) -> Callable[[bytes], Any]:
    """``decode(ctype, raw)`` as a one-argument function, inline for the common scalar kinds."""
    kind = ctype.kind
    generic = partial(decode, ctype)
    if kind in _INT_SIZES:
        size = _INT_SIZES[kind]

        def integer(raw: bytes) -> Any:
            return _from_bytes(raw, "big", signed=True) if len(raw) == size else generic(raw)

        return integer
    if kind == "date":

        def date(raw: bytes) -> Any:
            return _from_bytes(raw, "big") - _DATE_EPOCH if len(raw) == 4 else generic(raw)

        return date
    if kind in _FLOATS:
        packer = _FLOATS[kind]
        unpack, size = packer.unpack, packer.size

        def floating(raw: bytes) -> Any:
            return unpack(raw)[0] if len(raw) == size else generic(raw)

        return floating
    if kind == "boolean":

        def boolean(raw: bytes) -> Any:
            return raw[0] != 0 if len(raw) == 1 else generic(raw)

        return boolean
    if kind in ("text", "ascii"):
        encoding = "utf-8" if kind == "text" else "ascii"

        def text(raw: bytes) -> Any:
            try:
                return str(raw, encoding)
            except UnicodeDecodeError:
                return generic(raw)  # raises the decoder's own error

        return text
    if kind in ("blob", "custom"):
        return lambda raw: raw if type(raw) is bytes else bytes(raw)
    if kind in ("uuid", "timeuuid"):

        def identifier(raw: bytes) -> Any:
            return _UUID(bytes=bytes(raw)) if len(raw) == 16 else generic(raw)

        return identifier
    if kind == "varint":
        return lambda raw: _from_bytes(raw, "big", signed=True) if len(raw) else EMPTY
    if kind == "decimal":

        def decimal(raw: bytes) -> Any:
            if 5 <= len(raw) <= 20:
                scale = _from_bytes(raw[:4], "big", signed=True)
                if -_DECIMAL_SCALE < scale < _DECIMAL_SCALE:
                    return Decimal(f"{_from_bytes(raw[4:], 'big', signed=True)}E{-scale}")
            return generic(raw)

        return decimal
    if kind in ("list", "set", "map", "tuple", "udt"):
        return _composite_decoder(ctype, generic)
    return generic


def _composite_decoder(ctype: CqlType, generic: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Frozen collections, tuples and UDTs: the shapes :func:`decode` gives (``cdcfast.values.collections``).
    Anything irregular (a negative count, a short or long value) is decoded by the generic decoder,
    which raises its own error."""
    kind = ctype.kind
    items = [fast_decoder(p) for p in ctype.params]
    names = ctype.field_names

    def sequence(raw: bytes) -> Any:
        (element,) = items
        count = _from_bytes(raw[:4], "big", signed=True)
        out: list[Any] = []
        pos, end = 4, len(raw)
        if not 0 <= count <= (end - 4) // 4:  # each element has at least its length
            raise ValueError
        for _ in range(count):
            size = _from_bytes(raw[pos : pos + 4], "big", signed=True)
            pos += 4
            if size < 0:
                out.append(None)
            else:
                out.append(element(raw[pos : pos + size]))
                pos += size
        if pos != end:
            raise ValueError
        return out

    def pairs(raw: bytes) -> Any:
        key_item, value_item = items
        count = _from_bytes(raw[:4], "big", signed=True)
        out: list[tuple[Any, Any]] = []
        pos, end = 4, len(raw)
        if not 0 <= count <= (end - 4) // 8:  # each entry has at least its two lengths
            raise ValueError
        for _ in range(count):
            size = _from_bytes(raw[pos : pos + 4], "big", signed=True)
            pos += 4
            if size < 0:
                key = None
            else:
                key = key_item(raw[pos : pos + size])
                pos += size
            size = _from_bytes(raw[pos : pos + 4], "big", signed=True)
            pos += 4
            if size < 0:
                out.append((key, None))
            else:
                out.append((key, value_item(raw[pos : pos + size])))
                pos += size
        if pos != end:
            raise ValueError
        return out

    def fields(raw: bytes) -> Any:
        out: list[Any] = []
        pos, end = 0, len(raw)
        for item in items:
            if pos >= end:  # fields added to the type after the value was written
                out.append(None)
                continue
            size = _from_bytes(raw[pos : pos + 4], "big", signed=True)
            pos += 4
            if size < 0:
                out.append(None)
            else:
                out.append(item(raw[pos : pos + size]))
                pos += size
        if pos != end:
            raise ValueError
        return tuple(out) if kind == "tuple" else dict(zip(names, out))

    read = sequence if kind in ("list", "set") else pairs if kind == "map" else fields

    def composite(raw: bytes) -> Any:
        if len(raw) >= 4:
            try:
                return read(raw)
            except Exception:  # noqa: BLE001 - irregular bytes: the generic decoder decides
                pass
        return generic(raw)

    return composite


def fast_json(ctype: CqlType) -> Callable[[Any], Any]:
    """``json_value(ctype, value)`` (no U+0000 check: the change log's rendering)."""
    kind = ctype.kind
    if kind in ("text", "ascii", "boolean"):
        return lambda value: None if value is EMPTY else value
    if kind in _INT_SIZES or kind in ("date", "varint"):

        def integer(value: Any) -> Any:
            if value is None or value is EMPTY:
                return None
            if -JSON_SAFE_INTEGER <= value <= JSON_SAFE_INTEGER:
                return value
            return json_value(ctype, value)

        return integer
    if kind in ("uuid", "timeuuid", "inet", "decimal"):
        return lambda value: None if value is None or value is EMPTY else str(value)
    if kind in _FLOATS:
        isfinite = math.isfinite

        def floating(value: Any) -> Any:
            if value is None or value is EMPTY:
                return None
            if value and isfinite(value):
                return value
            return json_value(ctype, value)  # NaN, infinities, -0.0

        return floating
    if kind in ("blob", "custom"):
        return lambda value: None if value is None or value is EMPTY else "0x" + bytes(value).hex()
    if kind in ("list", "set", "vector", "map", "tuple", "udt"):
        return _composite_json(ctype)
    return partial(json_value, ctype)


def _composite_json(ctype: CqlType) -> Callable[[Any], Any]:
    """``json_value`` of collections, tuples and UDTs, item by item with each item's own renderer."""
    kind = ctype.kind
    items = [fast_json(p) for p in ctype.params]
    if kind in ("list", "set", "vector"):
        (element,) = items
        return lambda value: None if value is None or value is EMPTY else [element(item) for item in value]
    if kind == "map":
        key, item = items
        if ctype.params[0].kind in ("text", "ascii"):

            def text_keyed(value: Any) -> Any:
                if value is None or value is EMPTY:
                    return None
                out = {k: item(v) for k, v in value}
                if None in out:
                    raise null_text_key(ctype)
                return out

            return text_keyed
        return lambda value: None if value is None or value is EMPTY else [[key(k), item(v)] for k, v in value]
    if kind == "tuple":
        return lambda value: None if value is None or value is EMPTY else [f(v) for f, v in zip(items, value)]
    named = list(zip(ctype.field_names, items))
    return lambda value: None if value is None or value is EMPTY else {n: f(value.get(n)) for n, f in named}


def raw_json(ctype: CqlType) -> Callable[[bytes], Any]:
    """``json_value(ctype, decode(ctype, raw))``."""
    decoder, render = fast_decoder(ctype), fast_json(ctype)
    kind = ctype.kind
    if kind in ("text", "ascii"):
        return decoder  # text is never EMPTY: a zero-length text is ""
    if kind in _INT_SIZES:
        size = _INT_SIZES[kind]

        def integer(raw: bytes) -> Any:
            # 1 to 4 byte integers are always within the JSON-safe range
            if len(raw) == size and size <= 4:
                return _from_bytes(raw, "big", signed=True)
            return render(decoder(raw))

        return integer
    return lambda raw: render(decoder(raw))


def fast_target(
    target: TargetType, ctype: CqlType, from_value: Callable[[Any], Any] | None = None
) -> Callable[[bytes], Any]:
    """``target.to_target(raw)``: the value of one serialized Cassandra value for the target column
    (``from_value``: an equivalent of ``target.from_value``, such as :func:`fast_jsonb`'s)."""
    decoder, to_target = fast_decoder(ctype), target.to_target
    if from_value is None:
        from_value = target.from_value

    def convert(raw: bytes) -> Any:
        try:
            value = decoder(raw)
        except ValueDecodeError:
            return to_target(raw)  # raises the converter's own error
        return from_value(value)

    return convert


_NUL_JSON = b"\\u0000"  # how orjson writes U+0000 (a text holding a backslash and "u0000" looks alike)


def fast_jsonb(target: TargetType, ctype: CqlType) -> Callable[[Any], Any]:
    """``target.from_value`` of a PostgreSQL ``jsonb`` column (the ``json`` converter): the JSON text
    of the value as :func:`fast_json` renders it (``json_value`` with per-type closures instead of
    its dispatch on every item). The converter also refuses U+0000 (jsonb cannot hold it): a text
    that may hold one, NULL, and anything the closures do not take go through ``from_value``, which
    converts or raises as before."""
    render, from_value, dumps = fast_json(ctype), target.from_value, orjson.dumps

    def convert(value: Any) -> Any:
        if value is None or value is EMPTY:
            return from_value(value)
        try:
            text = dumps(render(value))
        except Exception:  # noqa: BLE001 - the converter decides and raises its own error
            return from_value(value)
        if _NUL_JSON in text:
            return from_value(value)
        return text.decode()

    return convert


class ColumnCodec:
    """One column's encoders: change-log JSON (whole value, cell path, cell value) and target value."""

    __slots__ = (
        "name",
        "ctype",
        "complex",
        "counter",
        "json",
        "path_json",
        "value_json",
        "to_target",
        "elements_target",
        "null",
    )

    def __init__(self, table: TableDef, column: ColumnDef, target: TargetType) -> None:
        ctype = column.type
        self.name = column.name
        self.ctype = ctype
        self.complex = ctype.is_complex
        self.counter = ctype.is_counter
        self.null: Any = None  # the column's value where none shows
        self.json = raw_json(ctype)
        self.path_json: Callable[[bytes], Any] | None = None
        self.value_json: Callable[[bytes, bytes | None], Any] | None = None
        if self.complex:
            self.path_json, self.value_json = _element_json(ctype)
        storage = replace_frozen(ctype)
        from_value = target.from_value
        if target.converter == "json" and target.target in POSTGRES_TARGETS:
            from_value = fast_jsonb(target, storage)
        convert = fast_target(target, storage, from_value)
        keyspace, name = table.keyspace, table.name

        def to_target(raw: bytes) -> Any:
            try:
                return convert(raw)
            except ValueMappingError as exc:
                raise exc.located(keyspace, name, column.name) from exc

        kind = scalar_kind(target.target, target.converter, ctype.kind, target.sql) if not ctype.params else 0
        self.to_target: Callable[[bytes], Any] = ScalarTarget(kind, ctype.kind, to_target) if kind else to_target
        self.elements_target: Callable[[list[tuple[bytes, bytes]]], Any] = (
            _elements_target(ctype, to_target, from_value, partial(_locate, keyspace, name, column.name))
            if self.complex
            else _no_elements
        )


def _identity(value: Any) -> Any:
    return value


def _locate(keyspace: str, table: str, column: str, exc: ValueMappingError) -> ValueMappingError:
    return exc.located(keyspace, table, column)


def _no_elements(elements: list[tuple[bytes, bytes]]) -> Any:
    raise TypeError("only non-frozen collection and UDT columns have elements")


def _elements_target(
    ctype: CqlType,
    to_target: Callable[[bytes], Any],
    from_value: Callable[[Any], Any],
    locate: Callable[[ValueMappingError], ValueMappingError],
) -> Callable[[list[tuple[bytes, bytes]]], Any]:
    """``to_target(frozen_bytes(ctype, elements))``: a non-frozen column's elements (path, value) as
    the column stores them, without serializing them into the frozen value and decoding that again.

    The value is built with the very element decoders the frozen value's decoder uses
    (:func:`_composite_decoder`), so it is the value that decoder would give; anything irregular
    (an element its decoder refuses, a UDT field path that is not 2 bytes) takes the frozen bytes'
    own path, which decides and raises as before."""
    kind = ctype.kind
    items = [fast_decoder(p) for p in ctype.params]
    names = ctype.field_names

    # state.ordered_elements' order, its sort key made once per column instead of once per call
    order = (
        sort_key(CqlType("timeuuid") if kind == "list" else ctype.params[0]) if kind != "udt" else _identity
    )

    def by_path(item: tuple[bytes, bytes]) -> Any:
        return order(item[0])

    def ordered(ctype: CqlType, elements: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        # One element (screening a cell) is in order already; a list's path is a timeuuid, whose
        # sort key refuses other lengths (then the frozen path decides, as before).
        if len(elements) == 1 and (kind != "list" or len(elements[0][0]) == 16):
            return elements
        return sorted(elements, key=by_path)

    def build(elements: list[tuple[bytes, bytes]]) -> Any:
        if kind == "list":
            (element,) = items
            return [element(value) for _, value in ordered(ctype, elements)]
        if kind == "set":
            (element,) = items
            return [element(path) for path, _ in ordered(ctype, elements)]
        if kind == "map":
            key, item = items
            return [(key(path), item(value)) for path, value in ordered(ctype, elements)]
        if not names:  # an empty frozen UDT value is decoded by the generic decoder
            raise ValueError
        fields: list[Any] = [None] * len(names)
        for path, value in elements:
            if len(path) != 2:
                raise ValueError
            index = _from_bytes(path, "big", signed=True)
            if 0 <= index < len(fields):
                fields[index] = items[index](value)
        return dict(zip(names, fields))

    def convert(elements: list[tuple[bytes, bytes]]) -> Any:
        try:
            value = build(elements)
        except Exception:  # noqa: BLE001 - irregular elements: the frozen value's own path decides
            return to_target(frozen_bytes(ctype, elements))
        try:
            return from_value(value)
        except ValueMappingError as exc:
            raise locate(exc) from exc

    return convert


def _element_json(
    ctype: CqlType,
) -> tuple[Callable[[bytes], Any], Callable[[bytes, bytes | None], Any]]:
    """A non-frozen collection or UDT column's cell path and cell value in the change log:
    ``json_value`` of :func:`decode_cell_path` / :func:`decode_cell_value` (of the element types)."""
    kind = ctype.kind
    path_json = fast_json(element_key_type(ctype))
    if kind in ("set", "map"):
        path_decoder = fast_decoder(ctype.params[0])
    elif kind == "list":
        path_decoder = fast_decoder(CqlType("timeuuid"))
    else:
        path_decoder = partial(decode_cell_path, ctype)
    value_types = list(ctype.params)
    value_decoders = [fast_decoder(p) for p in value_types]
    value_jsons = [fast_json(p) for p in value_types]

    def path(raw: bytes) -> Any:
        if kind == "list" and len(raw) != 16:  # the timeuuid decoder takes b"" (EMPTY); a list path does not
            return path_json(decode_cell_path(ctype, raw))  # raises, naming the column type
        try:
            value = path_decoder(raw)
        except ValueDecodeError:
            value = decode_cell_path(ctype, raw)  # raises, naming the column type
        return path_json(value)

    def value(raw: bytes, cell_path: bytes | None) -> Any:
        if kind == "set":
            if len(raw):
                decode_cell_value(ctype, raw, cell_path)  # raises: set cells carry no value
            return None
        if kind == "udt":
            if cell_path is None:
                return decode_cell_value(ctype, raw, cell_path)  # raises
            index = udt_field_index(ctype, cell_path)
        else:
            index = 0 if kind == "list" else 1
        try:
            decoded = value_decoders[index](raw)
        except ValueDecodeError:
            decoded = decode_cell_value(ctype, raw, cell_path)  # raises, naming the column type
        return value_jsons[index](decoded)

    return path, value


def replace_frozen(ctype: CqlType) -> CqlType:
    """Non-frozen collections are stored as their frozen value."""
    from dataclasses import replace

    return replace(ctype, frozen=True) if ctype.is_complex else ctype


class Converted:
    """Target values converted in a batch, per column: serialized bytes (a non-frozen column's: the
    tuple of its elements) -> value."""

    __slots__ = ("values",)

    def __init__(self, names: list[str]) -> None:
        self.values: dict[str, dict[Any, Any]] = {name: {} for name in names}


# A batch screened all at once (TableCodec.screen): storable events, change-log rows, dead letters, conversions.
Screened = tuple[list[ChangeEvent], list[Any], list[DeadLetter], Converted]


class Screening:
    """One batch's screening (:meth:`TableCodec.screen`), done as its change-log rows are consumed:
    iterating gives each storable event's row (so a COPY can send rows while later ones are still
    being rendered); :meth:`finish` screens what is left. Then ``good`` holds the storable events,
    ``rows`` their change-log rows, ``dead`` the dead letters and ``converted`` the values converted
    on the way.

    The split is the one :func:`cdcfast.sinks.poison.screen` makes: an event whose change-log row,
    key values or written cell values cannot be converted is a dead letter, with the same reason.
    ``record(event_id, op, ts, segment_id, position, source, key, cells, deletion_ts, range)``
    makes each change-log row (default: a :class:`ChangeRow`, JSON as UTF-8 bytes; PostgreSQL: the row in
    binary COPY form)."""

    def __init__(
        self, codec: TableCodec, events: list[ChangeEvent], source: str, record: Callable[..., Any] = ChangeRow
    ) -> None:
        self.good: list[ChangeEvent] = []
        self.rows: list[Any] = []
        self.dead: list[DeadLetter] = []
        self.converted = Converted(list(codec.columns))
        self._pending = codec._screen(events, source, record, self)

    def __iter__(self) -> Iterator[Any]:
        return self._pending

    def finish(self) -> Screening:
        for _ in self._pending:
            pass
        return self


class TableCodec:
    """A table's change-log rendering and target conversions (see the module docstring)."""

    def __init__(self, table: TableDef, targets: dict[str, TargetType], nulls: dict[str, Any] | None = None) -> None:
        """``nulls``: what a column holds for a value that does not show, where that is not ``None``
        (ClickHouse arrays: ``[]``)."""
        self.table = table
        self.columns: dict[str, ColumnCodec] = {
            c.name: ColumnCodec(table, c, targets[c.name])
            for c in table.partition_key + table.clustering + list(table.columns.values())
        }
        for name, null in (nulls or {}).items():
            self.columns[name].null = null
        self.partition_key = [self.columns[c.name] for c in table.partition_key]
        self.clustering = [self.columns[c.name] for c in table.clustering]
        self.data = [self.columns[c.name] for c in table.columns.values()]
        # columns whose values are stored as JSON (the change log's rendering): their collection and
        # UDT elements need no conversion to screen them (see _changelog.BatchRender.screen_element)
        self._json_columns = {name for name, target in targets.items() if target.converter == "json"}
        self._render: TableRender | None = None  # the compiled change-log renderer, built on first use

    # -- change log -------------------------------------------------------------------------------
    def key_json(self, event: ChangeEvent) -> bytes:
        key = {c.name: c.json(raw) for c, raw in zip(self.partition_key, event.partition_key)}
        for c, raw in zip(self.clustering, event.clustering):
            key[c.name] = None if raw is None else c.json(raw)
        return orjson.dumps(key)

    def cells_json(self, event: ChangeEvent) -> bytes | None:
        if not event.cells:
            return None
        out: list[dict[str, Any]] = []
        columns = self.columns
        for cell in event.cells:
            column = columns.get(cell.column)
            entry: dict[str, Any] = {"col": cell.column, "kind": CELL_KINDS[cell.kind], "ts": cell.ts}
            if column is not None:
                if cell.path is not None and column.path_json is not None:
                    entry["path"] = column.path_json(cell.path)
                elif cell.path is not None:
                    entry["path"] = json_value(
                        element_key_type(column.ctype), decode_cell_path(column.ctype, cell.path)
                    )
                if cell.value is not None:
                    if column.value_json is not None:
                        entry["value"] = column.value_json(cell.value, cell.path)
                    elif column.complex:  # pragma: no cover - complex columns have value_json
                        raise AssertionError(column.name)
                    else:
                        entry["value"] = column.json(cell.value)
            if cell.ttl:
                entry["ttl"], entry["expires_at"] = cell.ttl, cell.expires_at
            out.append(entry)
        return orjson.dumps(out)

    def range_json(self, event: ChangeEvent) -> bytes | None:
        if event.op == TRUNCATE:
            return record_json(event)
        if event.range_start is None and event.range_end is None:
            return None

        def bound(values: list[bytes | None] | None) -> list[Any]:
            return [None if v is None else c.json(v) for c, v in zip(self.clustering, values or [])]

        return orjson.dumps(
            {
                "start": bound(event.range_start),
                "start_inclusive": event.range_start_inclusive,
                "end": bound(event.range_end),
                "end_inclusive": event.range_end_inclusive,
            }
        )

    def change_row(self, event: ChangeEvent, source: str) -> ChangeRow:
        """:func:`cdcfast.sinks.changelog.change_row`, with the JSON as UTF-8 bytes."""
        return ChangeRow(
            event.event_id,
            event.op,
            event.ts,
            event.segment_id,
            event.position,
            source,
            self.key_json(event),  # type: ignore[arg-type]
            self.cells_json(event),  # type: ignore[arg-type]
            event.deletion_ts,
            self.range_json(event),  # type: ignore[arg-type]
        )

    # -- screening --------------------------------------------------------------------------------
    def screen(
        self, events: list[ChangeEvent], source: str, record: Callable[..., Any] = ChangeRow
    ) -> Screened:
        """Storable events with their change-log rows, dead letters, and the values converted on the way
        (:class:`Screening`, all at once)."""
        screening = Screening(self, events, source, record)
        screening.finish()
        return screening.good, screening.rows, screening.dead, screening.converted

    def _screen(
        self, events: list[ChangeEvent], source: str, record: Callable[..., Any], out: Screening
    ) -> Iterator[Any]:
        good, rows, dead = out.good, out.rows, out.dead
        if self._render is None:
            self._render = TableRender(self, CELL_KINDS, raw_json, self._json_columns)
        row_of = BatchRender(self._render, out.converted.values, source, record).row
        for event in events:
            try:
                row = row_of(event)
            except CdcfastError:
                # The generic screen gives the dead letter its reason (and agrees that it is one).
                ok, letters = screen(self.table, [event], self._convert, source)
                dead.extend(letters)
                if ok:  # pragma: no cover - the encoders here refuse exactly what the generic ones refuse
                    raise
                continue
            good.append(event)
            rows.append(row)
            yield row

    def _complex_entry(self, column: ColumnCodec, cell: Cell) -> dict[str, Any]:
        """A change-log cell entry of a non-frozen collection or UDT column (or a path on a simple one)."""
        entry: dict[str, Any] = {"col": cell.column, "kind": CELL_KINDS[cell.kind], "ts": cell.ts}
        if cell.path is not None:
            if column.path_json is not None:
                entry["path"] = column.path_json(cell.path)
            else:
                path_type = element_key_type(column.ctype)
                entry["path"] = json_value(path_type, decode_cell_path(column.ctype, cell.path))
        if cell.value is not None:
            if column.value_json is not None:
                entry["value"] = column.value_json(cell.value, cell.path)
            else:
                entry["value"] = column.json(cell.value)
            if column.complex and cell.kind in (SET, COUNTER):
                column.elements_target([(cell.path or b"", cell.value)])
            elif cell.kind == SET:
                column.to_target(cell.value)
        return entry

    def _convert(self, column: str, raw: bytes) -> Any:
        return self.columns[column].to_target(raw)

    def row_values(self, row: VisibleRow, converted: Converted) -> list[Any]:
        """A visible row's values as the sink's columns store them: key columns, then data columns
        (``None``, or the column's own empty value, for a value that does not show); each value
        converted once per batch (a non-frozen column's: per tuple of elements, since a
        partition's static change rewrites each of its rows with the same elements). Compiled:
        :func:`cdcfast.sinks._scalars.row_values`."""
        return row_values(self, row, converted.values)

    def target(self, converted: Converted, column: ColumnCodec, raw: bytes) -> Any:
        """The target value of a simple column's serialized value, converted once per batch."""
        seen = converted.values[column.name]
        try:
            return seen[raw]
        except KeyError:
            value = seen[raw] = column.to_target(raw)
            return value
