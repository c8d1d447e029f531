# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Change-log rows straight into ClickHouse's Native format, column by column.

clickhouse-driver encodes an insert's values item by item in Python: a ``UUID`` object per
``event_id`` split into two integers, a type check and a ``struct`` call per value; for a change
log that is more than the rest of the row's rendering. The change log's columns are fixed
(``cdcfast.sinks.clickhouse.CHANGE_LOG_TYPES``), so each column is written here in one pass from
the values the writers have anyway (:func:`cdcfast.sinks.clickhouse.change_record`'s arguments:
``event_id`` as its 16 bytes, ``change_time`` derived from ``ts``).

It stores exactly what the driver stores from the same rows (tests/sinks/test_clickhouse_change_log.py
reads them back from a real server), including its edges: ``change_time`` is the write timestamp's
second within what a ``DateTime`` holds (0 before 1970, its last second past 2106:
:func:`cdcfast.sinks.clickhouse.change_seconds`); a number its column cannot hold is refused with
``OverflowError``, as the driver refuses it.

Native layout (ClickHouse's ``NativeWriter``), little-endian: ``UUID`` as its high then its low 64
bits, each a ``UInt64``; ``String`` as a varint length and the bytes; ``DateTime`` a ``UInt32`` of
seconds; ``Nullable(T)`` a byte per row (1: NULL), then the ``T`` column with a default where NULL.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef int64_t DATETIME_MAX = 4294967295  # DateTime's last second (2106-02-07T06:28:15Z)


cdef inline Py_ssize_t varint_size(uint64_t v) noexcept:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline char* put_varint(char* p, uint64_t v) noexcept:
    while v >= 0x80:
        p[0] = <char>((v & 0x7F) | 0x80)
        v >>= 7
        p += 1
    p[0] = <char>v
    return p + 1


cdef inline char* put_le(char* p, uint64_t v, int size) noexcept:
    cdef int i
    for i in range(size):
        p[i] = <char>((v >> (8 * i)) & 0xFF)
    return p + size


cdef class _Strings:
    """One ``String`` (or ``Nullable(String)``) column: the UTF-8 bytes of each value, sized first."""

    cdef list parts
    cdef Py_ssize_t size
    cdef bint nullable

    def __cinit__(self, bint nullable):
        self.parts = []
        self.size = 0
        self.nullable = nullable

    cdef add(self, object value):
        cdef const char* data
        cdef Py_ssize_t n
        if value is None:
            if not self.nullable:
                raise TypeError("a change-log String column holds no NULL")
        elif isinstance(value, str):
            data = PyUnicode_AsUTF8AndSize(value, &n)
            value = PyBytes_FromStringAndSize(data, n)
        elif not isinstance(value, bytes):
            raise TypeError(f"a change-log String value must be str or bytes, not {type(value).__name__}")
        self.parts.append(value)
        self.size += 1 if value is None else varint_size(PyBytes_GET_SIZE(value)) + PyBytes_GET_SIZE(value)

    cdef bytes column(self):
        cdef Py_ssize_t rows = len(self.parts), n
        cdef Py_ssize_t i = 0
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.size + (rows if self.nullable else 0))
        cdef char* p = PyBytes_AS_STRING(out)
        if self.nullable:
            for value in self.parts:
                p[i] = 1 if value is None else 0
                i += 1
            p += rows
        for value in self.parts:
            if value is None:
                p[0] = 0  # an empty string under the NULL
                p += 1
                continue
            n = PyBytes_GET_SIZE(value)
            p = put_varint(p, n)
            memcpy(p, PyBytes_AS_STRING(value), n)
            p += n
        return out


def change_log_columns(list rows):
    """The Native-format columns of ``rows``, each ``(event_id, op, ts, segment_id, position, source,
    key, cells, deletion_ts, range)`` (``event_id``: 16 bytes; ``key``, ``cells``, ``range``: UTF-8
    JSON bytes or None): ``event_id``, ``op``, ``ts``, ``change_time``, ``segment_id``,
    ``position``, ``source``, ``key``, ``cells``, ``deletion_ts``, ``range``, as a list of bytes."""
    cdef Py_ssize_t n = len(rows), i
    cdef bytes ids = PyBytes_FromStringAndSize(NULL, 16 * n)
    cdef bytes ts_column = PyBytes_FromStringAndSize(NULL, 8 * n)
    cdef bytes times = PyBytes_FromStringAndSize(NULL, 4 * n)
    cdef bytes segments = PyBytes_FromStringAndSize(NULL, 8 * n)
    cdef bytes positions = PyBytes_FromStringAndSize(NULL, 4 * n)
    cdef bytes deletions = PyBytes_FromStringAndSize(NULL, 9 * n)  # null map, then Int64s
    cdef char* id_p = PyBytes_AS_STRING(ids)
    cdef char* ts_p = PyBytes_AS_STRING(ts_column)
    cdef char* time_p = PyBytes_AS_STRING(times)
    cdef char* segment_p = PyBytes_AS_STRING(segments)
    cdef char* position_p = PyBytes_AS_STRING(positions)
    cdef char* deleted_p = PyBytes_AS_STRING(deletions)
    cdef char* deletion_p = deleted_p + n
    cdef const uint8_t* raw
    cdef int64_t ts, seconds
    cdef int k
    cdef _Strings ops = _Strings(False), sources = _Strings(False), keys = _Strings(False)
    cdef _Strings cells = _Strings(True), ranges = _Strings(True)
    for i in range(n):
        row = <tuple?>rows[i]
        event_id = <bytes?>row[0]
        if PyBytes_GET_SIZE(event_id) != 16:
            raise ValueError(f"an event id is 16 bytes, not {PyBytes_GET_SIZE(event_id)}")
        raw = <const uint8_t*>PyBytes_AS_STRING(event_id)
        for k in range(8):  # each half's big-endian bytes, as a little-endian UInt64
            id_p[k] = raw[7 - k]
            id_p[8 + k] = raw[15 - k]
        id_p += 16
        ts = row[2]
        seconds = ts // 1_000_000 if ts > 0 else 0  # DateTime starts at 1970...
        if seconds > DATETIME_MAX:
            seconds = DATETIME_MAX  # ...and ends in 2106 (ts keeps the exact write time)
        ts_p = put_le(ts_p, <uint64_t>ts, 8)
        time_p = put_le(time_p, <uint64_t>seconds, 4)
        segment_p = put_le(segment_p, <uint64_t><int64_t>row[3], 8)
        position_p = put_le(position_p, <uint64_t><uint32_t><int32_t>row[4], 4)
        deletion = row[8]
        deleted_p[i] = 1 if deletion is None else 0
        deletion_p = put_le(deletion_p, 0 if deletion is None else <uint64_t><int64_t>deletion, 8)
        ops.add(row[1])
        sources.add(row[5])
        keys.add(row[6])
        cells.add(row[7])
        ranges.add(row[9])
    return [
        ids, ops.column(), ts_column, times, segments, positions, sources.column(), keys.column(),
        cells.column(), deletions, ranges.column(),
    ]
