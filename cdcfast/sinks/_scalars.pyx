# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""PostgreSQL target values of the common scalar columns, converted from their bytes in one call.

``ColumnCodec.to_target`` goes through five Python frames per value (the column's error locator,
``fast_target``, the decoder, the mapping's NULL check and its converter): about a seventh of a
PostgreSQL writer's CPU, since every key value and every written cell is converted once per batch
(screening, then the state rows). :class:`ScalarTarget` does the same for the default PostgreSQL
rules of the scalar types (``config/schema-mappings.yaml``: ``text``, ``integer``, ``same``,
``timestamptz``, ``date``), giving the very value the rule's converter gives, and hands anything
else (a wrong length, an EMPTY value, bad UTF-8, U+0000 in text, an integer, date or timestamp
outside what the column takes) to the Python path, which converts or raises as before.
``tests/sinks/test_encode.py`` checks both agree on every corpus value and on odd bytes.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.datetime cimport import_datetime, timedelta_new
from cpython.float cimport PyFloat_FromDouble
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from cdcfast.sinks._bigendian cimport be_int
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

import datetime as dt
import uuid

from cdcfast.transform.typemap import PG_DAYS, PG_MILLIS

cdef enum:
    TEXT = 1
    ASCII = 2
    INTEGER = 3
    DOUBLE = 4
    FLOAT = 5
    BOOLEAN = 6
    UUID = 7
    BYTES = 8
    TIMESTAMPTZ = 9
    DATE = 10

cdef dict INTEGER_SIZES = {"tinyint": 1, "smallint": 2, "int": 4, "bigint": 8}
cdef dict PG_INTEGER_BITS = {"smallint": 16, "int2": 16, "integer": 32, "int": 32, "int4": 32, "bigint": 64, "int8": 64}
cdef object UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
cdef object fromordinal = dt.date.fromordinal
cdef int64_t EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
cdef int64_t MILLIS_LOW = PG_MILLIS[0], MILLIS_HIGH = PG_MILLIS[1]
cdef int64_t DAYS_LOW = PG_DAYS[0], DAYS_HIGH = PG_DAYS[1]
cdef object UUID_TYPE = uuid.UUID
import_datetime()


def scalar_kind(str target, str converter, str cql_kind, str sql):
    """How :class:`ScalarTarget` converts a ``cql_kind`` column under this mapping rule, or 0 when
    it does not (the Python path then converts every value)."""
    if target not in ("postgres", "timescaledb"):
        return 0
    if converter == "text":
        return TEXT if cql_kind == "text" else ASCII if cql_kind == "ascii" else 0
    if converter == "integer" and cql_kind in INTEGER_SIZES:
        bits = PG_INTEGER_BITS.get(sql.strip().lower())
        return INTEGER if bits is not None and bits >= 8 * INTEGER_SIZES[cql_kind] else 0
    if converter == "same":
        return {"double": DOUBLE, "float": FLOAT, "boolean": BOOLEAN, "uuid": UUID, "timeuuid": UUID}.get(cql_kind, 0)
    if converter == "bytes" and cql_kind == "blob":
        return BYTES
    if converter == "timestamptz" and cql_kind == "timestamp":
        return TIMESTAMPTZ
    if converter == "date" and cql_kind == "date":
        return DATE
    return 0


cdef class ScalarTarget:
    """``to_target(raw)`` of one column (see the module docstring); ``slow`` is the Python path."""

    cdef int kind
    cdef Py_ssize_t size  # integers: the CQL value's bytes
    cdef object slow

    def __init__(self, int kind, str cql_kind, slow):
        self.kind = kind
        self.size = INTEGER_SIZES.get(cql_kind, 0)
        self.slow = slow

    @cython.cdivision(False)
    def __call__(self, raw):
        cdef int64_t days, rest
        cdef const uint8_t* p
        cdef Py_ssize_t n
        cdef int64_t v
        cdef double d
        cdef float f
        cdef uint64_t u64
        cdef uint32_t u32
        cdef int kind = self.kind
        if type(raw) is not bytes:
            return self.slow(raw)
        p = <const uint8_t*>PyBytes_AS_STRING(raw)
        n = PyBytes_GET_SIZE(raw)
        if kind == TEXT or kind == ASCII:
            if memchr(p, 0, n) is NULL:  # U+0000: refused, by the Python path
                try:
                    if kind == TEXT:
                        return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)
                    return PyUnicode_DecodeASCII(<const char*>p, n, NULL)
                except UnicodeDecodeError:
                    pass
        elif kind == INTEGER:
            if n == self.size:  # the column's SQL type holds every value of this size
                return be_int(p, n)
        elif kind == DOUBLE:
            if n == 8:
                u64 = <uint64_t>be_int(p, 8)
                memcpy(&d, &u64, 8)
                return PyFloat_FromDouble(d)
        elif kind == FLOAT:
            if n == 4:
                u32 = <uint32_t>be_int(p, 4)
                memcpy(&f, &u32, 4)
                return PyFloat_FromDouble(f)
        elif kind == BOOLEAN:
            if n == 1:
                return p[0] != 0
        elif kind == UUID:
            if n == 16:
                return UUID_TYPE(bytes=raw)
        elif kind == BYTES:
            return raw
        elif kind == TIMESTAMPTZ:
            if n == 8:
                v = be_int(p, 8)
                if MILLIS_LOW <= v <= MILLIS_HIGH:  # UTC_EPOCH + timedelta(milliseconds=v), as millis_to_datetime
                    days = v // 86400000  # Python's floor division (cdivision off for this method)
                    rest = v - days * 86400000
                    return UTC_EPOCH + timedelta_new(<int>days, <int>(rest // 1000), <int>((rest % 1000) * 1000))
        elif kind == DATE:
            if n == 4:
                v = <int64_t>(<uint32_t>be_int(p, 4)) - 2147483648
                if DAYS_LOW <= v <= DAYS_HIGH:
                    return fromordinal(EPOCH_ORDINAL + v)
        return self.slow(raw)


cdef object MISSING = object()


def row_values(codec, row, dict memo):
    """``TableCodec.row_values(row, converted)`` (``memo``: ``converted.values``), compiled: a visible
    row's values as the sink's columns store them, key columns then data columns, each converted
    once per batch. The state rows' hot loop: one call per row instead of a Python loop over the
    columns."""
    cdef list out = []
    cdef list codecs
    cdef Py_ssize_t i, n
    cdef dict seen
    codecs = codec.partition_key
    keys = row.partition_key
    n = min(len(codecs), len(keys))
    for i in range(n):
        c = codecs[i]
        raw = keys[i]
        seen = memo[c.name]
        value = seen.get(raw, MISSING)
        if value is MISSING:
            value = seen[raw] = c.to_target(raw)
        out.append(value)
    codecs = codec.clustering
    clustering = row.clustering
    for i in range(len(codecs)):
        c = codecs[i]
        if not clustering:  # a static row: no clustering values
            out.append(c.null)
            continue
        if i >= len(clustering):
            break
        raw = clustering[i]
        if raw is None:
            out.append(c.null)
            continue
        seen = memo[c.name]
        value = seen.get(raw, MISSING)
        if value is MISSING:
            value = seen[raw] = c.to_target(raw)
        out.append(value)
    shown_values = row.values
    for c in codec.data:
        shown = shown_values.get(c.name)
        if shown is None:
            out.append(c.null)
        elif c.counter:
            out.append(shown)  # the counter's total, already summed over shards
        elif c.complex:
            # Converted once per batch: a partition's static change rewrites each of its rows, and
            # with them the same elements again.
            elements = tuple(shown)
            seen = memo[c.name]
            value = seen.get(elements, MISSING)
            if value is MISSING:
                value = seen[elements] = c.elements_target(shown)
            out.append(value)
        else:
            seen = memo[c.name]
            value = seen.get(shown, MISSING)
            if value is MISSING:
                value = seen[shown] = c.to_target(shown)
            out.append(value)
    return out
