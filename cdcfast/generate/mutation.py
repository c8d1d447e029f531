"""Mutation encoder: partition updates back into Cassandra's serialized mutation bytes.

The inverse of the decoder (``cdcfast/_commitlog.pyx``) for messaging versions 10 to 13, which share
one byte layout (format reference §4). ``cdcfast generate`` builds :class:`PartitionUpdate` objects
from a workload; tests and diagnostics get them from decoded records with :class:`BatchRecords`.
:func:`encode_mutation` turns them into the bytes Cassandra's ``Mutation.serializer`` writes.

Byte-exactness means making the writer's choices as Cassandra makes them (checked against the
``cassandra-all`` 5.0.9 bytecode and the real corpora):

* **EncodingStats** (:func:`encoding_stats`): minima over the partition deletion, range tombstones,
  and, for the static row and every row, primary-key liveness (timestamp; TTL and expiration when
  expiring), row deletion, cells (timestamp, including cells that use the row's timestamp; TTL and
  expiration of expiring cells; deletion time of tombstones) and non-live complex deletions. Unset
  minima are the epochs (TTL: 0); a minimum timestamp of ``Long.MIN_VALUE`` also becomes the epoch.
  This is what every CQL write path does (``PartitionUpdate.Builder``); updates Cassandra builds
  another way (``PartitionUpdate.singleRowUpdate``) carry :data:`NO_STATS` instead, which
  :attr:`PartitionUpdate.stats` can say.
* **Deltas**: timestamps as 64-bit wrapping differences; local deletion times and TTLs as 32-bit
  differences sign-extended to 64 bits before the vint (negative deltas are 9 bytes).
* **Header column lists**: the columns the partition update touches, simple columns first, then
  complex ones, each sorted by the unsigned bytes of the name (:func:`cassandra_order`). These are
  the statement's columns, so a column can be listed with no data in any row: an unset bind value,
  or a batch, where every partition update of a table gets the columns of all the batch's
  statements on that table (about 0.2% of the corpora's user mutations). Records cannot show that;
  :attr:`PartitionUpdate.regular_columns` / ``static_columns`` carry the real lists when known,
  otherwise they are computed from the rows.
* **Rows**: HAS_ALL_COLUMNS when the row has data for as many columns as the header lists, else the
  column subset (a bitmap of missing columns below 64 columns, index lists from 64 on);
  HAS_COMPLEX_DELETION when any complex column has a deletion, in which case every complex column of
  the row carries one (``DeletionTime.LIVE`` for the others: its local deletion time is
  ``Integer.MAX_VALUE`` before 5.0 and ``Long.MAX_VALUE`` in 5.0, so the bytes depend on the
  release, :data:`CASSANDRA_5`); the extension byte only for the static row and shadowable deletions.
* **Cells**: USE_ROW_TIMESTAMP when the row has liveness and the cell's timestamp equals it (also for
  tombstones and expiring cells); USE_ROW_TTL when both cell and row liveness are expiring with the
  same TTL and expiration time; HAS_EMPTY_VALUE for every zero-length value; values of fixed-length
  simple columns unprefixed, everything else (complex columns included) with a vint length.
* **Partition**: IS_EMPTY alone when there is no deletion, no static row and no row or marker;
  otherwise HAS_ROW_ESTIMATE always, with the number of rows (markers and the static row excluded).

What decoded records lose (see :class:`BatchRecords`): the header column lists (taken back from the
batch's arena with ``original_headers=True``); the EncodingStats when the writer did not collect
them (never for CQL writes; they are recomputed); cells and complex deletions of dropped columns, and
rows left empty by that (the decoder drops them, as Cassandra's reader does); the static row when
it held only such cells; a shadowable row deletion superseded by the row's liveness; the stored
kind of a clustering bound of size 0 (read as bottom or top). Mutations that lost any of these do
not re-encode to their original bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cdcfast.commitlog.batch import (
    CELL_COMPLEX_DELETION,
    CELL_HAS_PATH,
    NO_DELETION,
    ROW,
    ROW_DELETED,
    ROW_EXPIRING,
    ROW_HAS_LIVENESS,
    ROW_SHADOWABLE,
    RT_BOUNDARY,
    STATIC_ROW,
    Batch,
)
from cdcfast.commitlog.schema import ColumnDef, TableDef
from cdcfast.errors import CdcfastError
from cdcfast.values.vint import encode_uvint, read_uvint

TIMESTAMP_EPOCH = 1442880000000000  # microseconds, 2015-09-22 (EncodingStats.TIMESTAMP_EPOCH)
DELETION_TIME_EPOCH = 1442880000  # seconds, the same instant
NO_TIMESTAMP = -(2**63)  # LivenessInfo.NO_TIMESTAMP, DeletionTime.LIVE's markedForDeleteAt
NO_LDT = 2**63 - 1  # the decoder's "no local deletion time" in records

CASSANDRA_4 = (4, 1)
CASSANDRA_5 = (5, 0)

U64 = 2**64 - 1
U32 = 2**32 - 1

# Partition, row and cell flags (format reference §4.3, §4.6.1, §4.6.5).
IS_EMPTY, HAS_PARTITION_DELETION, HAS_STATIC_ROW, HAS_ROW_ESTIMATE = 0x01, 0x04, 0x08, 0x10
END_OF_PARTITION, IS_MARKER, HAS_TIMESTAMP, HAS_TTL = 0x01, 0x02, 0x04, 0x08
HAS_DELETION, HAS_ALL_COLUMNS, HAS_COMPLEX_DELETION, EXTENSION_FLAG = 0x10, 0x20, 0x40, 0x80
IS_STATIC, HAS_SHADOWABLE_DELETION = 0x01, 0x02
IS_DELETED, IS_EXPIRING, HAS_EMPTY_VALUE, USE_ROW_TIMESTAMP, USE_ROW_TTL = 0x01, 0x02, 0x04, 0x08, 0x10
BOUNDARY_KINDS = (2, 5)  # EXCL_END_INCL_START_BOUNDARY, INCL_END_EXCL_START_BOUNDARY
MARKER_KINDS = (0, 1, 2, 5, 6, 7)


class MutationEncodeError(CdcfastError):
    """A partition update that Cassandra could not have written; names the table and the column."""

    def __init__(self, table: TableDef, reason: str, column: str | None = None) -> None:
        where = table.qualified_name + (f", column {column}" if column else "")
        super().__init__(f"cannot encode a partition update of {where}: {reason}")
        self.table = table.qualified_name
        self.column = column
        self.reason = reason


# -- the partition update model ------------------------------------------------------------------


@dataclass(frozen=True)
class Deletion:
    """A DeletionTime: ``ts`` (markedForDeleteAt, microseconds) and ``ldt`` (seconds)."""

    ts: int
    ldt: int


@dataclass(frozen=True)
class Liveness:
    """A row's primary-key liveness; ``ttl`` and ``ldt`` (expiration time) when it expires."""

    ts: int
    ttl: int = 0
    ldt: int | None = None

    @property
    def is_expiring(self) -> bool:
        return self.ttl != 0


