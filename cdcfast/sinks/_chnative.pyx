# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Change-log rows and state-row columns straight into ClickHouse's Native format.

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

State rows' columns vary with each table's types: :func:`encode_column` encodes one column of the
common types (integers, floats, strings, UUIDs, Nullable and Array of them) and leaves any other
type to the driver. It writes the bytes the driver writes for the same values
(tests/sinks/test_clickhouse_native_columns.py compares the two), and refuses with ``OverflowError``,
``TypeError`` or ``ValueError`` a value it does not take as the driver would (the writer then lets
the driver encode the insert).

Native layout (ClickHouse's ``NativeWriter``), little-endian: integers and floats at their width;
``UUID`` as its high then its low 64 bits, each a ``UInt64``; ``String`` as a varint length and the
bytes; ``DateTime`` a ``UInt32`` of seconds; ``Nullable(T)`` a byte per row (1: NULL), then the
``T`` column with a default where NULL; ``Array(T)`` each row's end offset as a ``UInt64``, then
the ``T`` column of all rows' elements.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from uuid import UUID


cdef extern from "Python.h":
    # What the struct module packs "<f" and "<d" with: the same bytes (NaN, -0.0, infinities), the
    # same OverflowError for a finite double beyond Float32.
    int PyFloat_Pack4(double x, char* p, int le) except -1
    int PyFloat_Pack8(double x, char* p, int le) except -1

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


cdef inline char* put_uuid(char* p, bytes uuid_bytes) noexcept:
    """A UUID's 16 big-endian bytes in Native layout: each half as a little-endian UInt64."""
    cdef const uint8_t* raw = <const uint8_t*>PyBytes_AS_STRING(uuid_bytes)
    cdef int k
    for k in range(8):
        p[k] = raw[7 - k]
        p[8 + k] = raw[15 - k]
    return p + 16


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
                raise TypeError("a String column holds no NULL")
        elif isinstance(value, str):
            data = PyUnicode_AsUTF8AndSize(value, &n)
            value = PyBytes_FromStringAndSize(data, n)
        elif not isinstance(value, bytes):
            raise TypeError(f"a String value must be str or bytes, not {type(value).__name__}")
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
    cdef int64_t ts, seconds
    cdef _Strings ops = _Strings(False), sources = _Strings(False), keys = _Strings(False)
    cdef _Strings cells = _Strings(True), ranges = _Strings(True)
    for i in range(n):
        row = <tuple?>rows[i]
        event_id = <bytes?>row[0]
        if PyBytes_GET_SIZE(event_id) != 16:
            raise ValueError(f"an event id is 16 bytes, not {PyBytes_GET_SIZE(event_id)}")
        id_p = put_uuid(id_p, event_id)
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


# -- state-row columns ------------------------------------------------------------------------------

cdef enum Kind:
    SIGNED = 1
    UNSIGNED = 2
    FLOAT = 3
    STRING = 4
    IDENTIFIER = 5  # UUID

# A column type encoded here: (kind, width in bytes); any other type is left to the driver.
cdef dict SCALARS = {
    "Int8": (SIGNED, 1), "Int16": (SIGNED, 2), "Int32": (SIGNED, 4), "Int64": (SIGNED, 8),
    "UInt8": (UNSIGNED, 1), "UInt16": (UNSIGNED, 2), "UInt32": (UNSIGNED, 4), "UInt64": (UNSIGNED, 8),
    "Float32": (FLOAT, 4), "Float64": (FLOAT, 8), "String": (STRING, 0), "UUID": (IDENTIFIER, 16),
}


cdef bytes _fixed(list values, int kind, int width, bint nullable):
    """A column of fixed-width values (NULL map first when ``nullable``; 0 under a NULL)."""
    cdef Py_ssize_t n = len(values), i
    cdef Py_ssize_t head = n if nullable else 0
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head + n * width)
    cdef char* nulls = PyBytes_AS_STRING(out)
    cdef char* p = nulls + head
    cdef int64_t signed_value, low
    cdef uint64_t unsigned_value
    cdef bytes identifier
    for i in range(n):
        value = values[i]
        if value is None:
            if not nullable:
                raise TypeError("a column that is not Nullable holds no NULL")
            nulls[i] = 1
            memset(p, 0, width)
            p += width
            continue
        if nullable:
            nulls[i] = 0
        if kind == SIGNED or kind == UNSIGNED:
            if not isinstance(value, int):
                raise TypeError(f"an integer column takes int, not {type(value).__name__}")
            if kind == SIGNED:
                signed_value = value  # OverflowError beyond 64 bits
                if width < 8:
                    low = -((<int64_t>1) << (8 * width - 1))  # the width's smallest value
                    if not (low <= signed_value < -low):
                        raise OverflowError(f"{value} is beyond a {8 * width}-bit integer")
                unsigned_value = <uint64_t>signed_value
            else:
                unsigned_value = value  # OverflowError when negative or beyond 64 bits
                if width < 8 and unsigned_value >> (8 * width):
                    raise OverflowError(f"{value} is beyond a {8 * width}-bit unsigned integer")
            p = put_le(p, unsigned_value, width)
        elif kind == FLOAT:
            if not isinstance(value, (float, int)):
                raise TypeError(f"a float column takes float or int, not {type(value).__name__}")
            if width == 4:
                PyFloat_Pack4(value, p, 1)
            else:
                PyFloat_Pack8(value, p, 1)
            p += width
        else:  # IDENTIFIER
            if type(value) is not UUID:
                raise TypeError(f"a UUID column takes uuid.UUID, not {type(value).__name__}")
            identifier = value.bytes  # held while read: the property makes a new object each time
            p = put_uuid(p, identifier)
    return out


cdef bytes _flat(list values, int kind, int width, bint nullable):
    cdef _Strings strings
    if kind != STRING:
        return _fixed(values, kind, width, nullable)
    strings = _Strings(nullable)
    for value in values:
        strings.add(value)
    return strings.column()


def encode_column(str type_, list values):
    """``values`` as a Native-format column of ``type_``: bytes, or None when ``type_`` is not one
    encoded here (the driver encodes it). Types: ``Int8``-``Int64``, ``UInt8``-``UInt64``,
    ``Float32``, ``Float64``, ``String`` (str as UTF-8, or bytes), ``UUID`` (uuid.UUID), each also
    as ``Nullable(T)`` and ``Array(T)`` (an array: a list or tuple)."""
    cdef bint nullable = False, array = False
    cdef Py_ssize_t n, i
    cdef uint64_t offset = 0
    cdef bytes offsets
    cdef char* p
    inner = type_
    if inner.startswith("Nullable(") and inner.endswith(")"):
        nullable, inner = True, inner[9:len(inner) - 1]
    elif inner.startswith("Array(") and inner.endswith(")"):
        array, inner = True, inner[6:len(inner) - 1]
    scalar = SCALARS.get(inner)
    if scalar is None:
        return None
    kind, width = scalar
    if not array:
        return _flat(values, kind, width, nullable)
    n = len(values)
    offsets = PyBytes_FromStringAndSize(NULL, 8 * n)
    p = PyBytes_AS_STRING(offsets)
    elements = []
    for i in range(n):
        value = values[i]
        if type(value) is not list and type(value) is not tuple:
            raise TypeError(f"an Array column takes lists or tuples, not {type(value).__name__}")
        offset += len(value)
        p = put_le(p, offset, 8)
        elements.extend(value)
    return offsets + _flat(elements, kind, width, False)
