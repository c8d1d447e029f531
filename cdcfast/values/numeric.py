"""Arbitrary-precision numbers: ``varint`` (int) and ``decimal`` (decimal.Decimal, exact)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values.codec import Codec, decode_error, encode_error, require_int

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def varint_bytes(value: int) -> bytes:
    """Minimal two's complement, big-endian: Java's ``BigInteger.toByteArray``."""
    magnitude = value if value >= 0 else ~value
    return value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)


def _decode_varint(ctype: CqlType, data: bytes) -> int:
    # Any length is accepted, including non-minimal encodings.
    return int.from_bytes(data, "big", signed=True)


def _encode_varint(ctype: CqlType, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise encode_error(ctype, f"expected an int, got {type(value).__name__}")
    return varint_bytes(value)


def _decode_decimal(ctype: CqlType, data: bytes) -> Decimal:
    """i32 scale, then the unscaled value as a varint: value = unscaled × 10^-scale.

    Built from its digits, never through a context, so no precision is lost and the scale is kept
    (``0.000`` stays ``Decimal('0.000')``).
    """
    if len(data) < 5:
        raise decode_error(ctype, data, "needs a 4-byte scale and at least 1 byte of unscaled value")
    scale = int.from_bytes(data[:4], "big", signed=True)
    unscaled = int.from_bytes(data[4:], "big", signed=True)
    digits = Decimal(abs(unscaled)).as_tuple().digits  # exact, and not limited to 4300 digits like str()
    return Decimal((1 if unscaled < 0 else 0, digits, -scale))


def _encode_decimal(ctype: CqlType, value: Any) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise encode_error(ctype, f"expected a decimal.Decimal or int, got {type(value).__name__}")
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise encode_error(ctype, f"{value} has no CQL representation")
    scale = require_int(ctype, -exponent, I32_MIN, I32_MAX, "scale")
    unscaled = int(Decimal((sign, digits, 0)))
    return scale.to_bytes(4, "big", signed=True) + varint_bytes(unscaled)


CODECS: dict[str, Codec] = {
    "varint": Codec(_decode_varint, _encode_varint),
    "decimal": Codec(_decode_decimal, _encode_decimal),
}
