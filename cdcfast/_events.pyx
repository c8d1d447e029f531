# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Change events built straight from the decoder's records: the hot path of ``events_from_batch``.

The same events as the Python path (``cdcfast.events.events_from_batch_python``), field for field
and in the same order, at a fraction of its cost: records are read as C structs (no numpy scalar
or tuple per row and cell), the only Python objects made are the ones the events hold, and the
content id is computed without building its identity tuple: the identity is written as msgpack
into a reused C buffer, byte for byte what ``msgspec.msgpack.encode`` makes of the tuple that
``cdcfast.events.content_id`` hashes, and hashed with BLAKE2b in C (``_blake2b.h``). The ids are a
contract (replicas and re-reads must agree): tests/events/test_compiled_events.py holds the two
paths equal on every corpus and on generated workloads of every operation.

System.local partitions (truncation records, rare) go back to the Python path.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.stdint cimport INT64_MIN, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from cdcfast._commitlog cimport (
    C_COMPLEX_DELETION,
    C_COUNTER,
    C_HAS_PATH,
    C_TOMBSTONE,
    K_STATIC_ROW,
    R_DELETED,
    R_EXPIRING,
    R_HAS_LIVENESS,
    CellRec,
    PartitionRec,
    RowRec,
    ValueRec,
)

import struct

import msgspec
import numpy

cdef extern from "Python.h":
    int PyGC_Enable()
    int PyGC_Disable()
    void PyObject_GC_UnTrack(object)

cdef extern from "_blake2b.h" nogil:
    void cdcfast_blake2b_16(const uint8_t* data, size_t n, uint8_t* out)

cdef enum:
    NIL = 0xc0
    FALSE = 0xc2
    TRUE = 0xc3

# Cell kinds (cdcfast.events SET, TOMBSTONE, CLEAR, COUNTER)
cdef enum:
    KIND_SET = 0
    KIND_TOMBSTONE = 1
    KIND_CLEAR = 2
    KIND_COUNTER = 3

# Range tombstone bounds (Cassandra's ClusteringPrefix.Kind ordinals): which open a range, which
# close one, and whether the bound is inclusive. -1: not a bound of that side.
cdef int START_INCLUSIVE[8]
cdef int END_INCLUSIVE[8]
START_INCLUSIVE[:] = [-1, 1, 1, -1, -1, 0, -1, 0]  # 1: INCL_START, 7: EXCL_START, 2 and 5: boundaries
END_INCLUSIVE[:] = [0, -1, 0, -1, -1, 1, 1, -1]    # 6: INCL_END, 0: EXCL_END, 2 and 5: boundaries


# -- msgpack, as msgspec writes it (smallest form of each int, bin8/16/32, fixarray/array16/32) --

cdef struct Out:
    uint8_t* data
    size_t len
    size_t cap


cdef int out_reserve(Out* o, size_t extra) except -1:
    cdef size_t cap
    cdef uint8_t* grown
    if o.len + extra <= o.cap:
        return 0
    cap = o.cap * 2 if o.cap else 4096
    while cap < o.len + extra:
        cap *= 2
    grown = <uint8_t*>realloc(o.data, cap)
    if grown == NULL:
        raise MemoryError()
    o.data = grown
    o.cap = cap
    return 0


