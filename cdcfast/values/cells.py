"""Cells of multi-cell (non-frozen) collection and UDT columns: one element per cell (reference §6.3).

| column type | cell path                          | cell value                     |
|-------------|------------------------------------|--------------------------------|
| list<T>     | 16-byte timeuuid (its order = list order) -> ``uuid.UUID`` | the element, as T |
| set<T>      | the element, as T                  | empty -> ``None``              |
| map<K, V>   | the key, as K                      | the value, as V                |
| UDT         | i16 field index -> the field name  | the field value, as its type   |

Simple and frozen columns have no path; :func:`decode_cell_value` decodes their value whole.
"""

from __future__ import annotations

import uuid
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values.codec import Buffer
from cdcfast.values.errors import ValueDecodeError, plural_bytes
from cdcfast.values.registry import decode


def _fail(ctype: CqlType, data: Buffer, reason: str) -> ValueDecodeError:
    return ValueDecodeError(ctype.cql(), len(data), reason)


def _element(ctype: CqlType, element_type: CqlType, data: Buffer, what: str) -> Any:
    try:
        return decode(element_type, data)
    except ValueDecodeError as exc:
        raise _fail(ctype, data, f"{what}: {exc}") from exc


def udt_field_index(column_type: CqlType, path: Buffer) -> int:
    """The declaration position of the field a non-frozen UDT cell holds (its path: a big-endian i16)."""
    if len(path) != 2:
        raise _fail(column_type, path, f"a UDT cell path is 2 bytes (the field index), not {plural_bytes(len(path))}")
    index = int.from_bytes(path, "big", signed=True)
    if not 0 <= index < len(column_type.field_names):
        raise _fail(
            column_type,
            path,
            f"cell path names field index {index}, but {column_type.name} has {len(column_type.field_names)} "
            "fields: is the schema older than the data?",
        )
    return index


def decode_cell_path(column_type: CqlType, path: Buffer) -> Any:
    """The element key of a multi-cell column's cell: list -> ``uuid.UUID``, set -> the element,
    map -> the key, UDT -> the field name."""
    if not column_type.is_complex:
        raise _fail(column_type, path, "only multi-cell (non-frozen collection or UDT) columns have cell paths")
    kind = column_type.kind
    if kind == "list":
        if len(path) != 16:
            raise _fail(column_type, path, f"a list cell path is a 16-byte timeuuid, not {plural_bytes(len(path))}")
        return uuid.UUID(bytes=bytes(path))
    if kind in ("set", "map"):
        return _element(column_type, column_type.params[0], path, "cell path")
    return column_type.field_names[udt_field_index(column_type, path)]


def decode_cell_value(column_type: CqlType, value: Buffer, path: Buffer | None = None) -> Any:
    """The element value of a cell. Multi-cell columns: list -> the element, set -> ``None`` (the
    element is the path), map -> the value, UDT -> the field value (``path`` is required to know
    which field). Simple and frozen columns: the whole value, as :func:`decode` gives it."""
    if not column_type.is_complex:
        return decode(column_type, value)
    kind = column_type.kind
    if kind == "list":
        return _element(column_type, column_type.params[0], value, "list element")
    if kind == "set":
        if len(value):
            raise _fail(column_type, value, "set element cells carry no value; the element is the cell path")
        return None
    if kind == "map":
        return _element(column_type, column_type.params[1], value, "map value")
    if path is None:
        raise _fail(column_type, value, "a UDT field cell needs its cell path to know which field it holds")
    index = udt_field_index(column_type, path)
    return _element(column_type, column_type.params[index], value, f"field {column_type.field_names[index]}")
