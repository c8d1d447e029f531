# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Change-log rows straight into PostgreSQL's binary COPY format.

asyncpg's ``copy_records_to_table`` takes one tuple of Python objects per row (a ``UUID``, a
``datetime`` for ``change_time``) and encodes each field through its codecs: a few microseconds per
row, more than the rest of a change-log row's rendering. The change log's columns are fixed
(``cdcfast.sinks.postgres.CHANGE_COLUMNS``), so a row is written here in one pass from the values
the writers have anyway, into the bytes ``copy_to_table(..., format="binary")`` sends.

It stores what asyncpg stores from :func:`cdcfast.sinks.postgres.change_record` (checked on a
real server by tests/sinks/test_pgcopy.py) and more: ``change_time`` is the write timestamp as
``timestamptz`` from PostgreSQL's first moment (4714-11-24 BC) to TimescaleDB's last (294247-01-01,
a week before the last 64-bit microsecond), where Python's ``datetime`` covers years 1 to 9999 and
Cassandra takes any 64-bit timestamp; one outside is stored as the nearer end (``ts`` keeps the
exact value).

Layout (PostgreSQL docs, "COPY", binary format): a header, then per row the field count (int16)
and per field its length (int32, -1 for NULL) and its bytes, all big-endian; a trailer (-1, int16).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport INT64_MAX, INT64_MIN, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # signature, flags, extension
COPY_TRAILER = b"\xff\xff"

cdef int64_t PG_EPOCH_US = 946684800000000  # 2000-01-01 (PostgreSQL's epoch) since 1970, microseconds
cdef int64_t CHANGE_TIME_MIN_US = -210866803200000000  # 4714-11-24T00:00:00 BC (PostgreSQL's first) since 1970
cdef int64_t CHANGE_TIME_MAX_US = 9223371331199999999  # 294247-01-01T23:59:59.999999 (TimescaleDB's last)

cdef enum:
    FIELDS = 11  # CHANGE_COLUMNS


cdef inline char* put16(char* p, int16_t v) noexcept:
    p[0] = <char>((v >> 8) & 0xFF)
    p[1] = <char>(v & 0xFF)
    return p + 2


cdef inline char* put32(char* p, int32_t v) noexcept:
    cdef uint8_t* u = <uint8_t*>p
    u[0] = (v >> 24) & 0xFF
    u[1] = (v >> 16) & 0xFF
    u[2] = (v >> 8) & 0xFF
    u[3] = v & 0xFF
    return p + 4


cdef inline char* put64(char* p, int64_t v) noexcept:
    cdef int i
    cdef uint8_t* u = <uint8_t*>p
    for i in range(8):
        u[i] = (v >> (56 - 8 * i)) & 0xFF
    return p + 8


cdef inline char* put_bytes(char* p, const char* data, Py_ssize_t n) noexcept:
    p = put32(p, <int32_t>n)
    memcpy(p, data, n)
    return p + n


cdef inline char* put_jsonb(char* p, object data):
    """jsonb's binary form: a version byte (1), then the JSON text; None is NULL."""
    cdef Py_ssize_t n
    if data is None:
        return put32(p, -1)
    n = PyBytes_GET_SIZE(data)
    p = put32(p, <int32_t>(n + 1))
    p[0] = 1
    memcpy(p + 1, PyBytes_AS_STRING(data), n)
    return p + 1 + n


cdef inline Py_ssize_t jsonb_size(object data):
    return 4 if data is None else 5 + PyBytes_GET_SIZE(<bytes?>data)