@dataclass(frozen=True)
class Cell:
    """One cell. ``ldt`` is the deletion time of a tombstone (``ttl == 0``) or the expiration time of
    an expiring cell (``ttl != 0``); ``None`` for a live cell. ``path`` for complex columns only.
    Counter cells are ordinary cells whose value is the counter context."""

    column: str
    ts: int
    value: bytes = b""
    path: bytes | None = None
    ttl: int = 0
    ldt: int | None = None

    @property
    def is_tombstone(self) -> bool:
        return self.ldt is not None and self.ttl == 0

    @property
    def is_expiring(self) -> bool:
        return self.ttl != 0


@dataclass(frozen=True)
class ComplexDeletion:
    """The deletion of a whole complex column in one row (e.g. the ``ts - 1`` of an overwrite)."""

    column: str
    deletion: Deletion


@dataclass
class Row:
    """A row (or the static row, with no clustering). ``cells`` may come in any column order (the
    encoder writes columns in header order); the cells of one complex column are written in the
    order given, which must be Cassandra's path order (the decoder gives them in it)."""

    clustering: tuple[bytes | None, ...] = ()  # None: null; b"": an empty value
    liveness: Liveness | None = None
    deletion: Deletion | None = None
    shadowable: bool = False
    cells: list[Cell | ComplexDeletion] = field(default_factory=list)


