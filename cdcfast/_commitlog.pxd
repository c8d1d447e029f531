# The decoder's output records, read by _commitlog.pyx (writes them) and _events.pyx (turns them
# into change events). cdcfast/commitlog/batch.py mirrors each struct as a numpy dtype,
# field for field (any drift breaks the corpus equality tests at once).
from libc.stdint cimport int32_t, int64_t, uint8_t

# Record kinds and flags, the same numbers as in cdcfast/commitlog/batch.py.
cdef enum:
    K_ROW = 0
    K_STATIC_ROW = 1
    K_RT_BOUND = 2
    K_RT_BOUNDARY = 3
    R_HAS_LIVENESS = 1
    R_EXPIRING = 2
    R_DELETED = 4
    R_SHADOWABLE = 8
    C_TOMBSTONE = 1
    C_EXPIRING = 2
    C_COUNTER = 4
    C_COMPLEX_DELETION = 8
    C_HAS_PATH = 16

cdef packed struct PartitionRec:
    int64_t segment_id
    int32_t position          # logical offset just past the entry (Cassandra's CommitLogPosition)
    int32_t size              # serialized mutation size
    int32_t table             # index into DecoderSchema.tables
    int32_t pk_off            # partition key bytes in the arena
    int32_t pk_len
    int64_t pdel_ts           # partition deletion; INT64_MIN when there is none
    int64_t pdel_ldt
    int32_t static_row        # index into rows, or -1
    int32_t first_row         # rows and range tombstone markers, in serialization order
    int32_t n_rows
    int32_t mutation          # ordinal of the mutation inside the batch
    uint8_t version           # descriptor version of the segment
    uint8_t messaging         # messaging version the mutation was decoded with

cdef packed struct RowRec:
    int32_t partition
    uint8_t kind              # ROW, STATIC_ROW, RT_BOUND, RT_BOUNDARY
    uint8_t bound_kind        # markers: Cassandra's ClusteringPrefix.Kind ordinal
    uint8_t flags             # ROW_HAS_LIVENESS | ROW_EXPIRING | ROW_DELETED | ROW_SHADOWABLE
    int32_t first_clustering
    int32_t n_clustering
    int64_t live_ts
    int32_t live_ttl
    int64_t live_ldt
    int64_t del_ts            # row deletion, bound deletion, or a boundary's end deletion
    int64_t del_ldt
    int64_t del2_ts           # a boundary's start deletion
    int64_t del2_ldt
    int32_t first_cell
    int32_t n_cells

cdef packed struct CellRec:
    int32_t row
    int32_t column            # index into the table's data_columns()
    uint8_t flags             # CELL_TOMBSTONE | CELL_EXPIRING | CELL_COUNTER | CELL_COMPLEX_DELETION | CELL_HAS_PATH
    int64_t ts
    int32_t ttl
    int64_t ldt
    int32_t path_off
    int32_t path_len
    int32_t value_off
    int32_t value_len

cdef packed struct ValueRec:
    int32_t off
    int32_t len               # -1: null
