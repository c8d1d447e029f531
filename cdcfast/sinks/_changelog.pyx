# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Change-log rows rendered in one compiled pass per event: the screening loop of
:meth:`cdcfast.sinks.encode.TableCodec.screen`.

The Python loop built a dict per key and per cell, called a closure per value and ``orjson.dumps``
on the result: about a third of a PostgreSQL writer's CPU. Here the key's and the cells' JSON are
written straight into a buffer, byte for byte what ``orjson.dumps`` writes for the Python path's
dicts (``TableCodec.key_json`` / ``cells_json``, i.e. :func:`cdcfast.sinks.changelog.change_row`):

* the common scalar kinds are rendered from their serialized bytes: integers (the 8-byte ones
  and varints of up to 8 bytes; beyond JSON's safe range as strings), durations, dates, booleans, UUIDs, blobs, inets (not IPv4-mapped ones),
  decimals with coefficients of up to 8 bytes (``str(Decimal)``'s notation), and text without
  characters JSON escapes (finite non-zero doubles and floats through ``orjson.dumps`` of the
  float, its own formatting);
* frozen collections, tuples, UDTs and vectors of fixed-size elements item by item, each item as
  its own type renders (``fast_json`` of ``fast_decoder``'s value: a text-keyed map is an object,
  other maps ``[[key, value], ...]``, a UDT an object with every field);
* cells of non-frozen collections and UDTs: the path (list timeuuid, set element, map key, UDT
  field name) and the element value likewise (``TableCodec._complex_entry``'s entry);
* anything else, or anything unusual about a value (a wrong length, an escape, NaN, -0.0, a
  number beyond JSON's safe range, bad UTF-8, a negative count, a repeated map key, an
  irregular path), takes the Python renderer (``raw_json`` of the type, ``_complex_entry``) and
  ``orjson.dumps``: the same text, the same errors.

The values' target conversions are done exactly where the Python loop did them (key values and
written simple cells, remembered in the batch's ``Converted``; a written collection or UDT
element through ``ColumnCodec.elements_target``, to screen it). A ``CdcfastError`` from a
renderer or a conversion is left to the caller, which makes the event a dead letter. tests/sinks/test_changelog_render.py checks the rows against
``changelog.change_row`` on every corpus event and on odd values.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_SetItem
from cpython.float cimport PyFloat_FromDouble
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport isfinite
from cdcfast.sinks._bigendian cimport be_int
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from cdcfast._slots cimport Field, field_of, read

import orjson

from cdcfast.events import COUNTER, SET, TRUNCATE, Cell, ChangeEvent

cdef object dumps = orjson.dumps
cdef int SET_KIND = SET
cdef int COUNTER_KIND = COUNTER
cdef object TRUNCATE_OP = TRUNCATE
cdef int64_t JSON_SAFE = 2 ** 53  # cdcfast.transform.typemap.JSON_SAFE_INTEGER
cdef int64_t DATE_EPOCH = 2 ** 31
cdef int64_t INT32_MIN = -(2 ** 31)
cdef int64_t INT32_MAX = 2 ** 31 - 1
cdef int64_t DECIMAL_SCALE = 10 ** 6  # cdcfast.sinks.encode._DECIMAL_SCALE: beyond, the generic decoder
cdef const char* HEX = b"0123456789abcdef"

# Struct fields read in the loops below (cdcfast._slots)
cdef Field CELL_COLUMN = field_of(Cell, "column")
cdef Field CELL_EXPIRES_AT = field_of(Cell, "expires_at")
cdef Field CELL_KIND = field_of(Cell, "kind")
cdef Field CELL_PATH = field_of(Cell, "path")
cdef Field CELL_TS = field_of(Cell, "ts")
cdef Field CELL_TTL = field_of(Cell, "ttl")
cdef Field CELL_VALUE = field_of(Cell, "value")
cdef Field EVENT_CELLS = field_of(ChangeEvent, "cells")
cdef Field EVENT_CLUSTERING = field_of(ChangeEvent, "clustering")
cdef Field EVENT_DELETION_TS = field_of(ChangeEvent, "deletion_ts")
cdef Field EVENT_EVENT_ID = field_of(ChangeEvent, "event_id")
cdef Field EVENT_OP = field_of(ChangeEvent, "op")
cdef Field EVENT_PARTITION_KEY = field_of(ChangeEvent, "partition_key")
cdef Field EVENT_POSITION = field_of(ChangeEvent, "position")
cdef Field EVENT_RANGE_END = field_of(ChangeEvent, "range_end")
cdef Field EVENT_RANGE_END_INCLUSIVE = field_of(ChangeEvent, "range_end_inclusive")
cdef Field EVENT_RANGE_START = field_of(ChangeEvent, "range_start")
cdef Field EVENT_RANGE_START_INCLUSIVE = field_of(ChangeEvent, "range_start_inclusive")
cdef Field EVENT_SEGMENT_ID = field_of(ChangeEvent, "segment_id")
cdef Field EVENT_TS = field_of(ChangeEvent, "ts")
NUL_JSON = b"\\u0000"  # how orjson writes U+0000 (cdcfast.sinks.encode._NUL_JSON)

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
    DECIMAL = 13  # coefficients of up to 8 bytes
    VARINT = 14  # up to 8 bytes, JSON-safe values only
    INET = 15  # IPv4, IPv6 but IPv4-mapped (whose text differs between Python versions)
    DURATION = 17
    COMPOSITE = 16  # frozen collections, tuples, UDTs, vectors of fixed-size elements: see ``shape``

# The shapes of COMPOSITE values, as ``fast_json`` renders them.
cdef enum:
    SEQUENCE = 1  # list, set: [item, ...]
    OBJECT = 2  # map with text keys: {"key": value, ...}
    PAIRS = 3  # map with other keys: [[key, value], ...]
    TUPLE = 4  # [field, ...]
    FIELDS = 5  # UDT: {"name": field, ...}
    VECTOR = 6  # fixed-size elements back to back: [item, ...]

# The non-frozen (multi-cell) columns, by their cells' paths.
cdef enum:
    LIST_CELLS = 1
    SET_CELLS = 2
    MAP_CELLS = 3
    UDT_CELLS = 4

CELLS = {"list": LIST_CELLS, "set": SET_CELLS, "map": MAP_CELLS, "udt": UDT_CELLS}
SHAPES = {"list": SEQUENCE, "set": SEQUENCE, "tuple": TUPLE, "udt": FIELDS}

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
    "decimal": DECIMAL,
    "varint": VARINT,
    "inet": INET,
    "duration": DURATION,
}


cdef class ValueRender:
    """How the serialized values of one CQL type render: natively (``kind``; the items of a composite
    value each with their own ``ValueRender``), or by ``json`` (``raw_json`` of the type) and
    ``orjson.dumps``."""

    cdef int kind
    cdef object json  # serialized value -> JSON-able value (raw_json)
    cdef int shape  # COMPOSITE values
    cdef list items  # COMPOSITE: ValueRender per parameter
    cdef list names  # FIELDS: b'"name":' per field
    cdef Py_ssize_t size  # VECTOR: the element's fixed length
    cdef Py_ssize_t dimension  # VECTOR

    def __init__(self, ctype, raw_json):
        kind = ctype.kind
        self.json = raw_json(ctype)
        self.kind = KINDS.get(kind, GENERIC) if not ctype.params else GENERIC
        if not ctype.params or ctype.is_complex:
            return
        self.items = [ValueRender(p, raw_json) for p in ctype.params]
        self.names = [dumps(n) + b":" for n in ctype.field_names]
        if kind == "map":
            self.shape = OBJECT if ctype.params[0].kind in ("text", "ascii") else PAIRS
        elif kind == "vector":
            self.size, self.dimension = ctype.params[0].fixed_length, ctype.dimension
            self.shape = VECTOR if self.size > 0 and self.dimension > 0 else 0
        else:
            self.shape = SHAPES.get(kind, 0)
        if self.shape:
            self.kind = COMPOSITE


cdef class ColumnRender:
    """One column: its name as JSON, how its values render, its Python renderer and converter."""

    cdef readonly str name
    cdef bytes name_json  # b'"name":'
    cdef bytes entry_head  # b'{"col":"name","kind":"'
    cdef ValueRender value  # a whole value (simple and frozen columns)
    cdef bint is_complex
    cdef int cells  # non-frozen collections and UDTs: LIST_CELLS... (0: rendered by _complex_entry)
    cdef ValueRender path  # SET_CELLS, MAP_CELLS: the element or key
    cdef list items  # the element values: list element, (key, value) of a map, UDT fields
    cdef list fields  # UDT_CELLS: b'"name"' per field
    cdef object to_target
    cdef object elements_target
    cdef bint json_elements  # converted to JSON: an element whose JSON has no \u0000 converts
    cdef object codec  # the ColumnCodec, for TableCodec._complex_entry

    def __init__(self, codec, bint complex_, raw_json, bint json_target):
        ctype = codec.ctype
        self.name = codec.name
        self.name_json = dumps(codec.name) + b":"
        self.entry_head = b'{"col":' + dumps(codec.name) + b',"kind":'
        self.value = ValueRender(ctype, raw_json)
        self.is_complex = complex_
        if complex_ and ctype.kind in CELLS:
            self.cells = CELLS[ctype.kind]
            self.items = [ValueRender(p, raw_json) for p in ctype.params]
            self.path = self.items[0] if self.cells in (SET_CELLS, MAP_CELLS) else None
            self.fields = [dumps(n) for n in ctype.field_names]
            self.json_elements = json_target and not any(NUL_JSON in name for name in self.fields)
        self.to_target = codec.to_target
        self.elements_target = codec.elements_target
        self.codec = codec


cdef class TableRender:
    """A table's columns for :class:`BatchRender` (built once per ``TableCodec``)."""

    cdef list partition_key
    cdef list clustering
    cdef dict columns  # name -> ColumnRender
    cdef tuple kinds  # CELL_KINDS as JSON: b'"set"', ...
    cdef object complex_entry  # TableCodec._complex_entry
    cdef object range_json  # TableCodec.range_json

    def __init__(self, table_codec, kinds, raw_json, json_columns):
        self.columns = {
            name: ColumnRender(c, c.complex, raw_json, name in json_columns)
            for name, c in table_codec.columns.items()
        }
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
    cdef dict screened  # column name -> the collection/UDT elements converted without error
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
        self.screened = {}
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

    cdef int put_json_int(self, int64_t v) except -1:
        """An integer as ``json_value`` gives it: a number while JSON-safe, else its digits as a string."""
        if -JSON_SAFE <= v <= JSON_SAFE:
            return self.put_int(v)
        self.put_char(b'"')
        self.put_int(v)
        return self.put_char(b'"')

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
    cdef int put_value(self, ValueRender r, object raw) except -1:
        """The JSON of one serialized value: ``orjson.dumps(r.json(raw))``."""
        if r.kind != GENERIC and type(raw) is bytes:
            return self.put_raw(r, <const uint8_t*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), raw)
        return self.put_bytes(dumps(r.json(raw)))

    cdef int put_raw(self, ValueRender r, const uint8_t* p, Py_ssize_t n, object raw) except -1:
        """The JSON of the serialized value at ``p`` (``raw``: its bytes, or None to make them from
        ``p`` if the Python renderer is needed)."""
        cdef Py_ssize_t i, start
        cdef int64_t v
        cdef double d
        cdef uint32_t f32
        cdef uint64_t f64
        cdef bint high = False, done
        cdef uint8_t b
        cdef int kind = r.kind
        if kind == TEXT or kind == ASCII:
            for i in range(n):
                b = p[i]
                if b < 0x20 or b == 34 or b == 92:  # escaped by JSON: the Python path renders it
                    break
                if b >= 0x80:
                    high = True
            else:
                if not high or (kind == TEXT and valid_utf8(p, n)):
                    self.reserve(n + 2)
                    self.buf[self.len] = b'"'
                    memcpy(self.buf + self.len + 1, p, n)
                    self.buf[self.len + 1 + n] = b'"'
                    self.len += n + 2
                    return 0
        elif kind == INT8 and n == 1 or kind == INT16 and n == 2 or kind == INT32 and n == 4:
            return self.put_int(be_int(p, n))
        elif kind == INT64 and n == 8 or kind == VARINT and 1 <= n <= 8:
            return self.put_json_int(be_int(p, n))  # beyond JSON's safe range: str(Decimal(v))
        elif kind == DURATION:
            if self.put_duration(p, n):
                return 0
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
        elif kind == DECIMAL and 5 <= n <= 12:
            v = be_int(p, 4)
            if -DECIMAL_SCALE < v < DECIMAL_SCALE:
                return self.put_decimal(be_int(p + 4, n - 4), <int32_t>v)
        elif kind == INET and n == 4:
            self.reserve(17)
            self.buf[self.len] = b'"'
            self.len += 1
            for i in range(4):
                if i:
                    self.buf[self.len] = b"."
                    self.len += 1
                self.put_digits(p[i])
            self.buf[self.len] = b'"'
            self.len += 1
            return 0
        elif kind == INET and n == 16 and not ipv4_mapped(p):
            self.reserve(42)
            self.len += put_ipv6(self.buf + self.len, p)
            return 0
        elif kind == COMPOSITE:
            start = self.len
            try:
                done = self.put_composite(r, p, n)
            except Exception:  # an item the Python renderer refuses: it decides for the whole value
                done = False
            if done:
                return 0
            self.len = start
        if raw is None:
            raw = PyBytes_FromStringAndSize(<const char*>p, n)
        return self.put_bytes(dumps(r.json(raw)))

    cdef inline void put_digits(self, uint8_t v) noexcept:
        """0 to 255 in decimal (room reserved by the caller)."""
        if v >= 100:
            self.buf[self.len] = <char>(48 + v // 100)
            self.len += 1
        if v >= 10:
            self.buf[self.len] = <char>(48 + v // 10 % 10)
            self.len += 1
        self.buf[self.len] = <char>(48 + v % 10)
        self.len += 1

    cdef int put_duration(self, const uint8_t* p, Py_ssize_t n) except -1:
        """``{"months":m,"days":d,"nanoseconds":n}`` from three zig-zag signed vints (``json_value``
        of the decoded ``Duration``); 0 (nothing written) for a value the decoder refuses."""
        cdef int64_t parts[3]
        cdef Py_ssize_t pos = 0
        cdef int i
        for i in range(3):
            pos = read_svint(p, n, pos, &parts[i])
            if pos < 0:
                return 0
        if pos != n or not (INT32_MIN <= parts[0] <= INT32_MAX and INT32_MIN <= parts[1] <= INT32_MAX):
            return 0
        self.put(b'{"months":', 10)
        self.put_int(parts[0])
        self.put(b',"days":', 8)
        self.put_int(parts[1])
        self.put(b',"nanoseconds":', 15)
        self.put_json_int(parts[2])
        self.put_char(b"}")
        return 1

    cdef int put_decimal(self, int64_t unscaled, int32_t scale) except -1:
        """``str(Decimal(f"{unscaled}E{-scale}"))`` quoted: Python's to-scientific-string (plain
        notation while the exponent is <= 0 and the adjusted exponent >= -6)."""
        cdef char digits[24]
        cdef int count = 0, i
        cdef uint64_t u = <uint64_t>unscaled if unscaled >= 0 else <uint64_t>0 - <uint64_t>unscaled
        cdef int64_t exponent = -<int64_t>scale, point, adjusted
        while True:
            digits[23 - count] = <char>(48 + u % 10)
            count += 1
            u //= 10
            if u == 0:
                break
        cdef const char* c = digits + 24 - count
        self.reserve(count + 40)
        self.buf[self.len] = b'"'
        self.len += 1
        if unscaled < 0:
            self.buf[self.len] = b"-"
            self.len += 1
        point = count + exponent  # digits before the decimal point
        adjusted = point - 1
        if exponent <= 0 and adjusted >= -6:
            if point <= 0:
                self.reserve(2 - point + count)
                self.buf[self.len] = b"0"
                self.buf[self.len + 1] = b"."
                self.len += 2
                for i in range(-point):
                    self.buf[self.len + i] = b"0"
                self.len += -point
                memcpy(self.buf + self.len, c, count)
                self.len += count
            else:
                memcpy(self.buf + self.len, c, point)
                self.len += point
                if point < count:
                    self.buf[self.len] = b"."
                    memcpy(self.buf + self.len + 1, c + point, count - point)
                    self.len += 1 + count - point
        else:
            self.buf[self.len] = c[0]
            self.len += 1
            if count > 1:
                self.buf[self.len] = b"."
                memcpy(self.buf + self.len + 1, c + 1, count - 1)
                self.len += count
            self.buf[self.len] = b"E"
            self.buf[self.len + 1] = b"+" if adjusted >= 0 else b"-"
            self.len += 2
            self.put_int(adjusted if adjusted >= 0 else -adjusted)
        return self.put_char(b'"')

    cdef Py_ssize_t put_item(self, ValueRender r, const uint8_t* p, Py_ssize_t n, Py_ssize_t pos) except -2:
        """The length-prefixed item at ``pos`` of a composite value (a negative length: null): the
        position after it, or -1 if the value ends first."""
        cdef Py_ssize_t size
        if pos + 4 > n:
            return -1
        size = be_int(p + pos, 4)
        pos += 4
        if size < 0:
            self.put(b"null", 4)
            return pos
        if size > n - pos:
            return -1
        self.put_raw(r, p + pos, size, None)
        return pos + size

    cdef int put_composite(self, ValueRender r, const uint8_t* p, Py_ssize_t n) except -1:
        """A frozen collection, tuple, UDT or vector as ``fast_json`` renders ``fast_decoder``'s value.
        False for anything irregular (a negative count, a short or long value, a null or repeated
        key of a text-keyed map): then the caller has the Python renderer decide."""
        cdef int shape = r.shape
        cdef Py_ssize_t pos, i, count, size
        cdef ValueRender first, second
        cdef set keys = None
        cdef list items = r.items
        if shape == VECTOR:
            if n != r.size * r.dimension:
                return False
            first = items[0]
            self.put_char(b"[")
            for i in range(r.dimension):
                if i:
                    self.put_char(b",")
                self.put_raw(first, p + i * r.size, r.size, None)
            self.put_char(b"]")
            return True
        if n < 4:
            return False
        if shape == TUPLE or shape == FIELDS:
            self.put_char(b"[" if shape == TUPLE else b"{")
            pos = 0
            for i in range(len(items)):
                if i:
                    self.put_char(b",")
                if shape == FIELDS:
                    self.put_bytes(r.names[i])
                if pos >= n:  # fields added to the type after the value was written
                    self.put(b"null", 4)
                    continue
                pos = self.put_item(items[i], p, n, pos)
                if pos < 0:
                    return False
            self.put_char(b"]" if shape == TUPLE else b"}")
            return pos == n
        count = be_int(p, 4)
        if count < 0 or count > (n - 4) // (4 if shape == SEQUENCE else 8):
            return False
        first = items[0]
        second = items[1] if shape != SEQUENCE else None
        if shape == OBJECT and count > 1:
            keys = set()
        self.put_char(b"{" if shape == OBJECT else b"[")
        pos = 4
        for i in range(count):
            if i:
                self.put_char(b",")
            if shape == PAIRS:
                self.put_char(b"[")
            if pos + 4 > n:
                return False
            size = be_int(p + pos, 4)
            pos += 4
            if size < 0:
                if shape == OBJECT:
                    return False  # a null key: orjson refuses it
                self.put(b"null", 4)
            elif size > n - pos:
                return False
            else:
                if keys is not None:
                    key = PyBytes_FromStringAndSize(<const char*>p + pos, size)
                    if key in keys:
                        return False  # a repeated key: the dict keeps one
                    keys.add(key)
                self.put_raw(first, p + pos, size, None)
                pos += size
            if shape == SEQUENCE:
                continue
            self.put_char(b":" if shape == OBJECT else b",")
            pos = self.put_item(second, p, n, pos)
            if pos < 0:
                return False
            if shape == PAIRS:
                self.put_char(b"]")
        self.put_char(b"}" if shape == OBJECT else b"]")
        return pos == n

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
        partition_key = read(event, EVENT_PARTITION_KEY)
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
                self.put_value(c.value, raw)
                self.convert(c, raw)
            prefix = self.take(0)
            self.partitions[pk] = prefix
        clustering = read(event, EVENT_CLUSTERING)
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
            self.put_value(c.value, raw)
            self.convert(c, raw)
        self.put_char(b"}")
        return self.take(0)

    cdef int put_cell(self, ColumnRender c, cell) except -1:
        """A cell of a non-frozen collection or UDT as ``TableCodec._complex_entry`` renders it, and
        its screening conversion. 0 (nothing written) for what that renders or refuses itself: a
        missing or irregular path, a set cell with a value, anything the Python renderers refuse."""
        cdef Py_ssize_t start = self.len
        cdef int done
        path, value = read(cell, CELL_PATH), read(cell, CELL_VALUE)
        if type(path) is not bytes or not (value is None or type(value) is bytes):
            return 0
        try:
            done = self.put_element(c, cell, path, value)
        except Exception:  # _complex_entry raises it again, as the Python path did
            done = 0
        if not done:
            self.len = start
            return 0
        kind = read(cell, CELL_KIND)
        if value is not None and (kind == SET_KIND or kind == COUNTER_KIND):
            self.screen_element(c, path, value, start)
        return 1

    cdef int screen_element(self, ColumnRender c, bytes path, bytes value, Py_ssize_t start) except -1:
        """Screens a written element as the state rows will convert it (``elements_target``), once per
        element and batch: the outcome depends on the element's bytes only (a list element on its
        value: its 16-byte path only orders it; a set element on its path). A column converted to
        JSON needs no conversion while the element's JSON (the entry at ``start``) has no U+0000:
        the converter builds its text from the very renderings of the element (``fast_jsonb`` /
        ``to_json``), which succeeded here, and refuses U+0000 only."""
        if c.json_elements and not has_nul_json(self.buf + start, self.len - start):
            return 0
        key = value if c.cells == LIST_CELLS else path if c.cells == SET_CELLS else (path, value)
        seen = <set>self.screened.get(c.name)
        if seen is None:
            seen = self.screened[c.name] = set()
        if key not in seen:
            c.elements_target([(path, value)])
            seen.add(key)
        return 0

    cdef int put_element(self, ColumnRender c, cell, bytes path, object value) except -1:
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(path)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
        cdef Py_ssize_t index = 0
        cdef int cells = c.cells
        self.put_bytes(c.entry_head)
        self.put_bytes(self.table.kinds[read(cell, CELL_KIND)])
        self.put(b',"ts":', 6)
        self.put_number(read(cell, CELL_TS))
        self.put(b',"path":', 8)
        if cells == LIST_CELLS:
            if n != 16:
                return 0
            self.reserve(38)
            put_uuid(self.buf + self.len, p)
            self.len += 38
        elif cells == UDT_CELLS:
            if n != 2:
                return 0
            index = be_int(p, 2)
            if not 0 <= index < len(c.fields):
                return 0
            self.put_bytes(c.fields[index])
        else:
            self.put_raw(c.path, p, n, path)
        if value is not None:
            self.put(b',"value":', 9)
            if cells == SET_CELLS:
                if PyBytes_GET_SIZE(value):
                    return 0  # set cells carry no value: the Python path raises
                self.put(b"null", 4)
            else:
                if cells == MAP_CELLS:
                    index = 1
                self.put_value(c.items[index], value)
        self.put_expiry(cell)
        self.put_char(b"}")
        return 1

    cdef int put_expiry(self, cell) except -1:
        """An expiring cell's ``"ttl"`` and ``"expires_at"`` (nothing for a cell that does not expire)."""
        ttl = read(cell, CELL_TTL)
        if ttl:
            self.put(b',"ttl":', 7)
            self.put_number(ttl)
            self.put(b',"expires_at":', 14)
            self.put_number(read(cell, CELL_EXPIRES_AT))
        return 0

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
            column = read(cell, CELL_COLUMN)
            c = table.columns.get(column)
            if c is not None and (read(cell, CELL_PATH) is not None or c.is_complex):
                if c.cells and self.put_cell(c, cell):
                    continue
                entry = table.complex_entry(c.codec, cell)
                ttl = read(cell, CELL_TTL)
                if ttl:
                    entry["ttl"], entry["expires_at"] = ttl, read(cell, CELL_EXPIRES_AT)
                self.put_bytes(dumps(entry))
                continue
            if c is None:
                self.put(b'{"col":', 7)
                self.put_bytes(dumps(column))
                self.put(b',"kind":', 8)
            else:
                self.put_bytes(c.entry_head)
            kind = read(cell, CELL_KIND)
            self.put_bytes(table.kinds[kind])
            self.put(b',"ts":', 6)
            self.put_number(read(cell, CELL_TS))
            value = read(cell, CELL_VALUE)
            if c is not None and value is not None:
                self.put(b',"value":', 9)
                self.put_value(c.value, value)
                if kind == SET_KIND:
                    self.convert(c, value)
            self.put_expiry(cell)
            self.put_char(b"}")
        self.put_char(b"]")
        return self.take(0)

    cdef object range_json(self, event):
        """``TableCodec.range_json``: a range deletion's bounds, each clustering value rendered as in
        the key (a truncation's record, and flags that are not booleans, by the Python method)."""
        start, end, op = read(event, EVENT_RANGE_START), read(event, EVENT_RANGE_END), read(event, EVENT_OP)
        if start is None and end is None and op != TRUNCATE_OP:
            return None
        start_inclusive, end_inclusive = read(event, EVENT_RANGE_START_INCLUSIVE), read(event, EVENT_RANGE_END_INCLUSIVE)
        if op == TRUNCATE_OP or type(start_inclusive) is not bool or type(end_inclusive) is not bool:
            return self.table.range_json(event)
        self.len = 0
        self.put(b'{"start":', 9)
        self.put_bound(start)
        self.put(b',"start_inclusive":', 19)
        self.put_bool(start_inclusive)
        self.put(b',"end":', 7)
        self.put_bound(end)
        self.put(b',"end_inclusive":', 17)
        self.put_bool(end_inclusive)
        self.put_char(b"}")
        return self.take(0)

    cdef int put_bound(self, values) except -1:
        cdef list clustering = self.table.clustering
        cdef Py_ssize_t i
        self.put_char(b"[")
        if values:
            for i in range(min(len(clustering), len(values))):
                if i:
                    self.put_char(b",")
                raw = values[i]
                if raw is None:
                    self.put(b"null", 4)
                else:
                    self.put_value((<ColumnRender>clustering[i]).value, raw)
        return self.put_char(b"]")

    cdef inline int put_bool(self, bint value) except -1:
        if value:
            return self.put(b"true", 4)
        return self.put(b"false", 5)

    def row(self, event):
        """The event's change-log row: ``record(event_id, op, ts, segment_id, position, source, key
        JSON, cells JSON, deletion_ts, range JSON)``."""
        key = self.key_json(event)
        cells = self.cells_json(read(event, EVENT_CELLS))
        range_ = self.range_json(event)
        return self.record(
            read(event, EVENT_EVENT_ID),
            read(event, EVENT_OP),
            read(event, EVENT_TS),
            read(event, EVENT_SEGMENT_ID),
            read(event, EVENT_POSITION),
            self.source,
            key,
            cells,
            read(event, EVENT_DELETION_TS),
            range_,
        )


cdef bint valid_utf8(const uint8_t* p, Py_ssize_t n) noexcept:
    """Well-formed UTF-8 (the Unicode standard's table 3-7: no overlong forms, no surrogates, nothing
    beyond U+10FFFF), which is what Python's strict decoder takes: then orjson writes the text as
    these very bytes."""
    cdef Py_ssize_t i = 0, j, extra
    cdef uint8_t b, low, high
    while i < n:
        b = p[i]
        if b < 0x80:
            i += 1
            continue
        low, high = 0x80, 0xBF  # the second byte's range
        if 0xC2 <= b <= 0xDF:
            extra = 1
        elif 0xE0 <= b <= 0xEF:
            extra = 2
            if b == 0xE0:
                low = 0xA0
            elif b == 0xED:
                high = 0x9F
        elif 0xF0 <= b <= 0xF4:
            extra = 3
            if b == 0xF0:
                low = 0x90
            elif b == 0xF4:
                high = 0x8F
        else:
            return False
        if i + extra >= n or not low <= p[i + 1] <= high:
            return False
        for j in range(2, extra + 1):
            if not 0x80 <= p[i + j] <= 0xBF:
                return False
        i += extra + 1
    return True


cdef Py_ssize_t read_svint(const uint8_t* p, Py_ssize_t n, Py_ssize_t pos, int64_t* out) noexcept:
    """The zig-zag signed vint at ``pos`` (cdcfast.values.vint.read_svint): the position after it,
    or -1 if the bytes end first."""
    cdef int extra = 0, i
    cdef uint64_t u
    if pos >= n:
        return -1
    while extra < 8 and p[pos] & (0x80 >> extra):
        extra += 1
    if pos + 1 + extra > n:
        return -1
    u = p[pos] & (0xFF >> extra)
    for i in range(extra):
        u = (u << 8) | p[pos + 1 + i]
    out[0] = <int64_t>(u >> 1) ^ -<int64_t>(u & 1)
    return pos + 1 + extra


cdef bint has_nul_json(const char* p, Py_ssize_t n) noexcept:
    """``\\u0000`` somewhere in the ``n`` bytes at ``p``."""
    cdef Py_ssize_t i
    for i in range(n - 5):
        if p[i] == b"\\" and memcmp(p + i, b"\\u0000", 6) == 0:
            return True
    return False


cdef inline bint ipv4_mapped(const uint8_t* p) noexcept:
    """::ffff:a.b.c.d"""
    cdef int i
    for i in range(10):
        if p[i]:
            return False
    return p[10] == 0xFF and p[11] == 0xFF


cdef int put_ipv6(char* out, const uint8_t* p) noexcept:
    """``str(ipaddress.IPv6Address)`` quoted (at most 41 bytes; gives the length): groups in lowercase
    hex without leading zeros, the first longest run of two or more zero groups as ``::``."""
    cdef int groups[8]
    cdef int i, o = 0, run = 0, best = 0, best_start = -1, g, shift
    cdef bint started
    for i in range(8):
        groups[i] = (p[2 * i] << 8) | p[2 * i + 1]
        if groups[i] == 0:
            run += 1
            if run > best:
                best, best_start = run, i - run + 1
        else:
            run = 0
    if best < 2:
        best_start = -1
    out[o] = b'"'
    o += 1
    i = 0
    while i < 8:
        if i == best_start:
            out[o] = b":"
            out[o + 1] = b":"
            o += 2
            i += best
            continue
        if i and i != best_start + best:  # no colon right after the "::"
            out[o] = b":"
            o += 1
        g = groups[i]
        started = False
        for shift in (12, 8, 4, 0):
            if started or (g >> shift) & 15 or shift == 0:
                out[o] = HEX[(g >> shift) & 15]
                o += 1
                started = True
        i += 1
    out[o] = b'"'
    return o + 1


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