@dataclass(frozen=True)
class Marker:
    """A range tombstone marker. ``kind`` is Cassandra's ClusteringPrefix.Kind ordinal (0, 1, 6, 7
    bounds; 2, 5 boundaries); ``deletion`` is a bound's deletion or a boundary's closing one,
    ``start_deletion`` a boundary's opening one."""

    kind: int
    clustering: tuple[bytes | None, ...]
    deletion: Deletion
    start_deletion: Deletion | None = None

    @property
    def is_boundary(self) -> bool:
        return self.kind in BOUNDARY_KINDS


@dataclass(frozen=True)
class EncodingStats:
    """The minima every delta in a partition update is relative to."""

    min_timestamp: int
    min_ldt: int
    min_ttl: int

    def deltas(self) -> tuple[int, int, int]:
        """The three unsigned vint values the partition header holds (EncodingStats.Serializer)."""
        return (
            (self.min_timestamp - TIMESTAMP_EPOCH) & U64,
            _int32_as_u64(self.min_ldt - DELETION_TIME_EPOCH),
            _int32_as_u64(self.min_ttl),
        )


# EncodingStats.NO_STATS: what updates built without the collector carry (PartitionUpdate.singleRowUpdate,
# used by some internal writes); every CQL write path collects them (PartitionUpdate.Builder.build()).
NO_STATS = EncodingStats(TIMESTAMP_EPOCH, DELETION_TIME_EPOCH, 0)


@dataclass
class PartitionUpdate:
    """One table's changes to one partition, as a mutation carries them.

    ``rows`` holds rows and range tombstone markers in clustering order (the encoder keeps the order
    given). ``static_columns`` / ``regular_columns`` are the serialization header's column lists;
    ``None`` computes them from the rows (the columns with data, in Cassandra's order).
    """

    table: TableDef
    key: bytes  # the serialized partition key (CompositeType layout for composite keys)
    deletion: Deletion | None = None
    static_row: Row | None = None
    rows: list[Row | Marker] = field(default_factory=list)
    static_columns: tuple[str, ...] | None = None
    regular_columns: tuple[str, ...] | None = None
    stats: EncodingStats | None = None  # None: collected (:func:`encoding_stats`); NO_STATS for some internal paths

    @property
    def is_empty(self) -> bool:
        return self.deletion is None and self.static_row is None and not self.rows


# -- writer choices --------------------------------------------------------------------------------


def _int32_as_u64(value: int) -> int:
    """Java's ``(long) (int) value`` as an unsigned 64-bit vint operand: wrap to 32 bits, sign-extend."""
    value &= U32
    return value | 0xFFFFFFFF00000000 if value & 0x80000000 else value


def live_ldt(release: tuple[int, int]) -> int:
    """``DeletionTime.LIVE.localDeletionTime()``: Integer.MAX_VALUE before 5.0, Long.MAX_VALUE in 5.0."""
    return 2**31 - 1 if release < CASSANDRA_5 else 2**63 - 1


def column_of(table: TableDef, name: str) -> ColumnDef:
    column = table.columns.get(name) or table.dropped.get(name)
    if column is None:
        raise MutationEncodeError(table, "no such column (not even a dropped one)", name)
    return column


