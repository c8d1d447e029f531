# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The hot path: commit log entry framing, CRCs and mutation decoding into columnar records.

Everything here works on raw bytes with C arithmetic; nothing allocates a Python object per
cell. Python code (cdcfast/commitlog/) finds segments, reads headers and idx files, decompresses
sections and turns the records into whatever the caller needs.

Byte layout: ../shared/reference/cassandra-commitlog-format.md (sections cited as §n).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t, INT64_MIN
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

cdef extern from "_crc32.h" nogil:
    void cdcfast_crc_init()
    uint32_t cdcfast_crc_update(uint32_t state, const uint8_t* p, size_t n)
    uint32_t cdcfast_crc_bytes(uint32_t state, const uint8_t* p, size_t n)

cdcfast_crc_init()

# -- constants (format reference §4) ---------------------------------------------------------
DEF TIMESTAMP_EPOCH = 1442880000000000
DEF DELETION_TIME_EPOCH = 1442880000
DEF MAX_COLUMNS = 4096
DEF NO_LDT = 0x7FFFFFFFFFFFFFFF   # "no local deletion time" in the records

cdef enum:
    PF_IS_EMPTY = 0x01
    PF_HAS_PARTITION_DELETION = 0x04
    PF_HAS_STATIC_ROW = 0x08
    PF_HAS_ROW_ESTIMATE = 0x10

    UF_END_OF_PARTITION = 0x01
    UF_IS_MARKER = 0x02
    UF_HAS_TIMESTAMP = 0x04
    UF_HAS_TTL = 0x08
    UF_HAS_DELETION = 0x10
    UF_HAS_ALL_COLUMNS = 0x20
    UF_HAS_COMPLEX_DELETION = 0x40
    UF_EXTENSION = 0x80
    UX_IS_STATIC = 0x01
    UX_HAS_SHADOWABLE_DELETION = 0x02

    CF_IS_DELETED = 0x01
    CF_IS_EXPIRING = 0x02
    CF_HAS_EMPTY_VALUE = 0x04
    CF_USE_ROW_TIMESTAMP = 0x08
    CF_USE_ROW_TTL = 0x10

# Record kinds and flags (K_*, R_*, C_*): declared in _commitlog.pxd, shared with _events.pyx.
ROW, STATIC_ROW, RT_BOUND, RT_BOUNDARY = K_ROW, K_STATIC_ROW, K_RT_BOUND, K_RT_BOUNDARY

# Decode error codes -> messages (the Python side adds file, segment, position and table).
cdef enum:
    E_OK = 0
    E_TRUNCATED = 1
    E_UNKNOWN_TABLE = 2
    E_UNKNOWN_COLUMN = 3
    E_BAD_FLAGS = 4
    E_TOO_MANY_COLUMNS = 5
    E_BAD_SUBSET = 6
    E_BAD_MARKER = 7
    E_TRAILING_BYTES = 8
    E_BAD_LENGTH = 9
    E_NO_MEMORY = 10

ERROR_MESSAGES = {
    E_TRUNCATED: "mutation ends before its data does",
    E_UNKNOWN_TABLE: "unknown table id",
    E_UNKNOWN_COLUMN: "column not in the schema (not even as a dropped column)",
    E_BAD_FLAGS: "invalid flags byte",
    E_TOO_MANY_COLUMNS: "column list longer than any table can have",
    E_BAD_SUBSET: "invalid column subset encoding",
    E_BAD_MARKER: "invalid range tombstone marker",
    E_TRAILING_BYTES: "mutation has bytes left over after its last partition update",
    E_BAD_LENGTH: "value length out of range",
    E_NO_MEMORY: "out of memory",
}

cdef inline uint32_t be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline uint32_t crc_of_int(uint32_t state, uint32_t value) noexcept nogil:
    """Feed a 32-bit value, big-endian, into a raw CRC state (FBUtilities.updateChecksumInt)."""
    cdef uint8_t b[4]
    b[0] = value >> 24
    b[1] = value >> 16
    b[2] = value >> 8
    b[3] = value
    return cdcfast_crc_bytes(state, b, 4)


def marker_crc(int64_t segment_id, uint32_t marker_offset):
    """CRC of a sync marker: the segment id's low and high words, then the marker's own offset."""
    cdef uint32_t state = 0xFFFFFFFF
    state = crc_of_int(state, <uint32_t>(<uint64_t>segment_id & 0xFFFFFFFF))
    state = crc_of_int(state, <uint32_t>(<uint64_t>segment_id >> 32))
    return ~crc_of_int(state, marker_offset) & 0xFFFFFFFF


def crc_of(data, uint32_t crc=0):
    """zlib/java.util.zip CRC-32 of a bytes-like object (continuing from ``crc``)."""
    cdef const uint8_t[::1] view = data
    cdef Py_ssize_t n = view.shape[0]
    cdef uint32_t state = ~crc
    if n:
        with nogil:
            state = cdcfast_crc_update(state, &view[0], n)
    return ~state & 0xFFFFFFFF


# -- growable record arrays ------------------------------------------------------------------
cdef struct Buf:
    char* data
    Py_ssize_t used      # in items
    Py_ssize_t cap       # in items
    Py_ssize_t item

