"""CQL value codecs: serialized bytes (as in commit log cells, clustering values, partition keys and
cell paths) to Python values, and back.

=====================  =====================================================================
CQL type               Python value from :func:`decode`
=====================  =====================================================================
ascii, text, varchar   ``str``
blob, custom types     ``bytes`` (custom types are not interpreted)
boolean                ``bool``
tinyint ... bigint     ``int``
float, double          ``float`` (bit patterns kept: ``-0.0``, infinities, NaN)
varint                 ``int`` (any size)
decimal                ``decimal.Decimal``, exact, scale kept
timestamp              ``int`` milliseconds since the epoch (see ``temporal.millis_to_datetime``)
date                   ``int`` days since 1970-01-01 (see ``temporal.days_to_date``)
time                   ``int`` nanoseconds since midnight (see ``temporal.nanos_to_time``)
duration               :class:`Duration` (months, days, nanoseconds)
uuid, timeuuid         ``uuid.UUID``
inet                   ``ipaddress.IPv4Address`` / ``IPv6Address``
counter                :class:`CounterContext` (the shards; ``total()`` sums them)
list, set              ``list`` (sets in stored, comparator order)
map                    ``list`` of ``(key, value)`` tuples, in stored order
tuple                  ``tuple``; null and missing trailing fields are ``None``
UDT                    ``dict`` field -> value; null and missing trailing fields are ``None``
vector<T, n>           ``list`` of n values
=====================  =====================================================================

A zero-length value of any other type decodes to :data:`EMPTY` (Cassandra's "empty" value, which is
not null). One module per type family holds the codecs; ``registry.CODECS`` maps a type kind to its
:class:`~cdcfast.values.codec.Codec`. Errors are :class:`ValueDecodeError` / :class:`ValueEncodeError`
(both :class:`~cdcfast.errors.CdcfastError`), naming the CQL type, the length and the offset.
"""

from __future__ import annotations

from cdcfast.values.cells import decode_cell_path, decode_cell_value, udt_field_index
from cdcfast.values.codec import EMPTY, Empty
from cdcfast.values.counter import CounterContext, CounterShard
from cdcfast.values.errors import ValueDecodeError, ValueEncodeError
from cdcfast.values.registry import decode, encode
from cdcfast.values.temporal import (
    Duration,
    date_to_days,
    datetime_to_millis,
    days_to_date,
    millis_to_datetime,
    nanos_to_time,
    time_to_nanos,
)

__all__ = [
    "EMPTY",
    "CounterContext",
    "CounterShard",
    "Duration",
    "Empty",
    "ValueDecodeError",
    "ValueEncodeError",
    "date_to_days",
    "datetime_to_millis",
    "days_to_date",
    "decode",
    "decode_cell_path",
    "decode_cell_value",
    "encode",
    "millis_to_datetime",
    "nanos_to_time",
    "time_to_nanos",
    "udt_field_index",
]
