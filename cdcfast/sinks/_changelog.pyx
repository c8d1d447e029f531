# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Change-log rows rendered in one compiled pass per event: the screening loop of
:meth:`cdcfast.sinks.encode.TableCodec.screen`.

The Python loop built a dict per key and per cell, called a closure per value and ``orjson.dumps``
on the result: about a third of a PostgreSQL writer's CPU. Here the key's and the cells' JSON are
written straight into a buffer, byte for byte what ``orjson.dumps`` writes for the Python path's
dicts (``TableCodec.key_json`` / ``cells_json``, i.e. :func:`cdcfast.sinks.changelog.change_row`):

* the common scalar kinds are rendered from their serialized bytes: integers (the 8-byte ones
  while JSON-safe), dates, booleans, UUIDs, blobs, and text without characters JSON escapes
  (finite non-zero doubles and floats through ``orjson.dumps`` of the float, its own formatting);
* anything else, or anything unusual about a value (a wrong length, an escape, NaN, -0.0, a
  number beyond JSON's safe range, bad UTF-8), takes the column's Python renderer
  (``ColumnCodec.json``) and ``orjson.dumps``: the same text, the same errors;
* collection and UDT cells go through ``TableCodec._complex_entry`` as before.

The values' target conversions are done exactly where the Python loop did them (key values,
written simple cells; complex cells inside ``_complex_entry``) and remembered in the batch's
``Converted``. A ``CdcfastError`` from a renderer or a conversion is left to the caller, which makes
the event a dead letter. tests/sinks/test_changelog_render.py checks the rows against
``changelog.change_row`` on every corpus event and on odd values.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_SetItem
from cpython.float cimport PyFloat_FromDouble
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport isfinite
from cdcfast.sinks._bigendian cimport be_int
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import orjson

from cdcfast.events import SET, TRUNCATE

cdef object dumps = orjson.dumps
cdef int SET_KIND = SET
cdef object TRUNCATE_OP = TRUNCATE
cdef int64_t JSON_SAFE = 2 ** 53  # cdcfast.transform.typemap.JSON_SAFE_INTEGER
cdef int64_t DATE_EPOCH = 2 ** 31
cdef const char* HEX = b"0123456789abcdef"

# How a column's values are rendered (see the module docstring).
cdef enum:
    GENERIC = 0
    TEXT = 1
    ASCII = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    INT64 = 6  # bigint, timestamp, time: JSON-safe values only
    DATE = 7
    BOOLEAN = 8
    DOUBLE = 9
    FLOAT = 10
    UUID = 11
    BLOB = 12

KINDS = {
    "text": TEXT,
    "ascii": ASCII,
    "tinyint": INT8,
    "smallint": INT16,
    "int": INT32,
    "bigint": INT64,
    "timestamp": INT64,
    "time": INT64,
    "date": DATE,
    "boolean": BOOLEAN,
    "double": DOUBLE,
    "float": FLOAT,
    "uuid": UUID,
    "timeuuid": UUID,
    "blob": BLOB,
    "custom": BLOB,
}


cdef class ColumnRender:
    """One column: its name as JSON, how its values render, its Python renderer and converter."""

    cdef readonly str name
    cdef bytes name_json  # b'"name":'
    cdef bytes entry_head  # b'{"col":"name","kind":"'
    cdef int kind
    cdef bint is_complex
    cdef object json  # ColumnCodec.json: serialized value -> JSON-able value
    cdef object to_target
    cdef object codec  # the ColumnCodec, for TableCodec._complex_entry

    def __init__(self, codec, bint complex_):
        self.name = codec.name
        self.name_json = dumps(codec.name) + b":"
        self.entry_head = b'{"col":' + dumps(codec.name) + b',"kind":'
        self.kind = KINDS.get(codec.ctype.kind, GENERIC) if not codec.ctype.params else GENERIC
        self.is_complex = complex_
        self.json = codec.json
        self.to_target = codec.to_target
        self.codec = codec


cdef class TableRender:
    """A table's columns for :class:`BatchRender` (built once per ``TableCodec``)."""

    cdef list partition_key
    cdef list clustering
    cdef dict columns  # name -> ColumnRender
    cdef tuple kinds  # CELL_KINDS as JSON: b'"set"', ...
    cdef object complex_entry  # TableCodec._complex_entry
    cdef object range_json  # TableCodec.range_json

    def __init__(self, table_codec, kinds):
        self.columns = {name: ColumnRender(c, c.complex) for name, c in table_codec.columns.items()}
        self.partition_key = [self.columns[c.name] for c in table_codec.partition_key]
        self.clustering = [self.columns[c.name] for c in table_codec.clustering]
        self.kinds = tuple(dumps(k) for k in kinds)
        self.complex_entry = table_codec._complex_entry
        self.range_json = table_codec.range_json