cdef inline int buf_reserve(Buf* b, Py_ssize_t extra) noexcept nogil:
    cdef Py_ssize_t need = b.used + extra, cap
    cdef char* grown
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 1024
    while cap < need:
        cap *= 2
    grown = <char*>realloc(b.data, cap * b.item)
    if grown == NULL:
        return -1
    b.data = grown
    b.cap = cap
    return 0

cdef bytes buf_take(Buf* b):
    cdef bytes out = PyBytes_FromStringAndSize(b.data, b.used * b.item)
    b.used = 0
    return out


# -- cursor over one mutation ----------------------------------------------------------------
cdef struct Cursor:
    const uint8_t* p
    const uint8_t* end
    int err
    const uint8_t* err_at

cdef inline int fail(Cursor* c, int code) noexcept nogil:
    if c.err == E_OK:
        c.err = code
        c.err_at = c.p
    return -1

cdef inline int read_u8(Cursor* c, uint8_t* out) noexcept nogil:
    if c.p >= c.end:
        return fail(c, E_TRUNCATED)
    out[0] = c.p[0]
    c.p += 1
    return 0

cdef inline int read_uvint(Cursor* c, uint64_t* out) noexcept nogil:
    """Cassandra's unsigned vint (§5.1): leading one-bits of the first byte count extra bytes."""
    cdef uint8_t first
    cdef int extra, i
    cdef uint64_t v
    if c.p >= c.end:
        return fail(c, E_TRUNCATED)
    first = c.p[0]
    if first < 0x80:
        out[0] = first
        c.p += 1
        return 0
    extra = 0
    while extra < 8 and (first & (0x80 >> extra)):
        extra += 1
    if c.p + 1 + extra > c.end:
        return fail(c, E_TRUNCATED)
    v = first & (0xFF >> extra) if extra < 8 else 0
    for i in range(1, extra + 1):
        v = (v << 8) | c.p[i]
    c.p += 1 + extra
    out[0] = v
    return 0

cdef inline int skip_bytes(Cursor* c, uint64_t n) noexcept nogil:
    if n > <uint64_t>(c.end - c.p):
        return fail(c, E_TRUNCATED)
    c.p += n
    return 0


# -- schema, compiled for the decoder --------------------------------------------------------
cdef struct ColumnInfo:
    int32_t index          # position in TableDef.data_columns()
    int32_t fixed_len      # -1: length-prefixed
    uint8_t is_complex
    uint8_t is_counter
    int64_t dropped_at     # cells with ts <= dropped_at are ignored; INT64_MIN: never dropped
    uint64_t name_hash
    int32_t name_len
    const uint8_t* name

cdef struct TableInfo:
    uint64_t id_hi
    uint64_t id_lo
    int32_t n_clustering
    int32_t* clustering_fixed   # per clustering column: fixed length or -1
    int32_t n_columns
    ColumnInfo* columns
    int32_t* column_slots       # open-addressing table of column indexes by name hash, -1 empty
    int32_t slot_mask

cdef inline uint64_t fnv1a(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 1469598103934665603ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h

cdef inline uint64_t load_be64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>be32(p) << 32) | be32(p + 4)


cdef class DecoderSchema:
    """A Schema (cdcfast.commitlog.schema) laid out in C arrays for the decoder.

    ``tables`` lists the TableDef objects; record field ``table`` indexes it.
    """
    cdef TableInfo* infos
    cdef int32_t n_tables
    cdef int32_t* table_slots
    cdef int32_t table_mask
    cdef list _names        # keeps the column name bytes alive
    cdef readonly list tables

    def __cinit__(self):
        self.infos = NULL
        self.table_slots = NULL
        self.n_tables = 0

    def __init__(self, schema):
        cdef int32_t t, i, slots, slot
        cdef TableInfo* info
        cdef ColumnInfo* col
        cdef bytes name
        self.tables = list(schema.tables.values())
        self._names = []
        self.n_tables = len(self.tables)
        self.infos = <TableInfo*>malloc(sizeof(TableInfo) * max(1, self.n_tables))
        if self.infos == NULL:
            raise MemoryError()
        for t in range(self.n_tables):
            self.infos[t].clustering_fixed = NULL
            self.infos[t].columns = NULL
            self.infos[t].column_slots = NULL
        slots = 8
        while slots < 4 * self.n_tables:
            slots *= 2
        self.table_mask = slots - 1
        self.table_slots = <int32_t*>malloc(sizeof(int32_t) * slots)
        for i in range(slots):
            self.table_slots[i] = -1
        for t, table in enumerate(self.tables):
            info = &self.infos[t]
            raw = table.id.bytes
            info.id_hi = load_be64(<const uint8_t*><char*>raw)
            info.id_lo = load_be64((<const uint8_t*><char*>raw) + 8)
            slot = <int32_t>((info.id_hi ^ info.id_lo) & self.table_mask)
            while self.table_slots[slot] != -1:
                slot = (slot + 1) & self.table_mask
            self.table_slots[slot] = t
            info.n_clustering = len(table.clustering)
            info.clustering_fixed = <int32_t*>malloc(sizeof(int32_t) * max(1, info.n_clustering))
            for i, column in enumerate(table.clustering):
                info.clustering_fixed[i] = column.type.fixed_length
            data_columns = table.data_columns()
            info.n_columns = len(data_columns)
            info.columns = <ColumnInfo*>malloc(sizeof(ColumnInfo) * max(1, info.n_columns))
            slots = 8
            while slots < 4 * info.n_columns:
                slots *= 2
            info.slot_mask = slots - 1
            info.column_slots = <int32_t*>malloc(sizeof(int32_t) * slots)
            for i in range(slots):
                info.column_slots[i] = -1
            for i, column in enumerate(data_columns):
                col = &info.columns[i]
                name = column.name.encode("utf-8")
                self._names.append(name)
                col.index = i
                col.fixed_len = column.type.fixed_length
                col.is_complex = column.type.is_complex
                col.is_counter = column.type.is_counter
                col.dropped_at = column.dropped_at_us if column.dropped_at_us is not None else INT64_MIN
                col.name = <const uint8_t*><char*>name
                col.name_len = len(name)
                col.name_hash = fnv1a(col.name, col.name_len)
                slot = <int32_t>(col.name_hash & info.slot_mask)
                while info.column_slots[slot] != -1:
                    slot = (slot + 1) & info.slot_mask
                info.column_slots[slot] = i

    def __dealloc__(self):
        cdef int32_t t
        if self.infos != NULL:
            for t in range(self.n_tables):
                free(self.infos[t].clustering_fixed)
                free(self.infos[t].columns)
                free(self.infos[t].column_slots)
            free(self.infos)
        free(self.table_slots)

    cdef inline int32_t find_table(self, const uint8_t* raw) noexcept nogil:
        cdef uint64_t hi = load_be64(raw), lo = load_be64(raw + 8)
        cdef int32_t slot = <int32_t>((hi ^ lo) & self.table_mask), t
        while True:
            t = self.table_slots[slot]
            if t == -1:
                return -1
            if self.infos[t].id_hi == hi and self.infos[t].id_lo == lo:
                return t
            slot = (slot + 1) & self.table_mask