def change_row_copy(
    bytes event_id,
    str op,
    object ts,
    object segment_id,
    object position,
    str source,
    bytes key,
    object cells,
    object deletion_ts,
    object range_,
) -> bytes:
    """One change-log row (the arguments of ``change_record``, JSON as UTF-8 bytes) in binary COPY
    form, for the columns ``CHANGE_COLUMNS`` in that order."""
    cdef int64_t ts_c = ts  # OverflowError beyond 64 bits, as asyncpg's int8
    cdef int64_t segment_c = segment_id
    cdef int32_t position_c = position
    cdef int64_t deletion_c = 0
    cdef int64_t change_time
    cdef Py_ssize_t op_n, source_n, size
    cdef const char* op_p
    cdef const char* source_p
    if PyBytes_GET_SIZE(event_id) != 16:
        raise ValueError(f"an event id has 16 bytes, not {PyBytes_GET_SIZE(event_id)}")
    change_time = min(max(ts_c, CHANGE_TIME_MIN_US), CHANGE_TIME_MAX_US) - PG_EPOCH_US
    if deletion_ts is not None:
        deletion_c = deletion_ts
    op_p = PyUnicode_AsUTF8AndSize(op, &op_n)
    source_p = PyUnicode_AsUTF8AndSize(source, &source_n)
    size = (
        2 + (4 + 16) + (4 + op_n) + 12 + 12 + 12 + 8 + (4 + source_n) + jsonb_size(key) + jsonb_size(cells)
        + (4 if deletion_ts is None else 12) + jsonb_size(range_)
    )
    out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(out)
    p = put16(p, FIELDS)
    p = put_bytes(p, PyBytes_AS_STRING(event_id), 16)
    p = put_bytes(p, op_p, op_n)
    p = put64(put32(p, 8), ts_c)
    p = put64(put32(p, 8), change_time)
    p = put64(put32(p, 8), segment_c)
    p = put32(put32(p, 4), position_c)
    p = put_bytes(p, source_p, source_n)
    p = put_jsonb(p, key)
    p = put_jsonb(p, cells)
    if deletion_ts is None:
        p = put32(p, -1)
    else:
        p = put64(put32(p, 8), deletion_c)
    p = put_jsonb(p, range_)
    return out


# -- state rows -----------------------------------------------------------------------------------
# A current-state row holds the converted values of the table's columns (the mapping's Python
# values, what asyncpg's codecs take) and the writer's own columns. Each is written here as
# asyncpg's binary codec for the column's SQL type writes it; a value of any other Python type
# raises Unencodable, and the writer then lets asyncpg encode that row and the batch's later ones.

class Unencodable(Exception):
    """A state value this encoder does not write (asyncpg encodes its row and the batch's later ones)."""


cdef enum:
    S_TEXT = 1
    S_INT2 = 2
    S_INT4 = 3
    S_INT8 = 4
    S_FLOAT8 = 5
    S_FLOAT4 = 6
    S_BOOL = 7
    S_UUID = 8
    S_BYTEA = 9
    S_TIMESTAMPTZ = 10
    S_DATE = 11
    S_JSONB = 12
    S_NUMERIC = 13
    S_INET = 15
    S_ARRAY = 0x40  # flag: a one-dimensional array of the kind in the low bits

# The element type of each array kind, as asyncpg writes it (the column's element type).
cdef dict ARRAY_ELEMENT_OIDS = {
    S_TEXT: 25,
    S_INT2: 21,
    S_INT4: 23,
    S_INT8: 20,
    S_FLOAT8: 701,
    S_FLOAT4: 700,
    S_BOOL: 16,
    S_UUID: 2950,
    S_BYTEA: 17,
    S_TIMESTAMPTZ: 1184,
    S_DATE: 1082,
    S_INET: 869,
}

STATE_SQL = {
    "text": S_TEXT,
    "smallint": S_INT2,
    "integer": S_INT4,
    "bigint": S_INT8,
    "double precision": S_FLOAT8,
    "real": S_FLOAT4,
    "boolean": S_BOOL,
    "uuid": S_UUID,
    "bytea": S_BYTEA,
    "timestamptz": S_TIMESTAMPTZ,
    "timestamp with time zone": S_TIMESTAMPTZ,
    "date": S_DATE,
    "jsonb": S_JSONB,
    "numeric": S_NUMERIC,
    "inet": S_INET,
}
STATE_SQL.update({
    sql + "[]": S_ARRAY | kind for sql, kind in list(STATE_SQL.items()) if kind in ARRAY_ELEMENT_OIDS
})

