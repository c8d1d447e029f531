"""Collections, tuples, UDTs and vectors as single values (format reference §6.2, and §6.1 for vectors).

Shapes returned by ``decode``:

* ``list<T>`` -> ``list``; ``set<T>`` -> ``list`` in stored order (Cassandra stores sets sorted by
  the element type's comparator). A list, not a frozenset, so that unhashable elements (frozen lists,
  UDT dicts) and the stored order both survive.
* ``map<K, V>`` -> ``list`` of ``(key, value)`` tuples in stored (key-sorted) order: lossless for
  any key type, and ``dict(pairs)`` is one call away when the keys are hashable.
* ``tuple<...>`` -> ``tuple`` with one item per declared field; a null field or a field missing from
  the end of the bytes (the value predates a type change) is ``None``.
* UDT -> ``dict`` field name -> value in declaration order; null and missing trailing fields are ``None``.
* ``vector<T, n>`` -> ``list`` of n items: fixed-size ``T`` is concatenated with no lengths,
  other ``T`` carry an unsigned vint length each.

A null element (length -1, not expected in stored data) decodes to ``None``, a zero-length one to
``EMPTY`` (or ``""``/``b""`` for text and blob types). Non-frozen collections use the same layout
when they are serialized whole; stored in a table they are one cell per element (see ``cells.py``).

Encoders write elements in the order given. Python ``set``/``frozenset`` values are written sorted
by their serialized bytes, which is deterministic but is not Cassandra's comparator order for every
type; give a list in comparator order when that matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values.codec import Codec, decode_error, describe, encode_error, expect_length
from cdcfast.values.errors import ValueDecodeError, ValueEncodeError, plural_bytes
from cdcfast.values.vint import encode_uvint, read_uvint

I32_MAX = 2**31 - 1


def _decode_item(ctype: CqlType, data: bytes) -> Any:
    # The registry imports this module, so the dispatcher is looked up when first needed.
    from cdcfast.values.registry import decode

    return decode(ctype, data)


def _encode_item(ctype: CqlType, value: Any) -> bytes:
    from cdcfast.values.registry import encode

    return encode(ctype, value)


class _Cursor:
    """Reads one serialized collection value; errors carry the outer type and the offset."""

    __slots__ = ("ctype", "data", "pos")

    def __init__(self, ctype: CqlType, data: bytes) -> None:
        self.ctype = ctype
        self.data = data
        self.pos = 0

    def fail(self, reason: str, offset: int | None = None) -> ValueDecodeError:
        return decode_error(self.ctype, self.data, reason, self.pos if offset is None else offset)

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size > self.remaining:
            raise self.fail(f"{what} needs {plural_bytes(size)}, only {self.remaining} remain")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def int32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big", signed=True)

    def count(self) -> int:
        count = self.int32("the element count")
        if count < 0:
            raise self.fail(f"negative element count {count}", self.pos - 4)
        return count

    def item(self, ctype: CqlType, what: str) -> Any:
        """An i32-length-prefixed item, decoded; length -1 (or any negative) is null."""
        size = self.int32(f"{what} length")
        if size < 0:
            return None
        start = self.pos
        raw = self.take(size, what)
        return self.decode(ctype, raw, what, start)

    def decode(self, ctype: CqlType, raw: bytes, what: str, start: int) -> Any:
        try:
            return _decode_item(ctype, raw)
        except ValueDecodeError as exc:
            raise self.fail(f"{what}: {exc}", start) from exc

    def uvint(self, what: str) -> int:
        try:
            value, self.pos = read_uvint(self.data, self.pos)
        except ValueDecodeError as exc:
            raise self.fail(f"{what}: {exc.reason}") from exc
        return value

    def finish(self, after: str) -> None:
        if self.remaining:
            raise self.fail(f"{plural_bytes(self.remaining)} trailing after the last {after}")


def _length_prefixed(ctype: CqlType, item_type: CqlType, value: Any, what: str) -> bytes:
    if value is None:
        return b"\xff\xff\xff\xff"
    try:
        raw = _encode_item(item_type, value)
    except ValueEncodeError as exc:
        raise encode_error(ctype, f"{what}: {exc}") from exc
    if len(raw) > I32_MAX:
        raise encode_error(ctype, f"{what} is {len(raw)} bytes, more than an i32 length allows")
    return len(raw).to_bytes(4, "big") + raw


def _sequence(ctype: CqlType, value: Any) -> Sequence[Any]:
    if isinstance(value, list | tuple):
        return value
    raise encode_error(ctype, f"expected a list or tuple, got {type(value).__name__}")


# -- list and set ---------------------------------------------------------------------------------


def _decode_list(ctype: CqlType, data: bytes) -> list[Any]:
    cursor = _Cursor(ctype, data)
    items = [cursor.item(ctype.params[0], f"element {i}") for i in range(cursor.count())]
    cursor.finish("element")
    return items


def _encode_list(ctype: CqlType, value: Any) -> bytes:
    element_type = ctype.params[0]
    if isinstance(value, set | frozenset):
        # No order of its own: sorted by the serialized element, so the bytes are deterministic.
        parts = sorted((_length_prefixed(ctype, element_type, v, "element") for v in value), key=lambda p: p[4:])
    else:
        parts = [
            _length_prefixed(ctype, element_type, v, f"element {i}") for i, v in enumerate(_sequence(ctype, value))
        ]
    return len(parts).to_bytes(4, "big") + b"".join(parts)


# -- map ------------------------------------------------------------------------------------------


def _decode_map(ctype: CqlType, data: bytes) -> list[tuple[Any, Any]]:
    key_type, value_type = ctype.params
    cursor = _Cursor(ctype, data)
    pairs = []
    for i in range(cursor.count()):
        key = cursor.item(key_type, f"key {i}")
        pairs.append((key, cursor.item(value_type, f"value {i}")))
    cursor.finish("entry")
    return pairs


def _encode_map(ctype: CqlType, value: Any) -> bytes:
    key_type, value_type = ctype.params
    pairs = list(value.items()) if isinstance(value, Mapping) else _sequence(ctype, value)
    parts = [len(pairs).to_bytes(4, "big")]
    for i, pair in enumerate(pairs):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise encode_error(ctype, f"entry {i} is not a (key, value) pair: {describe(pair)}")
        parts.append(_length_prefixed(ctype, key_type, pair[0], f"key {i}"))
        parts.append(_length_prefixed(ctype, value_type, pair[1], f"value {i}"))
    return b"".join(parts)


# -- tuple and UDT --------------------------------------------------------------------------------


def _decode_fields(ctype: CqlType, data: bytes, names: Sequence[str]) -> list[Any]:
    cursor = _Cursor(ctype, data)
    fields: list[Any] = []
    for field_type, name in zip(ctype.params, names):
        if not cursor.remaining:  # trailing fields added to the type after the value was written
            fields.append(None)
            continue
        fields.append(cursor.item(field_type, name))
    cursor.finish("field")
    return fields


def _decode_tuple(ctype: CqlType, data: bytes) -> tuple[Any, ...]:
    return tuple(_decode_fields(ctype, data, [f"field {i}" for i in range(len(ctype.params))]))


def _encode_tuple(ctype: CqlType, value: Any) -> bytes:
    items = _sequence(ctype, value)
    if len(items) != len(ctype.params):
        raise encode_error(ctype, f"expected {len(ctype.params)} fields, got {len(items)}")
    return b"".join(_length_prefixed(ctype, t, v, f"field {i}") for i, (t, v) in enumerate(zip(ctype.params, items)))


def _decode_udt(ctype: CqlType, data: bytes) -> dict[str, Any]:
    names = [f"field {n}" for n in ctype.field_names]
    return dict(zip(ctype.field_names, _decode_fields(ctype, data, names)))


def _encode_udt(ctype: CqlType, value: Any) -> bytes:
    """A mapping field name -> value; absent fields are written as null."""
    if not isinstance(value, Mapping):
        raise encode_error(ctype, f"expected a mapping of field names, got {type(value).__name__}")
    unknown = set(value) - set(ctype.field_names)
    if unknown:
        raise encode_error(ctype, f"no field(s) {sorted(map(str, unknown))} in {ctype.name}")
    return b"".join(
        _length_prefixed(ctype, t, value.get(n), f"field {n}") for n, t in zip(ctype.field_names, ctype.params)
    )


# -- vector ---------------------------------------------------------------------------------------


def _decode_vector(ctype: CqlType, data: bytes) -> list[Any]:
    element_type, dimension = ctype.params[0], ctype.dimension
    size = element_type.fixed_length
    cursor = _Cursor(ctype, data)
    if size > 0:
        expect_length(ctype, data, size * dimension)
        return [
            cursor.decode(element_type, cursor.take(size, f"element {i}"), f"element {i}", i * size)
            for i in range(dimension)
        ]
    items = []
    for i in range(dimension):
        length = cursor.uvint(f"element {i} length")
        start = cursor.pos
        items.append(cursor.decode(element_type, cursor.take(length, f"element {i}"), f"element {i}", start))
    cursor.finish("element")
    return items


def _encode_vector(ctype: CqlType, value: Any) -> bytes:
    element_type, dimension = ctype.params[0], ctype.dimension
    items = _sequence(ctype, value)
    if len(items) != dimension:
        raise encode_error(ctype, f"expected {dimension} elements, got {len(items)}")
    size = element_type.fixed_length
    parts = []
    for i, item in enumerate(items):
        if item is None:
            raise encode_error(ctype, f"element {i} is null; vector elements cannot be")
        try:
            raw = _encode_item(element_type, item)
        except ValueEncodeError as exc:
            raise encode_error(ctype, f"element {i}: {exc}") from exc
        if size > 0:
            if len(raw) != size:
                raise encode_error(ctype, f"element {i} ({item!r}) is {plural_bytes(len(raw))}, expected {size}")
            parts.append(raw)
        else:
            parts.append(encode_uvint(len(raw)) + raw)
    return b"".join(parts)


CODECS: dict[str, Codec] = {
    "list": Codec(_decode_list, _encode_list),
    "set": Codec(_decode_list, _encode_list),
    "map": Codec(_decode_map, _encode_map),
    "tuple": Codec(_decode_tuple, _encode_tuple),
    "udt": Codec(_decode_udt, _encode_udt),
    "vector": Codec(_decode_vector, _encode_vector),
}