def cassandra_order(columns: Iterable[ColumnDef]) -> list[ColumnDef]:
    """Cassandra's column order (ColumnMetadata.compareTo within one kind): simple columns before
    complex ones, each sorted by the unsigned bytes of the name."""
    return sorted(columns, key=lambda c: (c.type.is_complex, c.name.encode("utf-8")))


def _rows_with_data(update: PartitionUpdate) -> list[Row]:
    rows = [r for r in update.rows if isinstance(r, Row)]
    return rows if update.static_row is None else [update.static_row, *rows]


def header_columns(update: PartitionUpdate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (static, regular) header column lists: the update's own, else computed from its rows."""
    static = update.static_columns
    if static is None:
        used = {item.column for item in update.static_row.cells} if update.static_row is not None else set()
        static = tuple(c.name for c in cassandra_order(column_of(update.table, n) for n in used))
    regular = update.regular_columns
    if regular is None:
        used = {item.column for row in update.rows if isinstance(row, Row) for item in row.cells}
        regular = tuple(c.name for c in cassandra_order(column_of(update.table, n) for n in used))
    return static, regular


def encoding_stats(update: PartitionUpdate, release: tuple[int, int] = CASSANDRA_5) -> EncodingStats:
    """EncodingStats.Collector over the update, as PartitionUpdate.Builder.build() collects it."""
    timestamps: list[int] = []
    ldts: list[int] = []
    ttls: list[int] = []

    def deletion(d: Deletion | None) -> None:
        if d is not None:
            timestamps.append(d.ts)
            ldts.append(d.ldt)

    deletion(update.deletion)
    for item in update.rows:
        if isinstance(item, Marker):
            deletion(item.deletion)
            deletion(item.start_deletion)
    for row in _rows_with_data(update):
        if row.liveness is not None:
            timestamps.append(row.liveness.ts)
            if row.liveness.is_expiring:
                ttls.append(row.liveness.ttl)
                ldts.append(_expiration(update.table, row.liveness))
        deletion(row.deletion)
        for cell in row.cells:
            if isinstance(cell, ComplexDeletion):
                deletion(cell.deletion)
                continue
            timestamps.append(cell.ts)
            if cell.is_expiring:
                ttls.append(cell.ttl)
            if cell.ldt is not None:
                ldts.append(cell.ldt)
    min_ts = min(timestamps) if timestamps else TIMESTAMP_EPOCH
    min_ldt = min(ldts) if ldts else DELETION_TIME_EPOCH
    # The EncodingStats constructor maps "no value" sentinels to the epochs.
    if min_ts == NO_TIMESTAMP:
        min_ts = TIMESTAMP_EPOCH
    if min_ldt == live_ldt(release):
        min_ldt = DELETION_TIME_EPOCH
    return EncodingStats(min_ts, min_ldt, min(ttls) if ttls else 0)


def _expiration(table: TableDef, liveness: Liveness) -> int:
    if liveness.ldt is None:
        raise MutationEncodeError(table, "an expiring liveness needs its expiration time (ldt)")
    return liveness.ldt


# -- encoding ----------------------------------------------------------------------------------------


class _Writer:
    """One partition update's output buffer and its SerializationHeader's delta writers."""

    def __init__(self, table: TableDef, stats: EncodingStats, release: tuple[int, int]) -> None:
        self.table = table
        self.out = bytearray()
        self.min_ts = stats.min_timestamp
        self.min_ldt = stats.min_ldt
        self.min_ttl = stats.min_ttl
        self.live_ldt = live_ldt(release)

    def uvint(self, value: int) -> None:
        self.out += encode_uvint(value)

    def blob(self, data: bytes) -> None:
        self.out += encode_uvint(len(data))
        self.out += data

    def timestamp(self, ts: int) -> None:
        self.out += encode_uvint((ts - self.min_ts) & U64)

    def ldt(self, ldt: int) -> None:
        self.out += encode_uvint(_int32_as_u64(ldt - self.min_ldt))

    def ttl(self, ttl: int) -> None:
        self.out += encode_uvint(_int32_as_u64(ttl - self.min_ttl))

    def deletion(self, d: Deletion | None) -> None:
        if d is None:  # DeletionTime.LIVE
            self.timestamp(NO_TIMESTAMP)
            self.ldt(self.live_ldt)
        else:
            self.timestamp(d.ts)
            self.ldt(d.ldt)

    def columns(self, names: Sequence[str]) -> None:
        self.uvint(len(names))
        for name in names:
            self.blob(name.encode("utf-8"))

    def value(self, data: bytes, fixed_length: int, column: str) -> None:
        if fixed_length < 0:
            self.blob(data)
        elif len(data) == fixed_length:
            self.out += data
        else:
            raise MutationEncodeError(
                self.table, f"a value of {len(data)} bytes for a fixed-length type of {fixed_length}", column
            )

    def clustering(self, values: Sequence[bytes | None], columns: Sequence[ColumnDef]) -> None:
        """Clustering values in blocks of 32, each block after its 2-bit null/empty header (§4.6.4)."""
        for start in range(0, len(values), 32):
            block = values[start : start + 32]
            header = 0
            for i, v in enumerate(block):
                if v is None:
                    header |= 1 << (2 * i + 1)
                elif not v:
                    header |= 1 << (2 * i)
            self.uvint(header)
            for i, v in enumerate(block):
                if v:
                    column = columns[start + i]
                    self.value(v, column.type.fixed_length, column.name)


def _row(w: _Writer, row: Row, header: Sequence[str], static: bool, n_clustering: int) -> None:
    table = w.table
    position = {name: i for i, name in enumerate(header)}
    by_column: dict[str, list[Cell | ComplexDeletion]] = {}
    for item in row.cells:
        if item.column not in position:
            kind = "static" if static else "regular"
            raise MutationEncodeError(table, f"the column has data but is not in the {kind} header list", item.column)
        by_column.setdefault(item.column, []).append(item)
    present = sorted(by_column, key=position.__getitem__)
    complex_deletions = {i.column: i.deletion for i in row.cells if isinstance(i, ComplexDeletion)}
    liveness = row.liveness

    flags, ext = 0, 0
    if static:
        ext |= IS_STATIC
    if liveness is not None:
        flags |= HAS_TIMESTAMP
        if liveness.is_expiring:
            flags |= HAS_TTL
    if row.deletion is not None:
        flags |= HAS_DELETION
        if row.shadowable:
            ext |= HAS_SHADOWABLE_DELETION
    elif row.shadowable:
        raise MutationEncodeError(table, "a shadowable row needs a row deletion")
    if complex_deletions:
        flags |= HAS_COMPLEX_DELETION
    if len(present) == len(header):
        flags |= HAS_ALL_COLUMNS
    if ext:
        flags |= EXTENSION_FLAG
    if liveness is None and row.deletion is None and not present:
        raise MutationEncodeError(table, "a row with no liveness, no deletion and no cells (Cassandra writes none)")
    w.out.append(flags)
    if ext:
        w.out.append(ext)
    if not static:
        if len(row.clustering) != n_clustering:
            raise MutationEncodeError(table, f"a row needs {n_clustering} clustering values, not {len(row.clustering)}")
        w.clustering(row.clustering, table.clustering)

    if liveness is not None:
        w.timestamp(liveness.ts)
        if liveness.is_expiring:
            w.ttl(liveness.ttl)
            w.ldt(_expiration(table, liveness))
    if row.deletion is not None:
        w.deletion(row.deletion)
    if not flags & HAS_ALL_COLUMNS:
        _subset(w, [position[name] for name in present], len(header))
    for name in present:
        column = column_of(table, name)
        cells = [c for c in by_column[name] if isinstance(c, Cell)]
        if not column.type.is_complex:
            if len(by_column[name]) != 1 or len(cells) != 1:
                raise MutationEncodeError(table, "a simple column has exactly one cell per row", name)
            _cell(w, column, cells[0], liveness)
            continue
        if len(by_column[name]) - len(cells) > 1:
            raise MutationEncodeError(table, "a complex column has one deletion per row at most", name)
        if flags & HAS_COMPLEX_DELETION:
            w.deletion(complex_deletions.get(name))
        w.uvint(len(cells))
        for cell in cells:
            _cell(w, column, cell, liveness)


def _subset(w: _Writer, present: list[int], count: int) -> None:
    """Columns.Serializer.serializeSubset: which header columns the row has (§4.6.3)."""
    if len(present) == count:
        w.uvint(0)
    elif count < 64:
        have = set(present)
        w.uvint(sum(1 << i for i in range(count) if i not in have))
    else:
        w.uvint(count - len(present))
        if len(present) < count // 2:
            for i in present:
                w.uvint(i)
        else:
            have = set(present)
            for i in range(count):
                if i not in have:
                    w.uvint(i)


def _cell(w: _Writer, column: ColumnDef, cell: Cell, liveness: Liveness | None) -> None:
    """Cell.Serializer.serialize."""
    expiring = cell.is_expiring
    if expiring and cell.ldt is None:
        raise MutationEncodeError(w.table, "an expiring cell needs its expiration time (ldt)", column.name)
    use_row_ts = liveness is not None and cell.ts == liveness.ts
    use_row_ttl = (
        expiring
        and liveness is not None
        and liveness.is_expiring
        and cell.ttl == liveness.ttl
        and cell.ldt == liveness.ldt
    )
    flags = 0
    if not cell.value:
        flags |= HAS_EMPTY_VALUE
    if cell.is_tombstone:
        flags |= IS_DELETED
    elif expiring:
        flags |= IS_EXPIRING
    if use_row_ts:
        flags |= USE_ROW_TIMESTAMP
    if use_row_ttl:
        flags |= USE_ROW_TTL
    w.out.append(flags)
    if not use_row_ts:
        w.timestamp(cell.ts)
    if cell.ldt is not None and not use_row_ttl:
        w.ldt(cell.ldt)
    if expiring and not use_row_ttl:
        w.ttl(cell.ttl)
    is_complex = column.type.is_complex
    if is_complex:
        if cell.path is None:
            raise MutationEncodeError(w.table, "a cell of a complex column needs a cell path", column.name)
        w.blob(cell.path)
    elif cell.path is not None:
        raise MutationEncodeError(w.table, "only cells of complex columns have a cell path", column.name)
    if cell.value:
        w.value(cell.value, -1 if is_complex else column.type.fixed_length, column.name)


def _marker(w: _Writer, marker: Marker) -> None:
    """A range tombstone bound or boundary (§4.6.7)."""
    table = w.table
    if marker.kind not in MARKER_KINDS or len(marker.clustering) > len(table.clustering):
        raise MutationEncodeError(
            table, f"invalid range tombstone marker (kind {marker.kind}, size {len(marker.clustering)})"
        )
    if marker.is_boundary != (marker.start_deletion is not None):
        raise MutationEncodeError(table, "a boundary marker has a start deletion and a bound marker none")
    w.out.append(IS_MARKER)
    w.out.append(marker.kind)
    w.out += len(marker.clustering).to_bytes(2, "big")
    w.clustering(marker.clustering, table.clustering)
    w.deletion(marker.deletion)
    if marker.start_deletion is not None:
        w.deletion(marker.start_deletion)


def encode_partition_update(update: PartitionUpdate, release: tuple[int, int] = CASSANDRA_5) -> bytes:
    """PartitionUpdate.serializer: table id, then the partition as UnfilteredRowIteratorSerializer writes it."""
    table = update.table
    head = bytearray(table.id.bytes)
    head += encode_uvint(len(update.key))
    head += update.key
    if update.is_empty:
        head.append(IS_EMPTY)
        return bytes(head)
    flags = HAS_ROW_ESTIMATE
    if update.deletion is not None:
        flags |= HAS_PARTITION_DELETION
    if update.static_row is not None:
        flags |= HAS_STATIC_ROW
    head.append(flags)
    stats = update.stats if update.stats is not None else encoding_stats(update, release)
    w = _Writer(table, stats, release)
    for delta in stats.deltas():
        w.uvint(delta)
    static_header, regular_header = header_columns(update)
    if update.static_row is not None:
        w.columns(static_header)
    w.columns(regular_header)
    if update.deletion is not None:
        w.deletion(update.deletion)
    if update.static_row is not None:
        if update.static_row.clustering:
            raise MutationEncodeError(table, "the static row has no clustering")
        _row(w, update.static_row, static_header, True, 0)
    w.uvint(sum(isinstance(r, Row) for r in update.rows))
    n_clustering = len(table.clustering)
    for item in update.rows:
        if isinstance(item, Marker):
            _marker(w, item)
        else:
            _row(w, item, regular_header, False, n_clustering)
    w.out.append(END_OF_PARTITION)
    return bytes(head + w.out)


def encode_mutation(updates: Sequence[PartitionUpdate], release: tuple[int, int] = CASSANDRA_5) -> bytes:
    """Mutation.serializer: the number of partition updates, then each (one per table, one key).

    ``release`` is the Cassandra release whose writer is imitated ((major, minor)); it only changes
    how a live complex deletion placeholder is written (see :func:`live_ldt`). The bytes are the same
    for every messaging version from 10 to 13.
    """
    if not updates:
        raise ValueError("a mutation has at least one partition update")
    key = updates[0].key
    seen: set = set()
    for update in updates:
        if update.key != key:
            raise MutationEncodeError(update.table, "the partition updates of one mutation share one partition key")
        if update.table.id in seen:
            raise MutationEncodeError(update.table, "a mutation holds one partition update per table")
        seen.add(update.table.id)
    return encode_uvint(len(updates)) + b"".join(encode_partition_update(u, release) for u in updates)


# -- from decoded records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SerializedHeader:
    """A partition header as serialized: flags, EncodingStats deltas and the header column lists."""

    flags: int
    stats_deltas: tuple[int, int, int]
    static_columns: tuple[str, ...] | None  # only serialized with a static row
    regular_columns: tuple[str, ...]


def read_serialized_header(data: bytes, offset: int) -> SerializedHeader | None:
    """The header of the partition whose key ends at ``offset`` (None for an IS_EMPTY partition).

    Diagnostic, and the stand-in for what the decoder's records do not expose: the header lists.
    """
    flags = data[offset]
    offset += 1
    if flags & IS_EMPTY:
        return None
    stats = []
    for _ in range(3):
        value, offset = read_uvint(data, offset)
        stats.append(value)

    def names() -> tuple[str, ...]:
        nonlocal offset
        count, offset = read_uvint(data, offset)
        out = []
        for _ in range(count):
            length, offset = read_uvint(data, offset)
            out.append(bytes(data[offset : offset + length]).decode("utf-8"))
            offset += length
        return tuple(out)

    static = names() if flags & HAS_STATIC_ROW else None
    regular = names()
    return SerializedHeader(flags, (stats[0], stats[1], stats[2]), static, regular)


class BatchRecords:
    """The decoder's records of a :class:`Batch` as :class:`PartitionUpdate` objects, per mutation.

    Converts the record arrays to Python once; :meth:`mutation` builds the partition updates of one
    mutation (its ordinal in the batch). The records have no header column lists, so by default
    the encoder recomputes them from the cells; ``original_headers=True`` reads them back from the
    original bytes in the batch's arena (all the decoder would need to expose for exactness).
    """

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self._partitions = batch.partitions.tolist()
        self._rows = batch.rows.tolist()
        self._cells = batch.cells.tolist()
        self._values = batch.values.tolist()
        self._by_mutation: dict[int, list[int]] = {}
        for index, p in enumerate(self._partitions):
            self._by_mutation.setdefault(p[11], []).append(index)

    def position(self, mutation: int) -> tuple[int, int]:
        """(segment id, position) of a mutation: where it is in the commit log."""
        p = self._partitions[self._by_mutation[mutation][0]]
        return p[0], p[1]

    def mutation(self, mutation: int, original_headers: bool = False) -> list[PartitionUpdate]:
        return [self.partition_update(i, original_headers) for i in self._by_mutation[mutation]]

    def serialized_header(self, partition: int) -> SerializedHeader | None:
        """The partition's header as the original bytes (the arena) hold it."""
        p = self._partitions[partition]
        return read_serialized_header(self.batch.arena, p[4] + p[5])

    def serialized_headers(self, mutation: int) -> list[SerializedHeader | None]:
        return [self.serialized_header(i) for i in self._by_mutation[mutation]]

    def partition_update(self, partition: int, original_headers: bool = False) -> PartitionUpdate:
        (_, _, _, table_index, pk_off, pk_len, pdel_ts, pdel_ldt, static_row, first_row, n_rows) = self._partitions[
            partition
        ][:11]
        table = self.batch.tables[table_index]
        columns = self.batch.data_columns(table_index)
        update = PartitionUpdate(
            table,
            self.batch.arena[pk_off : pk_off + pk_len],
            None if pdel_ts == NO_DELETION else Deletion(pdel_ts, pdel_ldt),
            None if static_row < 0 else self._row(static_row, columns),
            [self._unfiltered(i, columns) for i in range(first_row, first_row + n_rows)],
        )
        if original_headers:
            header = self.serialized_header(partition)
            if header is not None:
                update.static_columns = header.static_columns
                update.regular_columns = header.regular_columns
        return update

    def _clustering(self, first: int, count: int) -> tuple[bytes | None, ...]:
        arena = self.batch.arena
        return tuple(None if n < 0 else arena[off : off + n] for off, n in self._values[first : first + count])

    def _unfiltered(self, index: int, columns: list[ColumnDef]) -> Row | Marker:
        record = self._rows[index]
        kind = record[1]
        if kind in (ROW, STATIC_ROW):
            return self._row(index, columns)
        bound_kind, first_value, n_values = record[2], record[4], record[5]
        del_ts, del_ldt, del2_ts, del2_ldt = record[9:13]
        start = Deletion(del2_ts, del2_ldt) if kind == RT_BOUNDARY else None
        return Marker(bound_kind, self._clustering(first_value, n_values), Deletion(del_ts, del_ldt), start)

    def _row(self, index: int, columns: list[ColumnDef]) -> Row:
        (_, _, _, flags, first_value, n_values, live_ts, live_ttl, live_ldt) = self._rows[index][:9]
        (del_ts, del_ldt, _, _, first_cell, n_cells) = self._rows[index][9:]
        clustering = self._clustering(first_value, n_values)
        liveness = None
        if flags & ROW_HAS_LIVENESS:
            expiring = flags & ROW_EXPIRING
            liveness = Liveness(live_ts, live_ttl if expiring else 0, live_ldt if expiring else None)
        deletion = Deletion(del_ts, del_ldt) if flags & ROW_DELETED else None
        cells = [self._cell(c, columns) for c in self._cells[first_cell : first_cell + n_cells]]
        return Row(clustering, liveness, deletion, bool(flags & ROW_SHADOWABLE), cells)

    def _cell(self, record: tuple, columns: list[ColumnDef]) -> Cell | ComplexDeletion:
        _, column, flags, ts, ttl, ldt, path_off, path_len, value_off, value_len = record
        name = columns[column].name
        if flags & CELL_COMPLEX_DELETION:
            return ComplexDeletion(name, Deletion(ts, ldt))
        arena = self.batch.arena
        path = arena[path_off : path_off + path_len] if flags & CELL_HAS_PATH else None
        return Cell(name, ts, arena[value_off : value_off + value_len], path, ttl, None if ldt == NO_LDT else ldt)