import datetime as _dt
import ipaddress as _ipaddress

import orjson as _orjson
import uuid as _uuid
from decimal import Decimal as _Decimal

from cpython.datetime cimport (
    PyDate_CheckExact,
    PyDateTime_CheckExact,
    PyDateTime_DATE_GET_HOUR,
    PyDateTime_DATE_GET_MICROSECOND,
    PyDateTime_DATE_GET_MINUTE,
    PyDateTime_DATE_GET_SECOND,
    PyDateTime_GET_DAY,
    PyDateTime_GET_MONTH,
    PyDateTime_GET_YEAR,
    datetime_tzinfo,
    import_datetime,
)
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.math cimport isinf

import_datetime()
cdef object UTC = _dt.timezone.utc
cdef object UUID_TYPE = _uuid.UUID
cdef object IPV4_TYPE = _ipaddress.IPv4Address
cdef object IPV6_TYPE = _ipaddress.IPv6Address
cdef int64_t PG_EPOCH_ORDINAL = _dt.date(2000, 1, 1).toordinal()
cdef int64_t DATE_MAX_ORDINAL = _dt.date.max.toordinal()  # asyncpg: infinity
cdef int64_t DATE_MIN_ORDINAL = _dt.date.min.toordinal()  # asyncpg: -infinity
cdef int64_t TS_INFINITY_US = 252455615999999999  # 9999-12-31T23:59:59.999999 since 2000: asyncpg's infinity
cdef int64_t TS_NEG_INFINITY_US = -63082281600000000  # 0001-01-01T00:00:00 since 2000: asyncpg's -infinity


def state_kinds(sqls) -> bytes | None:
    """The encoders of a state table's columns by their SQL types (``format_type`` spelling), or
    None when one has none here."""
    out = []
    for sql in sqls:
        kind = STATE_SQL.get(sql.strip().lower())
        if kind is None:
            return None
        out.append(kind)
    return bytes(out)


