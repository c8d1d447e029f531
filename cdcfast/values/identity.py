"""Identifiers: ``uuid``, ``timeuuid`` (uuid.UUID) and ``inet`` (ipaddress.IPv4Address/IPv6Address)."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values.codec import Codec, decode_error, encode_error, expect_length


def _decode_uuid(ctype: CqlType, data: bytes) -> uuid.UUID:
    # The decoder does not check the version of a timeuuid: the bytes are what Cassandra stored.
    expect_length(ctype, data, 16)
    return uuid.UUID(bytes=data)


def _encode_uuid(ctype: CqlType, value: Any) -> bytes:
    if not isinstance(value, uuid.UUID):
        raise encode_error(ctype, f"expected a uuid.UUID, got {type(value).__name__}")
    raw = value.bytes
    if ctype.kind == "timeuuid" and raw[6] >> 4 != 1:
        # Cassandra's TimeUUIDType validation looks at the version nibble only.
        raise encode_error(ctype, f"{value} is a version {raw[6] >> 4} UUID, not a version 1 (time-based) one")
    return raw


def _decode_inet(ctype: CqlType, data: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # 16 bytes are always an IPv6Address, IPv4-mapped ones (::ffff:a.b.c.d) included.
    if len(data) == 4:
        return ipaddress.IPv4Address(data)
    if len(data) == 16:
        return ipaddress.IPv6Address(data)
    raise decode_error(ctype, data, "expected 4 (IPv4) or 16 (IPv6) bytes")


def _encode_inet(ctype: CqlType, value: Any) -> bytes:
    if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise encode_error(ctype, f"expected an ipaddress.IPv4Address or IPv6Address, got {type(value).__name__}")
    return value.packed


CODECS: dict[str, Codec] = {
    "uuid": Codec(_decode_uuid, _encode_uuid),
    "timeuuid": Codec(_decode_uuid, _encode_uuid),
    "inet": Codec(_decode_inet, _encode_inet),
}