cdef inline void put_be(uint8_t* p, uint64_t x, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        p[i] = <uint8_t>(x >> (8 * (n - 1 - i)))


cdef inline int put_byte(Out* o, uint8_t b) except -1:
    out_reserve(o, 1)
    o.data[o.len] = b
    o.len += 1
    return 0


cdef inline int put_raw(Out* o, const uint8_t* p, size_t n) except -1:
    out_reserve(o, n)
    memcpy(o.data + o.len, p, n)
    o.len += n
    return 0


cdef inline int put_int(Out* o, int64_t x) except -1:
    cdef uint8_t* p
    out_reserve(o, 9)
    p = o.data + o.len
    if x >= 0:
        if x < 128:
            p[0] = <uint8_t>x
            o.len += 1
        elif x < 0x100:
            p[0] = 0xcc
            p[1] = <uint8_t>x
            o.len += 2
        elif x < 0x10000:
            p[0] = 0xcd
            put_be(p + 1, <uint64_t>x, 2)
            o.len += 3
        elif x < 0x100000000:
            p[0] = 0xce
            put_be(p + 1, <uint64_t>x, 4)
            o.len += 5
        else:
            p[0] = 0xcf
            put_be(p + 1, <uint64_t>x, 8)
            o.len += 9
    elif x >= -32:
        p[0] = <uint8_t>(x & 0xff)
        o.len += 1
    elif x >= -0x80:
        p[0] = 0xd0
        p[1] = <uint8_t>(x & 0xff)
        o.len += 2
    elif x >= -0x8000:
        p[0] = 0xd1
        put_be(p + 1, <uint64_t>x, 2)
        o.len += 3
    elif x >= -0x80000000:
        p[0] = 0xd2
        put_be(p + 1, <uint64_t>x, 4)
        o.len += 5
    else:
        p[0] = 0xd3
        put_be(p + 1, <uint64_t>x, 8)
        o.len += 9
    return 0


cdef inline int put_bin(Out* o, const uint8_t* data, size_t n) except -1:
    out_reserve(o, n + 5)
    cdef uint8_t* p = o.data + o.len
    if n < 0x100:
        p[0] = 0xc4
        p[1] = <uint8_t>n
        o.len += 2
    elif n < 0x10000:
        p[0] = 0xc5
        put_be(p + 1, n, 2)
        o.len += 3
    else:
        p[0] = 0xc6
        put_be(p + 1, n, 4)
        o.len += 5
    memcpy(o.data + o.len, data, n)
    o.len += n
    return 0


cdef inline int put_array(Out* o, size_t n) except -1:
    out_reserve(o, 5)
    cdef uint8_t* p = o.data + o.len
    if n < 16:
        p[0] = <uint8_t>(0x90 | n)
        o.len += 1
    elif n < 0x10000:
        p[0] = 0xdc
        put_be(p + 1, n, 2)
        o.len += 3
    else:
        p[0] = 0xdd
        put_be(p + 1, n, 4)
        o.len += 5
    return 0


cdef inline int put_encoded(Out* o, bytes encoded) except -1:
    return put_raw(o, <const uint8_t*>PyBytes_AS_STRING(encoded), <size_t>PyBytes_GET_SIZE(encoded))


cdef inline int put_optional_int(Out* o, bint present, int64_t x) except -1:
    if present:
        return put_int(o, x)
    return put_byte(o, 0xc0)


# -- test hooks: the pieces against independent implementations ------------------------------

def blake2b_16(data: bytes) -> bytes:
    """BLAKE2b with a 16-byte digest, as ``hashlib.blake2b(data, digest_size=16).digest()``."""
    cdef uint8_t digest[16]
    cdcfast_blake2b_16(<const uint8_t*>PyBytes_AS_STRING(data), len(data), digest)
    return PyBytes_FromStringAndSize(<char*>digest, 16)


cdef bytes _finish(Out* o):
    result = PyBytes_FromStringAndSize(<char*>o.data, o.len)
    free(o.data)
    return result


def msgpack_int(int64_t x) -> bytes:
    cdef Out o = Out(NULL, 0, 0)
    put_int(&o, x)
    return _finish(&o)


def msgpack_bytes(data: bytes) -> bytes:
    cdef Out o = Out(NULL, 0, 0)
    put_bin(&o, <const uint8_t*>PyBytes_AS_STRING(data), len(data))
    return _finish(&o)


def msgpack_array_header(size_t n) -> bytes:
    cdef Out o = Out(NULL, 0, 0)
    put_array(&o, n)
    return _finish(&o)


# -- the builder -------------------------------------------------------------------------------

cdef class _Table:
    """What the builder needs of one table of a batch, computed once per batch."""
    cdef object keyspace, name
    cdef bytes identity_prefix     # msgpack of keyspace and table name
    cdef int n_key_parts
    cdef tuple column_names        # data_columns() names, by the decoder's column number
    cdef tuple column_names_packed
    cdef Py_ssize_t n_columns


cdef const uint8_t* records(object array, size_t itemsize, Py_ssize_t* count, object keep) except? NULL:
    """The raw records of one of the batch's numpy arrays (C-contiguous, the dtype of the struct)."""
    if array.dtype.itemsize != itemsize:
        raise ValueError(f"record size {array.dtype.itemsize} != {itemsize}: batch.py and _commitlog.pxd differ")
    count[0] = len(array)
    if count[0] == 0:
        return NULL
    cdef const uint8_t[::1] view = numpy.ascontiguousarray(array).view(numpy.uint8)
    keep.append(view)
    return &view[0]


cdef class EventBuilder:
    """Builds a batch's change events; made once (``cdcfast.events``) with the event types."""

    cdef object event_type, cell_type, truncations
    cdef object op_insert, op_update, op_delete, op_partition_delete, op_range_delete
    cdef bytes packed_insert, packed_update, packed_delete, packed_partition_delete, packed_range_delete
    cdef Out out       # the identity being written
    cdef Out key_out   # the partition key's part of it, once per partition
    cdef object empty_bytes

    def __cinit__(self):
        self.out = Out(NULL, 0, 0)
        self.key_out = Out(NULL, 0, 0)

    def __dealloc__(self):
        free(self.out.data)
        free(self.key_out.data)

    def __init__(self, event_type, cell_type, ops, truncations):
        """``ops``: the op strings (insert, update, delete, partition_delete, range_delete);
        ``truncations(batch, table_index, first_row, n_rows, common)``: the Python path's
        system.local handling."""
        self.event_type = event_type
        self.cell_type = cell_type
        self.truncations = truncations
        self.op_insert, self.op_update, self.op_delete, self.op_partition_delete, self.op_range_delete = ops
        pack = msgspec.msgpack.encode
        self.packed_insert = pack(self.op_insert)
        self.packed_update = pack(self.op_update)
        self.packed_delete = pack(self.op_delete)
        self.packed_partition_delete = pack(self.op_partition_delete)
        self.packed_range_delete = pack(self.op_range_delete)
        self.empty_bytes = b""

    cdef _Table table_info(self, batch, int index):
        table = batch.tables[index]
        cdef _Table t = _Table()
        t.keyspace = table.keyspace
        t.name = table.name
        t.identity_prefix = msgspec.msgpack.encode(table.keyspace) + msgspec.msgpack.encode(table.name)
        t.n_key_parts = len(table.partition_key)
        t.column_names = tuple(c.name for c in batch.data_columns(index))
        t.column_names_packed = tuple(msgspec.msgpack.encode(n) for n in t.column_names)
        t.n_columns = len(t.column_names)
        return t

    def build(self, batch, int local):
        """Every change in ``batch``, in commit log order, each with its content id (a list);
        ``local``: the index of system.local among ``batch.tables`` (-1: none).

        The cyclic garbage collector is paused meanwhile: the events make no reference cycles,
        and each of its passes would rescan every event still alive (the caller's earlier
        batches too): with it running, building took four times as long. Once resumed, it sees
        the batch's objects in one young-generation pass."""
        cdef int was_enabled = PyGC_Disable()
        try:
            return self._build(batch, local)
        finally:
            if was_enabled:
                PyGC_Enable()

    cdef list _build(self, batch, int local):
        cdef Py_ssize_t n_parts, n_rows_total, n_cells_total, n_values
        keep = []
        cdef const PartitionRec* parts = <const PartitionRec*>records(
            batch.partitions, sizeof(PartitionRec), &n_parts, keep)
        cdef const RowRec* rows = <const RowRec*>records(batch.rows, sizeof(RowRec), &n_rows_total, keep)
        cdef const CellRec* cells = <const CellRec*>records(batch.cells, sizeof(CellRec), &n_cells_total, keep)
        cdef const ValueRec* values = <const ValueRec*>records(batch.values, sizeof(ValueRec), &n_values, keep)
        cdef bytes arena = batch.arena
        cdef const uint8_t* base = <const uint8_t*>PyBytes_AS_STRING(arena)
        cdef Py_ssize_t arena_len = PyBytes_GET_SIZE(arena)
        cdef list events = []
        cdef list tables = [None] * len(batch.tables)
        cdef _Table t
        cdef const PartitionRec* p
        cdef const RowRec* r
        cdef Py_ssize_t i, j, row_index, first, last
        cdef int bound, open_inclusive
        cdef Py_ssize_t open_first = 0, open_count = 0
        cdef list key, clustering, open_clustering

        for i in range(n_parts):
            p = &parts[i]
            if p.table == local:
                events.extend(self.truncations(
                    batch, local, p.first_row, p.n_rows, {"segment_id": p.segment_id, "position": p.position}))
                continue
            if p.table < 0 or p.table >= len(tables):
                raise IndexError(f"partition record {i}: table index {p.table} out of range")
            t = tables[p.table]
            if t is None:
                t = tables[p.table] = self.table_info(batch, p.table)
            check_range(p.pk_off, p.pk_len, arena_len, "partition key")
            key = self.partition_key(t, base + p.pk_off, p.pk_len)
            segment_id = p.segment_id
            position = p.position

            if p.pdel_ts != INT64_MIN:
                self.begin(t, self.packed_partition_delete)
                put_array(&self.out, 0)  # clustering
                put_byte(&self.out, FALSE)  # static
                put_int(&self.out, p.pdel_ts)  # deletion_ts
                self.out_tail_no_range(False, 0, 0)
                put_array(&self.out, 0)  # cells
                events.append(self.event_type(
                    self.digest(), t.keyspace, t.name, self.op_partition_delete, key, untracked_list(), p.pdel_ts, untracked_list(), False,
                    p.pdel_ts, p.pdel_ldt, None, 0, 0, None, True, None, True, segment_id, position))

            open_clustering = None
            open_inclusive = 0
            first = -1 if p.static_row >= 0 else 0  # the static row first, then the others
            for j in range(first, p.n_rows):
                row_index = p.static_row if j < 0 else p.first_row + j
                if row_index < 0 or row_index >= n_rows_total:
                    raise IndexError(f"partition record {i}: row {row_index} out of range")
                r = &rows[row_index]
                if r.first_clustering < 0 or r.n_clustering < 0 or r.first_clustering + r.n_clustering > n_values:
                    raise IndexError(f"row record {row_index}: clustering values out of range")
                clustering = clustering_values(values + r.first_clustering, r.n_clustering, base, arena_len)
                if r.kind >= 2:  # range tombstone markers: pair each opening with its closing
                    bound = r.bound_kind if r.bound_kind < 8 else 3
                    if open_clustering is not None and END_INCLUSIVE[bound] >= 0:
                        self.begin(t, self.packed_range_delete)
                        put_array(&self.out, 0)  # clustering
                        put_byte(&self.out, FALSE)  # static
                        put_int(&self.out, r.del_ts)  # deletion_ts
                        put_byte(&self.out, NIL)  # liveness_ts
                        put_int(&self.out, 0)  # liveness_ttl
                        put_clustering(&self.out, values + open_first, open_count, base)
                        put_byte(&self.out, TRUE if open_inclusive else FALSE)
                        put_clustering(&self.out, values + r.first_clustering, r.n_clustering, base)
                        put_byte(&self.out, TRUE if END_INCLUSIVE[bound] else FALSE)
                        put_array(&self.out, 0)  # cells
                        events.append(self.event_type(
                            self.digest(), t.keyspace, t.name, self.op_range_delete, key, untracked_list(), r.del_ts, untracked_list(), False,
                            r.del_ts, r.del_ldt, None, 0, 0, open_clustering, bool(open_inclusive), clustering,
                            bool(END_INCLUSIVE[bound]), segment_id, position))
                        open_clustering = None
                    if START_INCLUSIVE[bound] >= 0:  # a boundary closes one range and opens the next
                        open_clustering = clustering
                        open_inclusive = START_INCLUSIVE[bound]
                        open_first = r.first_clustering
                        open_count = r.n_clustering
                    continue
                events.append(self.row_event(
                    t, r, row_index, cells, n_cells_total, values, base, arena_len, key, clustering,
                    segment_id, position))
        return events

    cdef list partition_key(self, _Table t, const uint8_t* key, Py_ssize_t length):
        """The key's components, and their msgpack in ``key_out``; composite keys are
        (u16 length, bytes, 0x00) per component."""
        cdef Py_ssize_t offset = 0, start, end, size
        cdef int k
        self.key_out.len = 0
        if t.n_key_parts <= 1:
            put_array(&self.key_out, 1)
            put_bin(&self.key_out, key, length)
            parts = [PyBytes_FromStringAndSize(<const char*>key, length)]
            PyObject_GC_UnTrack(parts)
            return parts
        parts = []
        PyObject_GC_UnTrack(parts)
        put_array(&self.key_out, t.n_key_parts)
        for k in range(t.n_key_parts):
            if offset + 2 > length:
                raise struct.error(
                    f"{t.keyspace}.{t.name}: composite partition key of {length} bytes ends before component {k}")
            size = (key[offset] << 8) | key[offset + 1]
            start = offset + 2
            end = start + size if start + size <= length else length
            parts.append(PyBytes_FromStringAndSize(<const char*>key + start, end - start))
            put_bin(&self.key_out, key + start, end - start)
            offset += 3 + size
        return parts

    cdef int begin(self, _Table t, bytes packed_op) except -1:
        """Starts an identity: the 14-item array, keyspace, table, op, partition key."""
        self.out.len = 0
        put_array(&self.out, 14)
        put_encoded(&self.out, t.identity_prefix)
        put_encoded(&self.out, packed_op)
        put_raw(&self.out, self.key_out.data, self.key_out.len)
        return 0

    cdef int out_tail_no_range(self, bint has_liveness, int64_t liveness_ts, int64_t liveness_ttl) except -1:
        """liveness_ts, liveness_ttl and no range (None, True, None, True)."""
        put_optional_int(&self.out, has_liveness, liveness_ts)
        put_int(&self.out, liveness_ttl)
        put_byte(&self.out, NIL)
        put_byte(&self.out, TRUE)
        put_byte(&self.out, NIL)
        put_byte(&self.out, TRUE)
        return 0

    cdef bytes digest(self):
        cdef uint8_t digest[16]
        cdcfast_blake2b_16(self.out.data, self.out.len, digest)
        return PyBytes_FromStringAndSize(<char*>digest, 16)

    cdef object row_event(self, _Table t, const RowRec* r, Py_ssize_t row_index, const CellRec* cells,
                          Py_ssize_t n_cells_total, const ValueRec* values, const uint8_t* base,
                          Py_ssize_t arena_len, list key, list clustering, object segment_id, object position):
        cdef bint static = r.kind == K_STATIC_ROW
        cdef bint live = r.flags & R_HAS_LIVENESS
        cdef bint expiring = live and (r.flags & R_EXPIRING)
        cdef bint deleted = r.flags & R_DELETED
        cdef int64_t newest = INT64_MIN
        cdef int64_t live_ttl = r.live_ttl if expiring else 0
        cdef Py_ssize_t n = r.n_cells, k
        cdef const CellRec* c
        cdef int kind
        cdef bytes op_packed
        cdef int32_t value_len
        cdef int64_t last_ts = INT64_MIN
        ts = None  # the Python int of last_ts: a row's cells nearly always share one timestamp
        cdef tuple names = t.column_names, packed_names = t.column_names_packed
        if r.first_cell < 0 or n < 0 or r.first_cell + n > n_cells_total:
            raise IndexError(f"row record {row_index}: cells out of range")
        if live:
            op, op_packed = self.op_insert, self.packed_insert
        elif deleted and n == 0:
            op, op_packed = self.op_delete, self.packed_delete
        else:
            op, op_packed = self.op_update, self.packed_update
        self.begin(t, op_packed)
        if static:
            put_array(&self.out, 0)
        else:
            put_clustering(&self.out, values + r.first_clustering, r.n_clustering, base)
        put_byte(&self.out, TRUE if static else FALSE)
        put_optional_int(&self.out, deleted, r.del_ts)
        self.out_tail_no_range(live, r.live_ts, live_ttl)

        put_array(&self.out, n)
        cell_list = PyList_New(n)
        PyObject_GC_UnTrack(cell_list)
        for k in range(n):
            c = &cells[r.first_cell + k]
            if c.column < 0 or c.column >= t.n_columns:
                raise IndexError(
                    f"{t.keyspace}.{t.name}: cell column {c.column} not among its {t.n_columns} data columns")
            name = names[c.column]
            if c.ts > newest:
                newest = c.ts
            if ts is None or c.ts != last_ts:
                last_ts = c.ts
                ts = c.ts
            put_byte(&self.out, 0x96)  # (column, kind, ts, value, path, ttl)
            put_encoded(&self.out, <bytes>packed_names[c.column])
            if c.flags & C_COMPLEX_DELETION:
                put_int(&self.out, KIND_CLEAR)
                put_int(&self.out, c.ts)
                put_byte(&self.out, NIL)
                put_byte(&self.out, NIL)
                put_int(&self.out, 0)
                cell = self.cell_type(name, KIND_CLEAR, ts)
            else:
                if c.flags & C_HAS_PATH:
                    check_range(c.path_off, c.path_len, arena_len, "cell path")
                    path = PyBytes_FromStringAndSize(<const char*>base + c.path_off, c.path_len)
                else:
                    path = None
                if c.flags & C_TOMBSTONE:
                    put_int(&self.out, KIND_TOMBSTONE)
                    put_int(&self.out, c.ts)
                    put_byte(&self.out, NIL)
                    put_path(&self.out, c, base)
                    put_int(&self.out, 0)
                    cell = self.cell_type(name, KIND_TOMBSTONE, ts, None, path)
                else:
                    kind = KIND_COUNTER if c.flags & C_COUNTER else KIND_SET
                    value_len = c.value_len if c.value_len > 0 else 0  # the Python path's slice of a -1
                    check_range(c.value_off, value_len, arena_len, "cell value")
                    put_int(&self.out, kind)
                    put_int(&self.out, c.ts)
                    put_bin(&self.out, base + c.value_off, value_len)
                    put_path(&self.out, c, base)
                    put_int(&self.out, c.ttl)
                    value = PyBytes_FromStringAndSize(<const char*>base + c.value_off, value_len)
                    cell = self.cell_type(name, kind, ts, value, path, c.ttl, c.ldt if c.ttl else 0)
            Py_INCREF(cell)
            PyList_SET_ITEM(cell_list, k, cell)

        if live and r.live_ts > newest:
            newest = r.live_ts
        if deleted and r.del_ts > newest:
            newest = r.del_ts
        if ts is None or newest != last_ts:
            ts = newest
        return self.event_type(
            self.digest(), t.keyspace, t.name, op, key, untracked_list() if static else clustering, ts, cell_list, static,
            r.del_ts if deleted else None, r.del_ldt if deleted else None,
            r.live_ts if live else None, live_ttl, r.live_ldt if expiring else 0,
            None, True, None, True, segment_id, position)


cdef inline list untracked_list():
    cdef list out = []
    PyObject_GC_UnTrack(out)
    return out


cdef inline int check_range(int64_t off, int64_t length, Py_ssize_t arena_len, str what) except -1:
    if off < 0 or length < 0 or off + length > arena_len:
        raise IndexError(f"{what} at {off}+{length} outside the batch's {arena_len}-byte arena")
    return 0


cdef inline int put_path(Out* o, const CellRec* c, const uint8_t* base) except -1:
    if c.flags & C_HAS_PATH:
        return put_bin(o, base + c.path_off, c.path_len)
    return put_byte(o, NIL)


cdef list clustering_values(const ValueRec* v, Py_ssize_t n, const uint8_t* base, Py_ssize_t arena_len):
    cdef list out = PyList_New(n)
    cdef Py_ssize_t k
    PyObject_GC_UnTrack(out)
    for k in range(n):
        if v[k].len < 0:
            item = None
        else:
            check_range(v[k].off, v[k].len, arena_len, "clustering value")
            item = PyBytes_FromStringAndSize(<const char*>base + v[k].off, v[k].len)
        Py_INCREF(item)
        PyList_SET_ITEM(out, k, item)
    return out


cdef int put_clustering(Out* o, const ValueRec* v, Py_ssize_t n, const uint8_t* base) except -1:
    """Values already range-checked by clustering_values."""
    cdef Py_ssize_t k
    put_array(o, n)
    for k in range(n):
        if v[k].len < 0:
            put_byte(o, NIL)
        else:
            put_bin(o, base + v[k].off, v[k].len)
    return 0