cdef inline int64_t ordinal(int y, int m, int d) noexcept:
    """Proleptic Gregorian ordinal, 0001-01-01 = 1 (``date.toordinal``)."""
    cdef int64_t yy = y - 1
    cdef int64_t days_before_month
    cdef int[13] cumulative = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
    days_before_month = cumulative[m]
    if m > 2 and (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
        days_before_month += 1
    return yy * 365 + yy // 4 - yy // 100 + yy // 400 + days_before_month + d


cdef Py_ssize_t value_size(uint8_t kind, object value) except -2:
    """Bytes of the field's data (-1: NULL); raises Unencodable for a value this encoder does not write."""
    cdef Py_ssize_t n
    if value is None:
        return -1
    if kind == S_TEXT:
        if type(value) is not str:
            raise Unencodable()
        PyUnicode_AsUTF8AndSize(value, &n)
        return n
    if kind == S_JSONB:
        if type(value) is str:
            PyUnicode_AsUTF8AndSize(value, &n)
            return n + 1
        if type(value) is bytes:
            return PyBytes_GET_SIZE(value) + 1
        raise Unencodable()
    if kind == S_INT2 or kind == S_INT4 or kind == S_INT8:
        if type(value) is not int:
            raise Unencodable()
        if kind == S_INT2:
            if not -32768 <= value <= 32767:
                raise Unencodable()
            return 2
        if kind == S_INT4:
            if not -2147483648 <= value <= 2147483647:
                raise Unencodable()
            return 4
        if not -9223372036854775808 <= value <= 9223372036854775807:
            raise Unencodable()
        return 8
    if kind == S_FLOAT8 or kind == S_FLOAT4:
        if type(value) is not float:
            raise Unencodable()
        if kind == S_FLOAT4 and isinf(<float>PyFloat_AS_DOUBLE(value)) and not isinf(PyFloat_AS_DOUBLE(value)):
            raise Unencodable()  # beyond float32 (asyncpg refuses it)
        return 8 if kind == S_FLOAT8 else 4
    if kind == S_BOOL:
        if type(value) is not bool:
            raise Unencodable()
        return 1
    if kind == S_UUID:
        if type(value) is not UUID_TYPE:
            raise Unencodable()
        return 16
    if kind == S_BYTEA:
        if type(value) is not bytes:
            raise Unencodable()
        return PyBytes_GET_SIZE(value)
    if kind == S_TIMESTAMPTZ:
        if not PyDateTime_CheckExact(value) or datetime_tzinfo(value) is not UTC:
            raise Unencodable()
        return 8
    if kind == S_DATE:
        if not PyDate_CheckExact(value):
            raise Unencodable()
        return 4
    if kind == S_INET:
        if type(value) is IPV4_TYPE:
            return 8
        if type(value) is IPV6_TYPE:
            return 20
        raise Unencodable()  # networks and interfaces: asyncpg
    raise Unencodable()


cdef char* put_value(char* p, uint8_t kind, object value, Py_ssize_t n):
    cdef const char* text
    cdef double d
    cdef float f
    cdef int64_t days, us
    cdef uint64_t bits64
    cdef uint32_t bits32
    if n < 0:
        return put32(p, -1)
    p = put32(p, <int32_t>n)
    if kind == S_TEXT:
        text = PyUnicode_AsUTF8AndSize(value, &n)
        memcpy(p, text, n)
        return p + n
    if kind == S_JSONB:
        p[0] = 1
        if type(value) is str:
            text = PyUnicode_AsUTF8AndSize(value, &n)
        else:
            text = PyBytes_AS_STRING(value)
            n = PyBytes_GET_SIZE(value)
        memcpy(p + 1, text, n)
        return p + 1 + n
    if kind == S_INT2:
        return put16(p, <int16_t>(<int64_t>value))
    if kind == S_INT4:
        return put32(p, <int32_t>(<int64_t>value))
    if kind == S_INT8:
        return put64(p, <int64_t>value)
    if kind == S_FLOAT8:
        d = PyFloat_AS_DOUBLE(value)
        memcpy(&bits64, &d, 8)
        return put64(p, <int64_t>bits64)
    if kind == S_FLOAT4:
        f = <float>PyFloat_AS_DOUBLE(value)
        memcpy(&bits32, &f, 4)
        return put32(p, <int32_t>bits32)
    if kind == S_BOOL:
        p[0] = 1 if value is True else 0
        return p + 1
    if kind == S_UUID:
        memcpy(p, PyBytes_AS_STRING(value.bytes), 16)
        return p + 16
    if kind == S_BYTEA:
        memcpy(p, PyBytes_AS_STRING(value), n)
        return p + n
    if kind == S_INET:
        # inet's binary form as asyncpg writes an address: family (PGSQL_AF_INET 2, PGSQL_AF_INET6
        # 3), prefix bits (the whole address), not a CIDR, the address' length, its bytes
        packed = value.packed
        p[0] = 2 if n == 8 else 3
        p[1] = <char>(32 if n == 8 else 128)
        p[2] = 0
        p[3] = <char>(n - 4)
        memcpy(p + 4, PyBytes_AS_STRING(packed), n - 4)
        return p + n
    if kind == S_TIMESTAMPTZ:
        days = ordinal(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value), PyDateTime_GET_DAY(value))
        us = (
            (days - PG_EPOCH_ORDINAL) * 86400000000
            + (PyDateTime_DATE_GET_HOUR(value) * 3600 + PyDateTime_DATE_GET_MINUTE(value) * 60
               + PyDateTime_DATE_GET_SECOND(value)) * <int64_t>1000000
            + PyDateTime_DATE_GET_MICROSECOND(value)
        )
        if us == TS_INFINITY_US:
            us = INT64_MAX
        elif us == TS_NEG_INFINITY_US:
            us = INT64_MIN
        return put64(p, us)
    # S_DATE
    days = ordinal(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value), PyDateTime_GET_DAY(value))
    if days == DATE_MAX_ORDINAL:
        return put32(p, 0x7FFFFFFF)
    if days == DATE_MIN_ORDINAL:
        return put32(p, <int32_t>INT32_MIN_C)
    return put32(p, <int32_t>(days - PG_EPOCH_ORDINAL))


