"""Time types, kept as Cassandra's integers so nothing is lost, plus helpers to ``datetime``.

* ``timestamp``: i64 milliseconds since the Unix epoch (signed; may be far outside ``datetime``'s range).
* ``date``: u32 days with the epoch at 2^31; decoded to signed days since 1970-01-01.
* ``time``: i64 nanoseconds since midnight.
* ``duration``: :class:`Duration` from three zig-zag signed vints (months, days, nanoseconds).
"""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

import msgspec

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values.codec import Codec, decode_error, encode_error, expect_length, require_int
from cdcfast.values.errors import ValueDecodeError
from cdcfast.values.vint import encode_svint, read_svint

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
DATE_EPOCH = 2**31  # the stored u32 of 1970-01-01
NANOS_PER_DAY = 86_400 * 10**9

_UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")


class Duration(msgspec.Struct, frozen=True):
    """A CQL ``duration``. Cassandra keeps the three parts apart: a month or a day has no fixed
    length in nanoseconds. Months and days are 32-bit, nanoseconds 64-bit, all signed."""

    months: int
    days: int
    nanoseconds: int


# -- codecs -----------------------------------------------------------------------------------


def _decode_i64(ctype: CqlType, data: bytes) -> int:
    expect_length(ctype, data, 8)
    result: int = _I64.unpack(data)[0]
    return result


def _encode_i64(ctype: CqlType, value: Any) -> bytes:
    return _I64.pack(require_int(ctype, value, I64_MIN, I64_MAX))


def _decode_date(ctype: CqlType, data: bytes) -> int:
    expect_length(ctype, data, 4)
    stored: int = _U32.unpack(data)[0]
    return stored - DATE_EPOCH


def _encode_date(ctype: CqlType, value: Any) -> bytes:
    days = require_int(ctype, value, -DATE_EPOCH, DATE_EPOCH - 1, "days since 1970-01-01")
    return _U32.pack(days + DATE_EPOCH)


def _decode_duration(ctype: CqlType, data: bytes) -> Duration:
    parts: list[int] = []
    offset = 0
    for name, low, high in (
        ("months", I32_MIN, I32_MAX),
        ("days", I32_MIN, I32_MAX),
        ("nanoseconds", I64_MIN, I64_MAX),
    ):
        try:
            value, end = read_svint(data, offset)
        except ValueDecodeError as exc:
            raise decode_error(ctype, data, f"{name}: {exc.reason}", offset) from exc
        if not low <= value <= high:
            raise decode_error(ctype, data, f"{name} {value} is outside [{low}, {high}]", offset)
        parts.append(value)
        offset = end
    if offset != len(data):
        raise decode_error(ctype, data, f"{len(data) - offset} trailing bytes after the nanoseconds", offset)
    return Duration(*parts)


def _encode_duration(ctype: CqlType, value: Any) -> bytes:
    # Cassandra refuses durations whose parts have different signs when it builds them from CQL;
    # the serializer does not check, and neither does this encoder.
    if not isinstance(value, Duration):
        raise encode_error(ctype, f"expected a Duration, got {type(value).__name__}")
    months = require_int(ctype, value.months, I32_MIN, I32_MAX, "months")
    days = require_int(ctype, value.days, I32_MIN, I32_MAX, "days")
    nanos = require_int(ctype, value.nanoseconds, I64_MIN, I64_MAX, "nanoseconds")
    return encode_svint(months) + encode_svint(days) + encode_svint(nanos)


CODECS: dict[str, Codec] = {
    "timestamp": Codec(_decode_i64, _encode_i64),
    "date": Codec(_decode_date, _encode_date),
    "time": Codec(_decode_i64, _encode_i64),  # not range-checked: 0 <= v < 86400e9 is Cassandra's rule
    "duration": Codec(_decode_duration, _encode_duration),
}


# -- helpers ----------------------------------------------------------------------------------


def millis_to_datetime(millis: int) -> dt.datetime | None:
    """A ``timestamp`` as an aware UTC datetime, or ``None`` outside years 1..9999."""
    try:
        return _UTC_EPOCH + dt.timedelta(milliseconds=millis)
    except OverflowError:
        return None


def datetime_to_millis(when: dt.datetime) -> int:
    """Milliseconds since the epoch (naive datetimes are UTC), rounded down like Java's ``toEpochMilli``."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    delta = when - _UTC_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def days_to_date(days: int) -> dt.date | None:
    """A ``date`` (days since 1970-01-01) as a ``datetime.date``, or ``None`` outside years 1..9999."""
    ordinal = _EPOCH_ORDINAL + days
    if not 1 <= ordinal <= dt.date.max.toordinal():
        return None
    return dt.date.fromordinal(ordinal)


def date_to_days(day: dt.date) -> int:
    return day.toordinal() - _EPOCH_ORDINAL


def nanos_to_time(nanos: int) -> dt.time | None:
    """A ``time`` as ``datetime.time``, truncated to microseconds; ``None`` outside one day."""
    if not 0 <= nanos < NANOS_PER_DAY:
        return None
    micros = nanos // 1000
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return dt.time(hour, minute, second, micro)


def time_to_nanos(when: dt.time) -> int:
    return ((when.hour * 60 + when.minute) * 60 + when.second) * 1_000_000_000 + when.microsecond * 1000
