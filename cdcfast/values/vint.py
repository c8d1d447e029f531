"""Cassandra's variable-length integers (format reference §5). **Not** LEB128.

Unsigned vint: the number of leading one-bits of the first byte is the number of extra bytes
(0 to 8); the first byte's remaining low bits are the value's most significant bits and the extra
bytes follow big-endian. ``0xFF`` is followed by the full 8-byte value. Signed vints are zig-zag
encoded first; they only occur inside ``duration`` values. Decoders accept non-minimal encodings,
as Cassandra's do; encoders always write the shortest.
"""

from __future__ import annotations

from cdcfast.values.errors import ValueDecodeError, ValueEncodeError

U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def uvint_size(value: int) -> int:
    """Bytes of the shortest encoding: ``9 - ((nlz64(v | 1) - 1) / 7)`` with Java's truncating division."""
    leading_zeros = 64 - (value | 1).bit_length()
    return 9 if leading_zeros == 0 else 9 - (leading_zeros - 1) // 7


def encode_uvint(value: int) -> bytes:
    """Encode ``0 <= value < 2**64``. Callers holding a signed Java long mask it with ``U64_MAX``."""
    if not 0 <= value <= U64_MAX:
        raise ValueEncodeError("uvint", f"{value} is outside [0, 2**64 - 1]")
    size = uvint_size(value)
    if size == 9:
        return b"\xff" + value.to_bytes(8, "big")
    raw = bytearray(value.to_bytes(size, "big"))
    raw[0] |= (0xFF << (9 - size)) & 0xFF  # size - 1 leading one-bits, then a zero bit
    return bytes(raw)


def read_uvint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode the unsigned vint at ``offset``; return ``(value, offset just past it)``."""
    if offset >= len(data):
        raise ValueDecodeError("uvint", len(data), "needs at least 1 byte, none remain", offset)
    first = data[offset]
    extra = 8 - (~first & 0xFF).bit_length()  # leading one-bits
    if extra == 0:
        return first, offset + 1
    end = offset + 1 + extra
    if end > len(data):
        remain = len(data) - offset - 1
        raise ValueDecodeError(
            "uvint", len(data), f"a {1 + extra}-byte vint needs {extra} more bytes, only {remain} remain", offset
        )
    value = first & (0xFF >> extra)
    return (value << (8 * extra)) | int.from_bytes(data[offset + 1 : end], "big"), end


def zigzag_encode(value: int) -> int:
    """Signed 64-bit -> unsigned 64-bit: ``(n << 1) ^ (n >> 63)``."""
    if not I64_MIN <= value <= I64_MAX:
        raise ValueEncodeError("svint", f"{value} is outside the signed 64-bit range")
    return ((value << 1) ^ (value >> 63)) & U64_MAX


def zigzag_decode(value: int) -> int:
    """Unsigned 64-bit -> signed 64-bit: ``(u >>> 1) ^ -(u & 1)``."""
    return (value >> 1) ^ -(value & 1)


def encode_svint(value: int) -> bytes:
    return encode_uvint(zigzag_encode(value))


def read_svint(data: bytes, offset: int = 0) -> tuple[int, int]:
    raw, end = read_uvint(data, offset)
    return zigzag_decode(raw), end