cdef class BatchRender:
    """One batch's change-log rows: ``row(event)`` renders an event's row (``record(...)``, as the
    Python loop called it) and converts its values into ``memo`` (``Converted.values``)."""

    cdef TableRender table
    cdef dict memo
    cdef dict partitions  # partition key tuple -> b'{"pk1":...,"pk2":...' (no closing brace)
    cdef str source
    cdef object record
    cdef char* buf
    cdef Py_ssize_t len
    cdef Py_ssize_t cap

    def __cinit__(self):
        self.cap = 4096
        self.len = 0
        self.buf = <char*>PyMem_Malloc(self.cap)
        if self.buf is NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.buf)

    def __init__(self, TableRender table, dict memo, str source, record):
        self.table = table
        self.memo = memo
        self.partitions = {}
        self.source = source
        self.record = record

    # -- buffer -----------------------------------------------------------------------------------
    cdef int reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef char* grown
        if self.len + n <= cap:
            return 0
        while self.len + n > cap:
            cap *= 2
        grown = <char*>PyMem_Realloc(self.buf, cap)
        if grown is NULL:
            raise MemoryError()
        self.buf, self.cap = grown, cap
        return 0

    cdef inline int put(self, const char* data, Py_ssize_t n) except -1:
        self.reserve(n)
        memcpy(self.buf + self.len, data, n)
        self.len += n
        return 0

    cdef inline int put_bytes(self, bytes data) except -1:
        return self.put(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef inline int put_char(self, char c) except -1:
        self.reserve(1)
        self.buf[self.len] = c
        self.len += 1
        return 0

    cdef int put_int(self, int64_t v) except -1:
        cdef char digits[24]
        cdef int i = 24
        cdef uint64_t u = <uint64_t>v if v >= 0 else <uint64_t>0 - <uint64_t>v
        while True:
            i -= 1
            digits[i] = <char>(48 + u % 10)
            u //= 10
            if u == 0:
                break
        if v < 0:
            i -= 1
            digits[i] = b"-"
        return self.put(digits + i, 24 - i)

    cdef int put_number(self, object value) except -1:
        """An int field of the entry (ts, ttl, expires_at) as orjson writes it."""
        if type(value) is int and -9223372036854775807 <= value <= 9223372036854775807:
            return self.put_int(<int64_t>value)
        return self.put_bytes(dumps(value))

    cdef bytes take(self, Py_ssize_t start):
        out = PyBytes_FromStringAndSize(self.buf + start, self.len - start)
        self.len = start
        return out

    # -- values -----------------------------------------------------------------------------------
    cdef int put_value(self, ColumnRender c, object raw) except -1:
        """The JSON of one serialized value of ``c``: ``orjson.dumps(c.json(raw))``."""
        cdef const uint8_t* p
        cdef Py_ssize_t n, i
        cdef int64_t v
        cdef double d
        cdef uint32_t f32
        cdef uint64_t f64
        cdef bint high = False
        cdef uint8_t b
        cdef int kind = c.kind
        if kind != GENERIC and type(raw) is bytes:
            p = <const uint8_t*>PyBytes_AS_STRING(raw)
            n = PyBytes_GET_SIZE(raw)
            if kind == TEXT or kind == ASCII:
                for i in range(n):
                    b = p[i]
                    if b < 0x20 or b == 34 or b == 92:  # escaped by JSON: the Python path renders it
                        break
                    if b >= 0x80:
                        high = True
                else:
                    if not high or (kind == TEXT and valid_utf8(raw)):
                        self.reserve(n + 2)
                        self.buf[self.len] = b'"'
                        memcpy(self.buf + self.len + 1, p, n)
                        self.buf[self.len + 1 + n] = b'"'
                        self.len += n + 2
                        return 0
            elif kind == INT8 and n == 1 or kind == INT16 and n == 2 or kind == INT32 and n == 4:
                return self.put_int(be_int(p, n))
            elif kind == INT64 and n == 8:
                v = be_int(p, 8)
                if -JSON_SAFE <= v <= JSON_SAFE:
                    return self.put_int(v)
            elif kind == DATE and n == 4:
                return self.put_int(<int64_t>(<uint32_t>be_int(p, 4)) - DATE_EPOCH)
            elif kind == BOOLEAN and n == 1:
                if p[0]:
                    return self.put(b"true", 4)
                return self.put(b"false", 5)
            elif kind == DOUBLE and n == 8:
                f64 = <uint64_t>be_int(p, 8)
                memcpy(&d, &f64, 8)
                if d != 0 and isfinite(d):
                    return self.put_bytes(dumps(PyFloat_FromDouble(d)))
            elif kind == FLOAT and n == 4:
                f32 = <uint32_t>be_int(p, 4)
                d = (<float*>&f32)[0]
                if d != 0 and isfinite(d):
                    return self.put_bytes(dumps(PyFloat_FromDouble(d)))
            elif kind == UUID and n == 16:
                self.reserve(38)
                put_uuid(self.buf + self.len, p)
                self.len += 38
                return 0
            elif kind == BLOB:
                self.reserve(2 * n + 4)
                self.buf[self.len] = b'"'
                self.buf[self.len + 1] = b"0"
                self.buf[self.len + 2] = b"x"
                for i in range(n):
                    self.buf[self.len + 3 + 2 * i] = HEX[p[i] >> 4]
                    self.buf[self.len + 4 + 2 * i] = HEX[p[i] & 15]
                self.buf[self.len + 3 + 2 * n] = b'"'
                self.len += 2 * n + 4
                return 0
        return self.put_bytes(dumps(c.json(raw)))

    cdef inline int convert(self, ColumnRender c, object raw) except -1:
        """``c``'s target value of ``raw``, converted once per batch (``Converted``)."""
        cdef dict seen = self.memo[c.name]
        if not PyDict_Contains(seen, raw):
            PyDict_SetItem(seen, raw, c.to_target(raw))
        return 0

    # -- rows -------------------------------------------------------------------------------------
    cdef bytes key_json(self, event):
        cdef TableRender table = self.table
        cdef ColumnRender c
        cdef Py_ssize_t i, count
        partition_key = event.partition_key
        pk = tuple(partition_key)
        prefix = self.partitions.get(pk)
        if prefix is None:
            self.len = 0
            self.put_char(b"{")
            for i in range(min(len(table.partition_key), len(pk))):
                c = table.partition_key[i]
                raw = pk[i]
                if i:
                    self.put_char(b",")
                self.put_bytes(c.name_json)
                self.put_value(c, raw)
                self.convert(c, raw)
            prefix = self.take(0)
            self.partitions[pk] = prefix
        clustering = event.clustering
        count = min(len(table.clustering), len(clustering))
        if count == 0:
            return <bytes>prefix + b"}"
        self.len = 0
        self.put_bytes(prefix)
        for i in range(count):
            c = table.clustering[i]
            raw = clustering[i]
            if PyBytes_GET_SIZE(prefix) > 1 or i:
                self.put_char(b",")
            self.put_bytes(c.name_json)
            if raw is None:
                self.put(b"null", 4)
                continue
            self.put_value(c, raw)
            self.convert(c, raw)
        self.put_char(b"}")
        return self.take(0)

    @cython.boundscheck(True)
    @cython.wraparound(True)
    cdef object cells_json(self, list cells):
        cdef TableRender table = self.table
        cdef ColumnRender c
        cdef bint first = True
        if not cells:
            return None
        self.len = 0
        self.put_char(b"[")
        for cell in cells:
            if not first:
                self.put_char(b",")
            first = False
            c = table.columns.get(cell.column)
            if c is not None and (cell.path is not None or c.is_complex):
                entry = table.complex_entry(c.codec, cell)
                if cell.ttl:
                    entry["ttl"], entry["expires_at"] = cell.ttl, cell.expires_at
                self.put_bytes(dumps(entry))
                continue
            if c is None:
                self.put(b'{"col":', 7)
                self.put_bytes(dumps(cell.column))
                self.put(b',"kind":', 8)
            else:
                self.put_bytes(c.entry_head)
            self.put_bytes(table.kinds[cell.kind])
            self.put(b',"ts":', 6)
            self.put_number(cell.ts)
            value = cell.value
            if c is not None and value is not None:
                self.put(b',"value":', 9)
                self.put_value(c, value)
                if cell.kind == SET_KIND:
                    self.convert(c, value)
            if cell.ttl:
                self.put(b',"ttl":', 7)
                self.put_number(cell.ttl)
                self.put(b',"expires_at":', 14)
                self.put_number(cell.expires_at)
            self.put_char(b"}")
        self.put_char(b"]")
        return self.take(0)

    def row(self, event):
        """The event's change-log row: ``record(event_id, op, ts, segment_id, position, source, key
        JSON, cells JSON, deletion_ts, range JSON)``."""
        key = self.key_json(event)
        cells = self.cells_json(event.cells)
        if event.range_start is None and event.range_end is None and event.op != TRUNCATE_OP:
            range_ = None
        else:
            range_ = self.table.range_json(event)
        return self.record(
            event.event_id,
            event.op,
            event.ts,
            event.segment_id,
            event.position,
            self.source,
            key,
            cells,
            event.deletion_ts,
            range_,
        )


cdef bint valid_utf8(bytes raw):
    """Python's strict UTF-8 (no surrogates): then orjson writes the text as these very bytes."""
    try:
        PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL)
    except UnicodeDecodeError:
        return False
    return True


cdef inline void put_uuid(char* out, const uint8_t* p) noexcept:
    """``"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"`` (str(uuid.UUID), quoted)."""
    cdef int i, o = 1
    out[0] = b'"'
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            out[o] = b"-"
            o += 1
        out[o] = HEX[p[i] >> 4]
        out[o + 1] = HEX[p[i] & 15]
        o += 2
    out[37] = b'"'