cdef inline ColumnInfo* find_column(TableInfo* info, const uint8_t* name, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = fnv1a(name, n)
    cdef int32_t slot = <int32_t>(h & info.slot_mask), i
    cdef ColumnInfo* col
    while True:
        i = info.column_slots[slot]
        if i == -1:
            return NULL
        col = &info.columns[i]
        if col.name_hash == h and col.name_len == n and memcmp(col.name, name, n) == 0:
            return col
        slot = (slot + 1) & info.slot_mask


# -- per partition update decoding state -----------------------------------------------------
cdef struct Stats:
    int64_t min_ts
    uint32_t min_ldt
    int32_t min_ttl
    bint unsigned_ldt      # messaging 13: local deletion times are unsigned 32-bit

cdef inline int read_ts(Cursor* c, Stats* s, int64_t* out) noexcept nogil:
    cdef uint64_t d
    if read_uvint(c, &d) < 0:
        return -1
    out[0] = <int64_t>(<uint64_t>s.min_ts + d)
    return 0

cdef inline int64_t ldt_value(Stats* s, uint32_t raw) noexcept nogil:
    if s.unsigned_ldt:
        return <int64_t>raw
    return <int64_t><int32_t>raw

cdef inline int read_ldt(Cursor* c, Stats* s, int64_t* out) noexcept nogil:
    cdef uint64_t d
    if read_uvint(c, &d) < 0:
        return -1
    out[0] = ldt_value(s, <uint32_t>(s.min_ldt + <uint32_t>d))
    return 0

cdef inline int read_ttl(Cursor* c, Stats* s, int32_t* out) noexcept nogil:
    cdef uint64_t d
    if read_uvint(c, &d) < 0:
        return -1
    out[0] = <int32_t>(<uint32_t>s.min_ttl + <uint32_t>d)
    return 0

cdef inline int read_deletion(Cursor* c, Stats* s, int64_t* ts, int64_t* ldt) noexcept nogil:
    if read_ts(c, s, ts) < 0:
        return -1
    return read_ldt(c, s, ldt)


cdef class Decoder:
    """Decodes the entries of data regions into a batch of records.

    ``decode_region`` appends; ``take`` hands the accumulated records over and starts afresh.
    Each failed entry or mutation becomes an issue tuple, and decoding goes on.
    """
    cdef DecoderSchema schema
    cdef Buf partitions, rows, cells, values
    cdef char* arena
    cdef Py_ssize_t arena_used, arena_cap
    cdef int32_t n_mutations
    cdef readonly list issues           # (kind, logical_offset, position, detail, table index or -1)
    cdef readonly dict unknown_tables   # table id bytes -> count
    cdef public bint verify_only        # framing and CRCs only: the framing benchmark
    cdef public int64_t mutation_bytes
    cdef public int64_t mutation_count
    cdef ColumnInfo* header_columns[MAX_COLUMNS]
    cdef ColumnInfo* static_columns[MAX_COLUMNS]
    cdef const uint8_t* _err_at         # where the last failed mutation went wrong
    cdef Py_ssize_t _err_offset
    cdef int32_t _err_table

    def __cinit__(self, DecoderSchema schema):
        self.schema = schema
        self.partitions.item = sizeof(PartitionRec)
        self.rows.item = sizeof(RowRec)
        self.cells.item = sizeof(CellRec)
        self.values.item = sizeof(ValueRec)
        self.partitions.data = self.rows.data = self.cells.data = self.values.data = NULL
        self.partitions.used = self.rows.used = self.cells.used = self.values.used = 0
        self.partitions.cap = self.rows.cap = self.cells.cap = self.values.cap = 0
        self.arena = NULL
        self.arena_used = self.arena_cap = 0
        self.issues = []
        self.unknown_tables = {}
        self.verify_only = False
        self.mutation_bytes = 0
        self.mutation_count = 0

    def __dealloc__(self):
        free(self.partitions.data)
        free(self.rows.data)
        free(self.cells.data)
        free(self.values.data)
        free(self.arena)

    @property
    def pending_mutations(self):
        return self.n_mutations

    @property
    def pending_bytes(self):
        return self.arena_used

    def take(self):
        """(partitions, rows, cells, values, arena) as bytes, and reset."""
        out = (
            buf_take(&self.partitions), buf_take(&self.rows), buf_take(&self.cells),
            buf_take(&self.values), PyBytes_FromStringAndSize(self.arena, self.arena_used),
        )
        self.arena_used = 0
        self.n_mutations = 0
        return out

    def take_issues(self):
        issues, self.issues = self.issues, []
        return issues

    def decode_region(self, data, Py_ssize_t start, Py_ssize_t end, int64_t logical_base,
                      int64_t segment_id, int version, int messaging, int64_t limit, int64_t after=0):
        """Decode the entries in ``data[start:end]`` (§3).

        ``logical_base`` is the logical position of ``data[0]``; entries ending past the logical
        ``limit`` (the durable offset) are left alone, and entries ending at or before ``after``
        (already delivered: a checkpoint) are stepped over undecoded. Returns (logical end of the last entry
        decoded or skipped, True when the region ended cleanly).
        """
        cdef const uint8_t[::1] view = data
        cdef const uint8_t* base = &view[0] if view.shape[0] else NULL
        cdef Py_ssize_t p = start, size
        cdef uint32_t crc, state
        cdef int64_t entry_end
        cdef int rc
        if end > view.shape[0] or start < 0:
            raise ValueError("region outside the buffer")
        while p < end:
            if end - p < 4:
                break
            size = <int32_t>be32(base + p)
            if size == 0:
                break  # zero padding: the legacy end-of-data marker
            if end - p < 8:
                self.issues.append(("entry", logical_base + p, -1, "entry header cut short", -1))
                return logical_base + p, False
            state = crc_of_int(0xFFFFFFFF, <uint32_t>size)
            crc = ~state
            if size < 10 or be32(base + p + 4) != crc:
                self.issues.append(("entry", logical_base + p, -1,
                                    f"invalid entry size {size} (size CRC {'ok' if be32(base + p + 4) == crc else 'mismatch'})",
                                    -1))
                return logical_base + p, False
            entry_end = logical_base + p + 12 + size
            if p + 12 + size > end:
                self.issues.append(("entry", logical_base + p, -1,
                                    f"entry of {size} bytes runs past the end of its section", -1))
                return logical_base + p, False
            if entry_end > limit:
                return logical_base + p, True
            if entry_end <= after:
                p += 12 + size
                continue
            # The mutation's CRC continues the size's (CRC2 covers size and body, §3).
            crc = ~cdcfast_crc_update(state, base + p + 8, size)
            if be32(base + p + 8 + size) != crc:
                self.issues.append(("crc", logical_base + p, entry_end,
                                    f"mutation checksum mismatch ({size} bytes): entry skipped", -1))
                p += 12 + size
                continue
            self.mutation_bytes += size
            self.mutation_count += 1
            if not self.verify_only:
                rc = self.decode_mutation(base + p + 8, size, segment_id, <int32_t>entry_end, version, messaging)
                if rc != E_OK:
                    self._report(rc, base + p + 8, logical_base + p, entry_end)
            p += 12 + size
        return logical_base + p, True

    cdef _report(self, int rc, const uint8_t* mutation, int64_t entry_offset, int64_t entry_end):
        detail_offset = self._err_offset
        if rc == E_UNKNOWN_TABLE:
            table_id = PyBytes_FromStringAndSize(<const char*>self._err_at, 16)
            self.unknown_tables[table_id] = self.unknown_tables.get(table_id, 0) + 1
            self.issues.append(("unknown_table", entry_offset, entry_end, table_id.hex(), -1))
        else:
            self.issues.append(("decode", entry_offset, entry_end,
                                f"{ERROR_MESSAGES.get(rc, rc)} at byte {detail_offset} of the mutation",
                                self._err_table))

    # -- mutation (§4.1) -------------------------------------------------------------------
    cdef int decode_mutation(self, const uint8_t* m, Py_ssize_t size, int64_t segment_id,
                             int32_t position, int version, int messaging) except? -99:
        cdef Cursor c
        cdef uint64_t n, i
        cdef Py_ssize_t saved_p = self.partitions.used, saved_r = self.rows.used
        cdef Py_ssize_t saved_c = self.cells.used, saved_v = self.values.used
        cdef Py_ssize_t saved_a = self.arena_used
        cdef int rc
        c.p = m
        c.end = m + size
        c.err = E_OK
        c.err_at = NULL
        self._err_table = -1
        if self.arena_used + size > self.arena_cap:
            if self._grow_arena(size) < 0:
                return E_NO_MEMORY
        memcpy(self.arena + self.arena_used, m, size)
        rc = E_OK
        if read_uvint(&c, &n) == 0:
            for i in range(n):
                if self.decode_partition(&c, m, segment_id, position, <int32_t>size, version, messaging) < 0:
                    break
            if c.err == E_OK and c.p != c.end:
                fail(&c, E_TRAILING_BYTES)
        if c.err != E_OK:
            rc = c.err
            self._err_at = c.err_at
            self._err_offset = c.err_at - m if c.err_at != NULL else -1
            self.partitions.used, self.rows.used, self.cells.used = saved_p, saved_r, saved_c
            self.values.used, self.arena_used = saved_v, saved_a
            return rc
        self.arena_used += size
        self.n_mutations += 1
        return E_OK

    cdef int _grow_arena(self, Py_ssize_t extra) noexcept:
        cdef Py_ssize_t cap = self.arena_cap * 2 if self.arena_cap else (1 << 20)
        cdef char* grown
        while cap < self.arena_used + extra:
            cap *= 2
        grown = <char*>realloc(self.arena, cap)
        if grown == NULL:
            return -1
        self.arena = grown
        self.arena_cap = cap
        return 0

    # -- partition update (§4.2, §4.3) -----------------------------------------------------
    cdef int decode_partition(self, Cursor* c, const uint8_t* m, int64_t segment_id, int32_t position,
                              int32_t size, int version, int messaging) noexcept:
        cdef int32_t t
        cdef TableInfo* info
        cdef PartitionRec* pr
        cdef uint64_t key_len, a, b, d, estimate
        cdef uint8_t pflags
        cdef Stats stats
        cdef int32_t n_static = 0, n_regular = 0
        cdef int64_t pdel_ts = INT64_MIN, pdel_ldt = 0
        cdef int32_t static_row = -1, first_row
        cdef Py_ssize_t pk_off
        cdef int rc
        if c.end - c.p < 16:
            return fail(c, E_TRUNCATED)
        t = self.schema.find_table(c.p)
        if t < 0:
            return fail(c, E_UNKNOWN_TABLE)
        self._err_table = t
        info = &self.schema.infos[t]
        c.p += 16
        if read_uvint(c, &key_len) < 0:
            return -1
        pk_off = c.p - m
        if skip_bytes(c, key_len) < 0 or read_u8(c, &pflags) < 0:
            return -1
        if buf_reserve(&self.partitions, 1) < 0:
            return fail(c, E_NO_MEMORY)
        first_row = <int32_t>self.rows.used
        if not (pflags & PF_IS_EMPTY):
            if read_uvint(c, &a) < 0 or read_uvint(c, &b) < 0 or read_uvint(c, &d) < 0:
                return -1
            stats.min_ts = <int64_t>(<uint64_t>TIMESTAMP_EPOCH + a)
            stats.min_ldt = <uint32_t>(DELETION_TIME_EPOCH + <uint32_t>b)
            stats.min_ttl = <int32_t><uint32_t>d
            stats.unsigned_ldt = messaging >= 13
            if pflags & PF_HAS_STATIC_ROW:
                if self.read_columns(c, info, self.static_columns, &n_static) < 0:
                    return -1
            if self.read_columns(c, info, self.header_columns, &n_regular) < 0:
                return -1
            if pflags & PF_HAS_PARTITION_DELETION:
                if read_deletion(c, &stats, &pdel_ts, &pdel_ldt) < 0:
                    return -1
            if pflags & PF_HAS_STATIC_ROW:
                rc = self.decode_unfiltered(c, info, &stats, self.static_columns, n_static, m, True)
                if rc < 0:
                    return -1
                if rc == 1:
                    static_row = <int32_t>self.rows.used - 1
                first_row = <int32_t>self.rows.used
            if pflags & PF_HAS_ROW_ESTIMATE:
                if read_uvint(c, &estimate) < 0:
                    return -1
            while True:
                rc = self.decode_unfiltered(c, info, &stats, self.header_columns, n_regular, m, False)
                if rc < 0:
                    return -1
                if rc == 2:
                    break
        # Reserve happened above; the rows may have moved the buffers, not this one.
        pr = <PartitionRec*>self.partitions.data + self.partitions.used
        pr.segment_id = segment_id
        pr.position = position
        pr.size = size
        pr.table = t
        pr.pk_off = <int32_t>(self.arena_used + pk_off)
        pr.pk_len = <int32_t>key_len
        pr.pdel_ts = pdel_ts
        pr.pdel_ldt = pdel_ldt
        pr.static_row = static_row
        pr.first_row = first_row
        pr.n_rows = <int32_t>self.rows.used - first_row
        pr.mutation = self.n_mutations
        pr.version = version
        pr.messaging = messaging
        self.partitions.used += 1
        return 0

    cdef int read_columns(self, Cursor* c, TableInfo* info, ColumnInfo** out, int32_t* count) noexcept:
        """A header column list (§4.5): names resolved against the table, order kept."""
        cdef uint64_t n, name_len, i
        cdef ColumnInfo* col
        if read_uvint(c, &n) < 0:
            return -1
        if n > MAX_COLUMNS:
            return fail(c, E_TOO_MANY_COLUMNS)
        for i in range(n):
            if read_uvint(c, &name_len) < 0:
                return -1
            if name_len > <uint64_t>(c.end - c.p):
                return fail(c, E_TRUNCATED)
            col = find_column(info, c.p, <Py_ssize_t>name_len)
            if col == NULL:
                return fail(c, E_UNKNOWN_COLUMN)
            out[i] = col
            c.p += name_len
        count[0] = <int32_t>n
        return 0

    cdef int read_value(self, Cursor* c, int32_t fixed_len, const uint8_t* m, int32_t* off, int32_t* length) noexcept:
        cdef uint64_t n
        if fixed_len >= 0:
            n = <uint64_t>fixed_len
        elif read_uvint(c, &n) < 0:
            return -1
        if n > <uint64_t>(c.end - c.p):
            return fail(c, E_BAD_LENGTH)
        off[0] = <int32_t>(self.arena_used + (c.p - m))
        length[0] = <int32_t>n
        c.p += n
        return 0

    cdef int read_clustering(self, Cursor* c, TableInfo* info, int32_t count, const uint8_t* m,
                             int32_t* first) noexcept:
        """Clustering values in blocks of 32 with a 2-bit null/empty header per value (§4.6.4)."""
        cdef int32_t i, j, limit
        cdef uint64_t header
        cdef ValueRec* v
        if buf_reserve(&self.values, count) < 0:
            return fail(c, E_NO_MEMORY)
        first[0] = <int32_t>self.values.used
        i = 0
        while i < count:
            if read_uvint(c, &header) < 0:
                return -1
            limit = min(count, i + 32)
            while i < limit:
                j = i % 32
                v = <ValueRec*>self.values.data + self.values.used
                if header & (1ULL << (2 * j + 1)):
                    v.off = <int32_t>(self.arena_used + (c.p - m))
                    v.len = -1
                elif header & (1ULL << (2 * j)):
                    v.off = <int32_t>(self.arena_used + (c.p - m))
                    v.len = 0
                elif self.read_value(c, info.clustering_fixed[i], m, &v.off, &v.len) < 0:
                    return -1
                self.values.used += 1
                i += 1
        return 0

    # -- unfiltered: row or marker (§4.6) --------------------------------------------------
    cdef int decode_unfiltered(self, Cursor* c, TableInfo* info, Stats* s, ColumnInfo** columns,
                               int32_t n_columns, const uint8_t* m, bint static_expected) noexcept:
        """Returns 1 when a row or marker was added, 0 when the row was empty, 2 at the end."""
        cdef uint8_t flags, ext = 0, kind
        cdef RowRec* r
        cdef Py_ssize_t row_index
        cdef int32_t first_value = 0, i
        cdef int64_t live_ts = INT64_MIN, live_ldt, del_ts = INT64_MIN, del_ldt = 0
        cdef int32_t live_ttl = 0
        cdef uint8_t row_flags = 0
        cdef ColumnInfo* present[MAX_COLUMNS]
        cdef int32_t n_present
        if read_u8(c, &flags) < 0:
            return -1
        if flags & UF_END_OF_PARTITION:
            return 2
        if flags & UF_EXTENSION:
            if read_u8(c, &ext) < 0:
                return -1
            if ext & ~(UX_IS_STATIC | UX_HAS_SHADOWABLE_DELETION):
                return fail(c, E_BAD_FLAGS)
        if (ext & UX_IS_STATIC) != static_expected:
            return fail(c, E_BAD_FLAGS)
        if buf_reserve(&self.rows, 1) < 0:
            return fail(c, E_NO_MEMORY)
        row_index = self.rows.used
        if flags & UF_IS_MARKER:
            return self.decode_marker(c, info, s, m)
        if not static_expected:
            if self.read_clustering(c, info, info.n_clustering, m, &first_value) < 0:
                return -1
        else:
            first_value = <int32_t>self.values.used
        live_ldt = NO_LDT
        if flags & UF_HAS_TIMESTAMP:
            if read_ts(c, s, &live_ts) < 0:
                return -1
            row_flags |= R_HAS_LIVENESS
            if flags & UF_HAS_TTL:
                if read_ttl(c, s, &live_ttl) < 0 or read_ldt(c, s, &live_ldt) < 0:
                    return -1
                row_flags |= R_EXPIRING
        if flags & UF_HAS_DELETION:
            if read_deletion(c, s, &del_ts, &del_ldt) < 0:
                return -1
            row_flags |= R_DELETED
            if ext & UX_HAS_SHADOWABLE_DELETION:
                row_flags |= R_SHADOWABLE
                if (row_flags & R_HAS_LIVENESS) and live_ts > del_ts:
                    row_flags &= ~(R_DELETED | R_SHADOWABLE)  # shadowed by the row's liveness
        if flags & UF_HAS_ALL_COLUMNS:
            n_present = n_columns
            for i in range(n_columns):
                present[i] = columns[i]
        elif self.read_subset(c, columns, n_columns, present, &n_present) < 0:
            return -1
        r = <RowRec*>self.rows.data + row_index
        r.partition = <int32_t>self.partitions.used
        r.kind = K_STATIC_ROW if static_expected else K_ROW
        r.bound_kind = 4  # CLUSTERING
        r.first_clustering = first_value
        r.n_clustering = <int32_t>self.values.used - first_value
        r.live_ts = live_ts
        r.live_ttl = live_ttl
        r.live_ldt = live_ldt
        r.del_ts = del_ts
        r.del_ldt = del_ldt
        r.del2_ts = INT64_MIN
        r.del2_ldt = 0
        r.first_cell = <int32_t>self.cells.used
        for i in range(n_present):
            if self.decode_column(c, s, present[i], <int32_t>row_index, flags, live_ts, live_ttl, live_ldt,
                                  row_flags & R_EXPIRING, m) < 0:
                return -1
        r = <RowRec*>self.rows.data + row_index
        r.n_cells = <int32_t>self.cells.used - r.first_cell
        r.flags = row_flags
        if r.n_cells == 0 and not (row_flags & (R_HAS_LIVENESS | R_DELETED)):
            # Cassandra drops rows that decode to nothing (e.g. only dropped columns' cells).
            self.values.used = first_value
            return 0
        self.rows.used += 1
        return 1

    cdef int read_subset(self, Cursor* c, ColumnInfo** columns, int32_t n, ColumnInfo** present,
                         int32_t* n_present) noexcept:
        """Column subset (§4.6.3): a bitmap of missing columns, or index lists for 64+ columns."""
        cdef uint64_t bitmap, missing, idx, k
        cdef int32_t i, count = 0, present_count, last = -1
        cdef uint8_t mark[MAX_COLUMNS]
        if read_uvint(c, &bitmap) < 0:
            return -1
        if n < 64:
            if n < 64 and (bitmap >> n) != 0:
                return fail(c, E_BAD_SUBSET)
            for i in range(n):
                if not (bitmap >> i) & 1:
                    present[count] = columns[i]
                    count += 1
            n_present[0] = count
            return 0
        missing = bitmap
        if missing == 0:
            for i in range(n):
                present[i] = columns[i]
            n_present[0] = n
            return 0
        if missing > <uint64_t>n:
            return fail(c, E_BAD_SUBSET)
        present_count = n - <int32_t>missing
        if present_count < n // 2:
            for k in range(<uint64_t>present_count):
                if read_uvint(c, &idx) < 0:
                    return -1
                if idx >= <uint64_t>n or <int32_t>idx <= last:
                    return fail(c, E_BAD_SUBSET)
                last = <int32_t>idx
                present[count] = columns[idx]
                count += 1
        else:
            for i in range(n):
                mark[i] = 1
            for k in range(missing):
                if read_uvint(c, &idx) < 0:
                    return -1
                if idx >= <uint64_t>n or <int32_t>idx <= last:
                    return fail(c, E_BAD_SUBSET)
                last = <int32_t>idx
                mark[idx] = 0
            for i in range(n):
                if mark[i]:
                    present[count] = columns[i]
                    count += 1
        n_present[0] = count
        return 0

    cdef int decode_column(self, Cursor* c, Stats* s, ColumnInfo* col, int32_t row, uint8_t row_flags_byte,
                           int64_t live_ts, int32_t live_ttl, int64_t live_ldt, bint row_expiring,
                           const uint8_t* m) noexcept:
        cdef uint64_t count, k
        cdef int64_t cd_ts = INT64_MIN, cd_ldt = 0
        cdef CellRec* cell
        cdef Py_ssize_t first
        if not col.is_complex:
            return self.decode_cell(c, s, col, row, live_ts, live_ttl, live_ldt, m, INT64_MIN)
        if row_flags_byte & UF_HAS_COMPLEX_DELETION:
            if read_deletion(c, s, &cd_ts, &cd_ldt) < 0:
                return -1
            # A live deletion (INT64_MIN) or one older than the column's drop is no deletion.
            if cd_ts != INT64_MIN and cd_ts > col.dropped_at:
                if buf_reserve(&self.cells, 1) < 0:
                    return fail(c, E_NO_MEMORY)
                cell = <CellRec*>self.cells.data + self.cells.used
                cell.row = row
                cell.column = col.index
                cell.flags = C_COMPLEX_DELETION
                cell.ts = cd_ts
                cell.ttl = 0
                cell.ldt = cd_ldt
                cell.path_off = cell.path_len = cell.value_off = cell.value_len = 0
                self.cells.used += 1
            else:
                cd_ts = INT64_MIN
        if read_uvint(c, &count) < 0:
            return -1
        if count > <uint64_t>(c.end - c.p):
            return fail(c, E_BAD_LENGTH)
        for k in range(count):
            if self.decode_cell(c, s, col, row, live_ts, live_ttl, live_ldt, m, cd_ts) < 0:
                return -1
        return 0

    cdef int decode_cell(self, Cursor* c, Stats* s, ColumnInfo* col, int32_t row, int64_t live_ts,
                         int32_t live_ttl, int64_t live_ldt, const uint8_t* m, int64_t shadowed_below) noexcept:
        """One cell (§4.6.5). Cells of dropped columns, and complex-column cells older than the
        column's deletion in the same row, are read and not kept, as Cassandra does."""
        cdef uint8_t cf
        cdef int64_t ts, ldt
        cdef int32_t ttl
        cdef uint64_t path_len = 0
        cdef const uint8_t* path = NULL
        cdef int32_t value_off = 0, value_len = 0
        cdef CellRec* cell
        cdef uint8_t out_flags = 0
        cdef bint has_ldt
        if read_u8(c, &cf) < 0:
            return -1
        if cf & 0xE0 or (cf & CF_IS_DELETED and cf & CF_IS_EXPIRING):
            return fail(c, E_BAD_FLAGS)
        if cf & CF_USE_ROW_TIMESTAMP:
            ts = live_ts
        elif read_ts(c, s, &ts) < 0:
            return -1
        # Java keeps "no deletion time" as a sentinel; a cell is a tombstone when it has a
        # deletion time and no TTL, expiring when it has a TTL (Cell.isTombstone/isExpiring).
        if cf & CF_USE_ROW_TTL:
            ldt = live_ldt
            ttl = live_ttl
            has_ldt = live_ldt != NO_LDT
        else:
            has_ldt = (cf & (CF_IS_DELETED | CF_IS_EXPIRING)) != 0
            ldt = NO_LDT
            if has_ldt and read_ldt(c, s, &ldt) < 0:
                return -1
            ttl = 0
            if cf & CF_IS_EXPIRING and read_ttl(c, s, &ttl) < 0:
                return -1
        if col.is_complex:
            if read_uvint(c, &path_len) < 0:
                return -1
            if path_len > <uint64_t>(c.end - c.p):
                return fail(c, E_BAD_LENGTH)
            path = c.p
            c.p += path_len
        if not (cf & CF_HAS_EMPTY_VALUE):
            if self.read_value(c, -1 if col.is_complex else col.fixed_len, m, &value_off, &value_len) < 0:
                return -1
        else:
            value_off = <int32_t>(self.arena_used + (c.p - m))
        if ts <= col.dropped_at or (shadowed_below != INT64_MIN and ts < shadowed_below):
            return 0
        if buf_reserve(&self.cells, 1) < 0:
            return fail(c, E_NO_MEMORY)
        cell = <CellRec*>self.cells.data + self.cells.used
        if ttl != 0:
            out_flags |= C_EXPIRING
        elif has_ldt:
            out_flags |= C_TOMBSTONE
        if col.is_counter and not (out_flags & C_TOMBSTONE):
            out_flags |= C_COUNTER
        if col.is_complex:
            out_flags |= C_HAS_PATH
            cell.path_off = <int32_t>(self.arena_used + (path - m))
            cell.path_len = <int32_t>path_len
        else:
            cell.path_off = cell.path_len = 0
        cell.row = row
        cell.column = col.index
        cell.flags = out_flags
        cell.ts = ts
        cell.ttl = ttl
        cell.ldt = ldt
        cell.value_off = value_off
        cell.value_len = value_len
        self.cells.used += 1
        return 0

    cdef int decode_marker(self, Cursor* c, TableInfo* info, Stats* s, const uint8_t* m) noexcept:
        """A range tombstone bound or boundary (§4.6.7)."""
        cdef uint8_t kind, hi, lo
        cdef int32_t size, first_value
        cdef RowRec* r
        cdef int64_t ts1, ldt1, ts2 = INT64_MIN, ldt2 = 0
        if read_u8(c, &kind) < 0 or read_u8(c, &hi) < 0 or read_u8(c, &lo) < 0:
            return -1
        size = (hi << 8) | lo
        if kind > 7 or kind == 3 or kind == 4 or size > info.n_clustering:
            return fail(c, E_BAD_MARKER)
        if size == 0:
            # Cassandra reads an empty bound as BOTTOM or TOP whatever its stored kind.
            kind = 1 if kind in (1, 7, 2, 5) else 6
        if self.read_clustering(c, info, size, m, &first_value) < 0:
            return -1
        if read_deletion(c, s, &ts1, &ldt1) < 0:
            return -1
        if kind == 2 or kind == 5:
            if read_deletion(c, s, &ts2, &ldt2) < 0:
                return -1
        r = <RowRec*>self.rows.data + self.rows.used
        r.partition = <int32_t>self.partitions.used
        r.kind = K_RT_BOUNDARY if kind == 2 or kind == 5 else K_RT_BOUND
        r.bound_kind = kind
        r.flags = 0
        r.first_clustering = first_value
        r.n_clustering = size
        r.live_ts = INT64_MIN
        r.live_ttl = 0
        r.live_ldt = 0
        r.del_ts = ts1
        r.del_ldt = ldt1
        r.del2_ts = ts2
        r.del2_ldt = ldt2
        r.first_cell = <int32_t>self.cells.used
        r.n_cells = 0
        self.rows.used += 1
        return 1


def walk_sync_markers(data, int64_t segment_id, Py_ssize_t header_len, Py_ssize_t file_len,
                      bint compressed):
    """The sync-marker chain (§2.2): a list of (marker offset, next) and how it ended.

    The end is ``"zero"`` (a zeroed marker: clean end or unsynced data), ``"eof"``, or an error
    tuple ``("bad_crc" | "bad_next", offset)``.
    """
    cdef const uint8_t[::1] view = data
    cdef const uint8_t* base = &view[0] if view.shape[0] else NULL
    cdef Py_ssize_t pos = header_len, min_len = 12 if compressed else 8
    cdef int64_t nxt
    cdef uint32_t stored, expected
    sections = []
    while True:
        if pos > file_len - 8:
            return sections, "eof"
        nxt = <int32_t>be32(base + pos)
        stored = be32(base + pos + 4)
        expected = marker_crc(segment_id, <uint32_t>pos)
        if stored != expected:
            if nxt == 0 and stored == 0:
                return sections, "zero"
            return sections, ("bad_crc", pos)
        if nxt < pos + min_len or nxt > file_len:
            return sections, ("bad_next", pos)
        sections.append((pos, nxt))
        pos = nxt