cdef int32_t INT32_MIN_C = -2147483648


cdef enum:
    NUMERIC_POS = 0x0000
    NUMERIC_NEG = 0x4000
    NUMERIC_NAN = 0xC000
    NUMERIC_PINF = 0xD000
    NUMERIC_NINF = 0xF000
    NUMERIC_MAX_DSCALE = 0x3FFF


cdef bytes numeric_bytes(object value):
    """A ``Decimal`` in numeric's binary form (PostgreSQL's numeric_send layout: digit count,
    weight, sign, display scale, then base-10000 digits, most significant first), as asyncpg
    lays it out: the digits aligned on the decimal point, the exponent's zeros included, the
    display scale the exponent's digits after the point."""
    cdef Py_ssize_t count, ndigits, i, j, padding
    cdef int64_t exponent, dweight, weight
    cdef int sign, dscale, digit
    cdef Py_ssize_t k
    if type(value) is not _Decimal:
        raise Unencodable()
    sign_bit, digits, exp = value.as_tuple()
    if exp in ("n", "N"):
        return b"\x00\x00\x00\x00" + bytes([NUMERIC_NAN >> 8, 0]) + b"\x00\x00"
    if exp == "F":
        return b"\x00\x00\x00\x00" + bytes([(NUMERIC_NINF if sign_bit else NUMERIC_PINF) >> 8, 0]) + b"\x00\x00"
    exponent = exp
    if exponent < -NUMERIC_MAX_DSCALE:
        raise Unencodable()  # asyncpg refuses it
    count = len(digits)
    dweight = count + exponent - 1  # the power of ten of the first digit
    if dweight >= 0:
        weight = (dweight + 4) // 4 - 1
    else:
        weight = -((-dweight - 1) // 4 + 1)
    if weight > 32767:
        raise Unencodable()
    padding = (weight + 1) * 4 - (dweight + 1)  # decimal zeros before the first digit in its group
    ndigits = (count + padding + 3) // 4
    if ndigits > 32767:
        raise Unencodable()
    dscale = <int>(-exponent) if exponent < 0 else 0
    sign = NUMERIC_NEG if sign_bit else NUMERIC_POS
    out = PyBytes_FromStringAndSize(NULL, 8 + 2 * ndigits)
    cdef char* p = PyBytes_AS_STRING(out)
    p = put16(p, <int16_t>ndigits)
    p = put16(p, <int16_t>weight)
    p = put16(p, <int16_t>sign)
    p = put16(p, <int16_t>dscale)
    for i in range(ndigits):
        digit = 0
        for j in range(4):
            k = i * 4 + j - padding  # index into the Decimal's digits
            digit = digit * 10 + (<int>digits[k] if 0 <= k < count else 0)
        p = put16(p, <int16_t>digit)
    return out


cdef bytes array_bytes(uint8_t kind, object value):
    """A list of values of one element kind (None: NULL elements) in array_send's layout, as asyncpg
    writes a flat list: one dimension (also when empty), flags 0, the element type's oid, the
    length, lower bound 1, then each element as the column kind writes it (length -1 for NULL).
    Anything but a list of values of that kind (a tuple, nested lists) is Unencodable."""
    cdef uint8_t element = kind & ~S_ARRAY
    cdef Py_ssize_t size = 20, n, i, count
    cdef list items
    if type(value) is not list:
        raise Unencodable()
    items = value
    count = len(items)
    for i in range(count):
        n = value_size(element, items[i])
        size += 4 + (n if n > 0 else 0)
    out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(out)
    p = put32(p, 1)
    p = put32(p, 0)
    p = put32(p, <int32_t>ARRAY_ELEMENT_OIDS[element])
    p = put32(p, <int32_t>count)
    p = put32(p, 1)
    for i in range(count):
        p = put_value(p, element, items[i], value_size(element, items[i]))
    return out


def state_row_copy(bytes kinds, values) -> bytes:
    """One state row (``values``: a sequence, one per column, encoded by ``kinds``, see
    :func:`state_kinds`) in binary COPY form; raises :class:`Unencodable` for a value of a type
    this encoder does not write."""
    return row_copy(kinds, list(values))


cdef object dumps = _orjson.dumps
cdef object EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)  # cdcfast.sinks.postgres.EPOCH
cdef object timedelta = _dt.timedelta


