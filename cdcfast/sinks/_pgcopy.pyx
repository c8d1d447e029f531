# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Change-log rows straight into PostgreSQL's binary COPY format.

asyncpg's ``copy_records_to_table`` takes one tuple of Python objects per row (a ``UUID``, a
``datetime`` for ``change_time``) and encodes each field through its codecs: a few microseconds per
row, more than the rest of a change-log row's rendering. The change log's columns are fixed
(``cdcfast.sinks.postgres.CHANGE_COLUMNS``), so a row is written here in one pass from the values
the writers have anyway, into the bytes ``copy_to_table(..., format="binary")`` sends.

It stores exactly what asyncpg stores from :func:`cdcfast.sinks.postgres.change_record` (checked
on a real server by tests/sinks/test_pgcopy.py), including its edges: ``change_time`` is the write
timestamp as ``timestamptz``; a timestamp outside Python's ``datetime`` range is refused with
``OverflowError`` as ``change_record`` refuses it, and the range's two ends become ``-infinity`` /
``infinity`` as asyncpg writes ``datetime.min`` / ``datetime.max``.

Layout (PostgreSQL docs, "COPY", binary format): a header, then per row the field count (int16)
and per field its length (int32, -1 for NULL) and its bytes, all big-endian; a trailer (-1, int16).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport INT64_MAX, INT64_MIN, int16_t, int32_t, int64_t, uint8_t
from libc.string cimport memcpy

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # signature, flags, extension
COPY_TRAILER = b"\xff\xff"

cdef int64_t PG_EPOCH_US = 946684800000000  # 2000-01-01 (PostgreSQL's epoch) since 1970, microseconds
cdef int64_t DATETIME_MIN_US = -62135596800000000  # datetime.min (0001-01-01) since 1970
cdef int64_t DATETIME_MAX_US = 253402300799999999  # datetime.max (9999-12-31T23:59:59.999999) since 1970

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
    if ts_c < DATETIME_MIN_US or ts_c > DATETIME_MAX_US:
        raise OverflowError(f"change time {ts} microseconds since the epoch: date value out of range")
    change_time = ts_c - PG_EPOCH_US
    if ts_c == DATETIME_MAX_US:
        change_time = INT64_MAX  # infinity, as asyncpg writes datetime.max
    elif ts_c == DATETIME_MIN_US:
        change_time = INT64_MIN  # -infinity, as asyncpg writes datetime.min
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
