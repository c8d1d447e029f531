"""Fixed-width numbers, boolean, text, blob, custom types and EmptyType (format reference §6.1)."""

from __future__ import annotations

import struct
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values.codec import Codec, decode_error, describe, encode_error, expect_length, require_int


def _integer(fmt: str, bits: int) -> Codec:
    packer = struct.Struct(fmt)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def decode(ctype: CqlType, data: bytes) -> int:
        expect_length(ctype, data, packer.size)
        result: int = packer.unpack(data)[0]
        return result

    def encode(ctype: CqlType, value: Any) -> bytes:
        return packer.pack(require_int(ctype, value, low, high))

    return Codec(decode, encode)


def _floating(fmt: str) -> Codec:
    """IEEE-754, big-endian. Bit patterns are kept (``-0.0``, infinities, NaN payloads); a ``float``
    value goes through a C float, so a signalling NaN comes back quiet."""
    packer = struct.Struct(fmt)

    def decode(ctype: CqlType, data: bytes) -> float:
        expect_length(ctype, data, packer.size)
        result: float = packer.unpack(data)[0]
        return result

    def encode(ctype: CqlType, value: Any) -> bytes:
        if isinstance(value, bool) or not isinstance(value, float | int):
            raise encode_error(ctype, f"expected a float, got {type(value).__name__}")
        try:
            return packer.pack(value)
        except (OverflowError, struct.error) as exc:
            raise encode_error(ctype, f"{describe(value)} is out of range ({exc})") from exc

    return Codec(decode, encode)


def _decode_boolean(ctype: CqlType, data: bytes) -> bool:
    expect_length(ctype, data, 1)
    return data[0] != 0  # Cassandra: 0x00 is false, anything else true


def _encode_boolean(ctype: CqlType, value: Any) -> bytes:
    if not isinstance(value, bool):
        raise encode_error(ctype, f"expected a bool, got {type(value).__name__}")
    return b"\x01" if value else b"\x00"


def _decode_text(ctype: CqlType, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise decode_error(ctype, data, f"not valid UTF-8 ({exc.reason})", exc.start) from exc


def _encode_text(ctype: CqlType, value: Any) -> bytes:
    if not isinstance(value, str):
        raise encode_error(ctype, f"expected a str, got {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise encode_error(ctype, f"not encodable as UTF-8 ({exc.reason} at character {exc.start})") from exc


def _decode_ascii(ctype: CqlType, data: bytes) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise decode_error(ctype, data, f"byte 0x{data[exc.start]:02x} is not US-ASCII", exc.start) from exc


def _encode_ascii(ctype: CqlType, value: Any) -> bytes:
    if not isinstance(value, str):
        raise encode_error(ctype, f"expected a str, got {type(value).__name__}")
    try:
        return value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise encode_error(ctype, f"character {exc.start} ({value[exc.start]!r}) is not US-ASCII") from exc


def _decode_blob(ctype: CqlType, data: bytes) -> bytes:
    return data


def _encode_blob(ctype: CqlType, value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise encode_error(ctype, f"expected bytes, got {type(value).__name__}")
    return bytes(value)


def _decode_empty(ctype: CqlType, data: bytes) -> None:
    raise decode_error(ctype, data, "EmptyType values have no bytes")


def _encode_empty(ctype: CqlType, value: Any) -> bytes:
    raise encode_error(ctype, f"EmptyType only has the value EMPTY, not {describe(value)}")


CODECS: dict[str, Codec] = {
    "boolean": Codec(_decode_boolean, _encode_boolean),
    "tinyint": _integer(">b", 8),
    "smallint": _integer(">h", 16),
    "int": _integer(">i", 32),
    "bigint": _integer(">q", 64),
    "float": _floating(">f"),
    "double": _floating(">d"),
    "ascii": Codec(_decode_ascii, _encode_ascii, empty_is_value=True),
    "text": Codec(_decode_text, _encode_text, empty_is_value=True),
    "blob": Codec(_decode_blob, _encode_blob, empty_is_value=True),
    # Custom (quoted Java class) types: their bytes, untouched.
    "custom": Codec(_decode_blob, _encode_blob, empty_is_value=True),
    "empty": Codec(_decode_empty, _encode_empty),
}
