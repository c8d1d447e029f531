"""What every codec module shares: the :class:`Codec` record, the ``EMPTY`` singleton, small checks."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values.errors import ValueDecodeError, ValueEncodeError

Buffer: TypeAlias = bytes | bytearray | memoryview


class Empty(enum.Enum):
    """Type of :data:`EMPTY`: a zero-length value of a type whose values are never zero bytes long.

    Cassandra accepts an empty byte string for most types (``int``, ``uuid``, ``frozen<list<..>>``,
    ...); it is neither null nor any value of the type. ``text``, ``ascii``, ``blob`` and custom types
    decode an empty byte string to ``""`` / ``b""`` instead. ``EMPTY`` is falsy, is its own copy and
    survives pickling; ``encode(any_type, EMPTY) == b""``.
    """

    EMPTY = "EMPTY"

    def __repr__(self) -> str:
        return "EMPTY"

    def __bool__(self) -> bool:
        return False


EMPTY: Final = Empty.EMPTY

DecodeFn: TypeAlias = Callable[[CqlType, bytes], Any]
EncodeFn: TypeAlias = Callable[[CqlType, Any], bytes]


@dataclass(frozen=True)
class Codec:
    """One CQL type family: bytes -> Python value and back.

    ``decode`` is never called with zero bytes unless ``empty_is_value`` is set: the registry answers
    :data:`EMPTY` itself. ``encode`` is never called with :data:`EMPTY`.
    """

    decode: DecodeFn
    encode: EncodeFn
    empty_is_value: bool = False


def decode_error(ctype: CqlType, data: bytes, reason: str, offset: int | None = None) -> ValueDecodeError:
    return ValueDecodeError(ctype.cql(), len(data), reason, offset)


def encode_error(ctype: CqlType, reason: str) -> ValueEncodeError:
    return ValueEncodeError(ctype.cql(), reason)


def expect_length(ctype: CqlType, data: bytes, size: int) -> None:
    if len(data) != size:
        raise decode_error(ctype, data, f"expected exactly {size} bytes")


def require_int(ctype: CqlType, value: Any, low: int, high: int, what: str = "value") -> int:
    """An ``int`` (not a ``bool``) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise encode_error(ctype, f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise encode_error(ctype, f"{what} {value} is outside [{low}, {high}]")
    return value


def describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