def state_rows_copy(bytes kinds, plans, row_values, codec, dict memo, list rest):
    """The visible rows of ``plans`` (``PartitionPlan``s) as state rows, one at a time as a COPY takes
    them (the server stores rows while later ones are made): each the bytes :func:`state_row_copy`
    gives for ``TableWriter.state_record``'s record (the row's values by ``row_values(codec, row,
    memo)``, then its key, partition key, expiries as JSON, the time nothing keeps it any more, and
    its state). At a value this encoder does not write the rows stop: that row and every later one
    go to ``rest`` as ``(partition key bytes, key, row, state)``, for asyncpg to encode."""
    cdef list values
    cdef list visible
    cdef Py_ssize_t i
    plans = list(plans)
    for n in range(len(plans)):
        p = plans[n]
        pk_bytes = p.pk_bytes
        visible = p.visible
        for i in range(len(visible)):
            key, row, blob = visible[i]
            values = row_values(codec, row, memo)
            expires = row.expires
            row_expires = row.row_expires
            values.append(key)
            values.append(pk_bytes)
            values.append(dumps(expires) if expires else None)
            values.append(EPOCH + timedelta(seconds=row_expires) if row_expires else None)
            values.append(blob)
            try:
                encoded = row_copy(kinds, values)
            except Unencodable:
                rest.extend((pk_bytes, k, r, b) for k, r, b in visible[i:])
                rest.extend((q.pk_bytes, k, r, b) for q in plans[n + 1 :] for k, r, b in q.visible)
                return
            yield encoded


cdef bytes row_copy(bytes kinds, list row):
    """:func:`state_row_copy` of ``row``, a list of its own (the numeric and array values in it are
    replaced by their bytes)."""
    cdef Py_ssize_t count = PyBytes_GET_SIZE(kinds)
    cdef const uint8_t* k = <const uint8_t*>PyBytes_AS_STRING(kinds)
    cdef Py_ssize_t i, size = 2, n
    cdef Py_ssize_t[64] small
    cdef Py_ssize_t* sizes = small
    cdef uint8_t[64] own
    cdef uint8_t kind
    if len(row) != count:
        raise ValueError(f"a state row of {count} columns, not {len(row)}")
    if count > 64:
        raise Unencodable()  # wider tables: asyncpg
    for i in range(count):
        kind = k[i]
        if kind == S_NUMERIC or kind & S_ARRAY:  # encoded first, then copied as bytes
            if row[i] is not None:
                row[i] = numeric_bytes(row[i]) if kind == S_NUMERIC else array_bytes(kind, row[i])
            kind = S_BYTEA
        own[i] = kind
        n = value_size(kind, row[i])
        sizes[i] = n
        size += 4 + (n if n > 0 else 0)
    out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(out)
    p = put16(p, <int16_t>count)
    for i in range(count):
        p = put_value(p, own[i], row[i], sizes[i])
    return out
