"""Errors of the value codecs: each names the CQL type, the value's length and, where it helps, the offset."""

from __future__ import annotations

from cdcfast.errors import CdcfastError


def plural_bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


class ValueDecodeError(CdcfastError):
    """Bytes that are not a serialized value of the CQL type they were read as.

    ``offset`` is relative to the start of the value (``None`` when the whole value is at fault).
    Errors inside collections, tuples and UDTs wrap the element's error, so the message reads from
    the outer type down to the byte that is wrong.
    """

    def __init__(self, cql_type: str, length: int | None, reason: str, offset: int | None = None) -> None:
        what = f"{cql_type} value" if length is None else f"{cql_type} value of {plural_bytes(length)}"
        where = "" if offset is None else f" at offset {offset}"
        super().__init__(f"{what}{where}: {reason}")
        self.cql_type = cql_type
        self.length = length
        self.offset = offset
        self.reason = reason


class ValueEncodeError(CdcfastError):
    """A Python value that cannot be serialized as the CQL type asked for."""

    def __init__(self, cql_type: str, reason: str) -> None:
        super().__init__(f"cannot encode {cql_type} value: {reason}")
        self.cql_type = cql_type
        self.reason = reason
