"""Decoded mutations as compact columnar batches.

A :class:`Batch` holds four record arrays (numpy structured views over bytes, mirroring the
packed C structs in ``cdcfast/_commitlog.pxd``) and one arena with the raw bytes they point into.
No Python object exists per cell until a consumer asks for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cdcfast.commitlog.schema import ColumnDef, TableDef

PARTITION_DTYPE = np.dtype(
    [
        ("segment_id", "<i8"),
        ("position", "<i4"),
        ("size", "<i4"),
        ("table", "<i4"),
        ("pk_off", "<i4"),
        ("pk_len", "<i4"),
        ("pdel_ts", "<i8"),
        ("pdel_ldt", "<i8"),
        ("static_row", "<i4"),
        ("first_row", "<i4"),
        ("n_rows", "<i4"),
        ("mutation", "<i4"),
        ("version", "u1"),
        ("messaging", "u1"),
    ]
)
ROW_DTYPE = np.dtype(
    [
        ("partition", "<i4"),
        ("kind", "u1"),
        ("bound_kind", "u1"),
        ("flags", "u1"),
        ("first_clustering", "<i4"),
        ("n_clustering", "<i4"),
        ("live_ts", "<i8"),
        ("live_ttl", "<i4"),
        ("live_ldt", "<i8"),
        ("del_ts", "<i8"),
        ("del_ldt", "<i8"),
        ("del2_ts", "<i8"),
        ("del2_ldt", "<i8"),
        ("first_cell", "<i4"),
        ("n_cells", "<i4"),
    ]
)
CELL_DTYPE = np.dtype(
    [
        ("row", "<i4"),
        ("column", "<i4"),
        ("flags", "u1"),
        ("ts", "<i8"),
        ("ttl", "<i4"),
        ("ldt", "<i8"),
        ("path_off", "<i4"),
        ("path_len", "<i4"),
        ("value_off", "<i4"),
        ("value_len", "<i4"),
    ]
)
VALUE_DTYPE = np.dtype([("off", "<i4"), ("len", "<i4")])

# Record kinds and flags (the same numbers as in _commitlog.pyx).
ROW, STATIC_ROW, RT_BOUND, RT_BOUNDARY = 0, 1, 2, 3
ROW_HAS_LIVENESS, ROW_EXPIRING, ROW_DELETED, ROW_SHADOWABLE = 1, 2, 4, 8
CELL_TOMBSTONE, CELL_EXPIRING, CELL_COUNTER, CELL_COMPLEX_DELETION, CELL_HAS_PATH = 1, 2, 4, 8, 16
NO_DELETION = -(2**63)  # a deletion timestamp meaning "not deleted" (Long.MIN_VALUE)

# Cassandra's ClusteringPrefix.Kind, by ordinal.
BOUND_KINDS = (
    "EXCL_END_BOUND",
    "INCL_START_BOUND",
    "EXCL_END_INCL_START_BOUNDARY",
    "STATIC_CLUSTERING",
    "CLUSTERING",
    "INCL_END_EXCL_START_BOUNDARY",
    "INCL_END_BOUND",
    "EXCL_START_BOUND",
)


UNKNOWN_COLUMN = "column not in the schema"  # how the decoder's message for it starts


@dataclass(frozen=True)
class ReadIssue:
    """Something the reader skipped, with enough context to find it again."""

    kind: str  # header | marker | entry | crc | decode | unknown_table | system_table | decompress | idx
    path: str
    segment_id: int
    offset: int  # logical offset of the entry or section concerned
    position: int  # the entry's end position, -1 when unknown
    detail: str
    table: str = ""  # keyspace.table when known

    @property
    def schema_may_be_stale(self) -> bool:
        """A table or column the schema does not know: it may have been created since it was read."""
        return self.kind == "unknown_table" or (self.kind == "decode" and self.detail.startswith(UNKNOWN_COLUMN))

    def __str__(self) -> str:
        where = f"{self.path} (segment {self.segment_id}) at offset {self.offset}"
        table = f", table {self.table}" if self.table else ""
        return f"{self.kind}: {where}{table}: {self.detail}"


@dataclass
class Batch:
    """Records for a run of consecutive mutations, in commit log order."""

    tables: list[TableDef]
    partitions: np.ndarray
    rows: np.ndarray
    cells: np.ndarray
    values: np.ndarray
    arena: bytes
    issues: list[ReadIssue] = field(default_factory=list)
    columns: dict[int, list[ColumnDef]] = field(default_factory=dict)

    @classmethod
    def from_buffers(cls, tables: list[TableDef], raw: tuple[bytes, bytes, bytes, bytes, bytes]) -> Batch:
        partitions, rows, cells, values, arena = raw
        return cls(
            tables=tables,
            partitions=np.frombuffer(partitions, PARTITION_DTYPE),
            rows=np.frombuffer(rows, ROW_DTYPE),
            cells=np.frombuffer(cells, CELL_DTYPE),
            values=np.frombuffer(values, VALUE_DTYPE),
            arena=arena,
        )

    def __len__(self) -> int:
        return len(self.partitions)

    @property
    def mutation_count(self) -> int:
        return 0 if not len(self.partitions) else int(self.partitions["mutation"][-1]) + 1

    def data_columns(self, table_index: int) -> list[ColumnDef]:
        cached = self.columns.get(table_index)
        if cached is None:
            cached = self.columns[table_index] = self.tables[table_index].data_columns()
        return cached

    def clustering(self, first: int, count: int) -> list[bytes | None]:
        out: list[bytes | None] = []
        for off, length in self.values[first : first + count].tolist():
            out.append(None if length < 0 else self.arena[off : off + length])
        return out
