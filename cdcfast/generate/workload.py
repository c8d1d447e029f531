"""Workloads for ``cdcfast generate``: realistic partition updates for a schema's CDC tables.

A :class:`WorkloadSpec` names the operation mix, the row size and the seed; a :class:`Workload`
turns it into serialized mutations, one at a time, each with the change events a reader will see
in it. Operations, as CQL statements would write them:

* ``insert``: ``INSERT``: row liveness, most columns; non-frozen collections and UDTs overwritten
  (a complex deletion at ``ts - 1``, then the elements); static columns sometimes.
* ``update``: ``UPDATE ... SET``: a few columns (some set to null: tombstones), no liveness; on
  counter tables a counter increment (the leader's shard with its running total, as logged).
* ``collection``: element adds and removes on one non-frozen collection or UDT (``+``/``-``,
  ``m[k] = v``, ``DELETE m[k]``, list appends and element deletes, UDT fields), or clearing it.
* ``ttl``: ``INSERT ... USING TTL``: expiring liveness and cells.
* ``delete``: ``DELETE`` of one row (a row deletion; a partition deletion when the table has no
  clustering columns, as Cassandra writes it).
* ``partition_delete``: ``DELETE`` of a whole partition.
* ``range_delete``: ``ck > v``, ``ck < v``, ``ck1 = v`` or ``ck1 = v AND ck2 > w``: a start and an
  end range tombstone bound (tables with clustering columns only).

The operation is drawn from the mix first, then the table among those that can take it, so the
mix holds over the whole run. Updates and deletes mostly target rows written earlier (a bounded
pool per table), inserts mostly new partition keys. Write timestamps come from the caller and must
increase; every mutation has its own, so no two events are equal (a replay cannot collapse them).

Speed: building and encoding a partition update in Python costs tens of microseconds. The first
``templates`` mutations of each table and operation are built fresh and kept as byte templates;
later ones reuse a random template with a new partition key, the clustering of the row they target
and new timestamps. Only the key, the EncodingStats minima (every other timestamp and deletion time
is a delta from them) and the clustering blocks change; nothing in a mutation records offsets or
sizes of what follows them. Each template is checked once, by building it again from the same
random state at another time on another clustering and comparing the bytes, so a template is never
wrong. Counter increments are always built fresh (their values carry per-counter running totals).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import ColumnDef, Schema, TableDef
from cdcfast.errors import ConfigError
from cdcfast.events import DELETE, INSERT, PARTITION_DELETE, RANGE_DELETE, UPDATE
from cdcfast.generate.mutation import (
    CASSANDRA_4,
    CASSANDRA_5,
    DELETION_TIME_EPOCH,
    TIMESTAMP_EPOCH,
    Cell,
    ComplexDeletion,
    Deletion,
    Liveness,
    Marker,
    PartitionUpdate,
    Row,
    encode_mutation,
    encoding_stats,
)
from cdcfast.generate.values import ValueFactory, timeuuid_order
from cdcfast.values import encode
from cdcfast.values.vint import encode_uvint, read_uvint

OPERATIONS = ("insert", "update", "collection", "ttl", "delete", "partition_delete", "range_delete")
DEFAULT_MIX: dict[str, float] = {
    "insert": 50,
    "update": 25,
    "collection": 8,
    "ttl": 5,
    "delete": 7,
    "partition_delete": 2,
    "range_delete": 3,
}
NEW_KEYS = frozenset({"insert", "ttl"})
WIDE_PARTITIONS = 0.25  # inserts into tables with clustering columns: share that adds a row to a known partition
DEFAULT_TTLS = (60, 3600, 86_400, 7 * 86_400)
PADDABLE = frozenset({"text", "ascii", "blob", "custom"})
U64 = 2**64 - 1

# Range tombstone bound kinds (ClusteringPrefix.Kind ordinals)
EXCL_END, INCL_START, INCL_END, EXCL_START = 0, 1, 6, 7


def parse_mix(text: str | Mapping[str, float]) -> dict[str, float]:
    """``insert=60,update=25,delete=10`` -> weights per operation (unnamed operations get 0)."""
    items: list[tuple[str, float]] = []
    if isinstance(text, Mapping):
        items = [(str(k), float(v)) for k, v in text.items()]
    else:
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, number = part.partition("=")
            if not sep:
                raise ConfigError(f"--mix: expected OPERATION=WEIGHT, got {part!r}")
            try:
                items.append((name.strip(), float(number)))
            except ValueError:
                raise ConfigError(f"--mix: {name.strip()}: {number!r} is not a number") from None
    mix = dict.fromkeys(OPERATIONS, 0.0)
    for name, weight in items:
        if name not in mix:
            raise ConfigError(f"--mix: unknown operation {name!r} (known: {', '.join(OPERATIONS)})")
        if weight < 0:
            raise ConfigError(f"--mix: {name} has a negative weight")
        mix[name] = float(weight)
    if not any(mix.values()):
        raise ConfigError("--mix: every weight is 0")
    return mix


@dataclass(frozen=True)
class WorkloadSpec:
    """What to generate. ``keyspaces``/``tables`` filter the schema's CDC tables (``ks.table`` or
    ``table``); ``row_size`` pads inserted rows (text and blob columns) to about that many bytes."""

    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    row_size: int | None = None
    seed: int = 0
    keyspaces: Sequence[str] = ()
    tables: Sequence[str] = ()
    templates: int = 256  # byte templates kept per table and operation; 0: every mutation built fresh
    ttls: Sequence[int] = DEFAULT_TTLS
    pool_size: int = 4096  # recently written keys per table, that updates and deletes target


def select_tables(schema: Schema, keyspaces: Sequence[str] = (), tables: Sequence[str] = ()) -> list[TableDef]:
    """The schema's CDC tables, filtered by keyspace and table names, in a stable order."""
    chosen = []
    for table in sorted(schema.cdc_tables(), key=lambda t: t.qualified_name):
        if keyspaces and table.keyspace not in keyspaces:
            continue
        if tables and table.name not in tables and table.qualified_name not in tables:
            continue
        chosen.append(table)
    if not chosen:
        wanted = ", ".join([*keyspaces, *tables]) or "any"
        raise ConfigError(f"{schema.source}: no CDC table matches ({wanted})")
    return chosen


def events_of(update: PartitionUpdate) -> tuple[str, ...]:
    """The change events a reader makes of ``update`` (cdcfast.events): one per partition deletion,
    static row, row and range deletion."""
    out: list[str] = []
    if update.deletion is not None:
        out.append(PARTITION_DELETE)
    rows = ([update.static_row] if update.static_row is not None else []) + list(update.rows)
    opened = False
    for item in rows:
        if isinstance(item, Marker):
            if item.kind in (INCL_START, EXCL_START):
                opened = True
            elif opened:
                out.append(RANGE_DELETE)
                opened = False
            continue
        if item.liveness is not None:
            out.append(INSERT)
        elif item.deletion is not None and not item.cells:
            out.append(DELETE)
        else:
            out.append(UPDATE)
    return tuple(out)


class Generated(NamedTuple):
    """One mutation: its bytes, its table, the operation and the events it holds."""

    table: TableDef
    operation: str
    mutation: bytes
    events: tuple[str, ...]


PoolEntry = tuple[bytes, tuple[bytes | None, ...], bytes]  # partition key, clustering, clustering block

_UVINT_MASKS = [0] + [((0xFF << (9 - size)) & 0xFF) << (8 * (size - 1)) for size in range(1, 9)]
_UVINT_SIZES = [1] * 8 + [min(9, 1 + (bits - 1) // 7) for bits in range(8, 65)]


def fast_uvint(value: int) -> bytes:
    """:func:`cdcfast.values.vint.encode_uvint` for ``0 <= value < 2**64``, without its checks."""
    if value < 0x80:
        return _BYTES[value]
    size = _UVINT_SIZES[value.bit_length()]
    if size == 9:
        return b"\xff" + value.to_bytes(8, "big")
    return (value | _UVINT_MASKS[size]).to_bytes(size, "big")


_BYTES = [bytes((i,)) for i in range(256)]


def clustering_block(table: TableDef, values: Sequence[bytes | None]) -> bytes:
    """A row's clustering as serialized: per 32 values a vint header of null/empty bits, then the
    non-empty values (fixed-length types without a length) (§4.6.4)."""
    out = bytearray()
    for start in range(0, len(values), 32):
        block = values[start : start + 32]
        header = 0
        for i, value in enumerate(block):
            if value is None:
                header |= 1 << (2 * i + 1)
            elif not value:
                header |= 1 << (2 * i)
        out += encode_uvint(header)
        for i, value in enumerate(block):
            if value:
                if table.clustering[start + i].type.fixed_length < 0:
                    out += encode_uvint(len(value))
                out += value
    return bytes(out)


@dataclass
class Template:
    """A mutation's bytes split around what changes from one use to the next: the partition key,
    the EncodingStats minima (all other times are deltas from them) and the clustering blocks of
    its rows and range tombstone bounds (``slots``: how many clustering values each holds)."""

    table: TableDef
    head: bytes  # partition update count and table id
    flags: bytes
    min_ts: int
    ts: int
    min_ldt: int | None  # None: no deletion time in the update (the stats hold the epoch)
    now: int
    ldt_bytes: bytes
    ttl_bytes: bytes
    rest: bytes  # everything after the stats, with the template's own clustering
    pieces: tuple[bytes, ...]  # ``rest`` without the clustering blocks: one more than the slots
    slots: tuple[int, ...]
    events: tuple[str, ...]
    clustering: tuple[bytes | None, ...]
    block: bytes  # the template's own full clustering block

    def instantiate(
        self, key: bytes, ts: int, now: int, clustering: tuple[bytes | None, ...] | None = None, block: bytes = b""
    ) -> bytes:
        """The mutation for ``key`` at ``ts``/``now``; on the row ``clustering`` (whose full block is
        ``block``) when given, else on the template's own."""
        if self.min_ldt is None:
            ldt = self.ldt_bytes
        else:
            ldt = fast_uvint(_int32_as_u64(self.min_ldt + (now - self.now) - DELETION_TIME_EPOCH))
        slots = self.slots
        if clustering is None or not slots:
            rest = self.rest
        elif len(slots) == 1 and slots[0] == len(clustering):
            rest = block.join(self.pieces)
        else:
            parts = [self.pieces[0]]
            for size, piece in zip(slots, self.pieces[1:]):
                parts.append(block if size == len(clustering) else clustering_block(self.table, clustering[:size]))
                parts.append(piece)
            rest = b"".join(parts)
        return b"".join(
            (
                self.head,
                fast_uvint(len(key)),
                key,
                self.flags,
                fast_uvint((self.min_ts + (ts - self.ts) - TIMESTAMP_EPOCH) & U64),
                ldt,
                self.ttl_bytes,
                rest,
            )
        )


def _int32_as_u64(delta: int) -> int:
    delta &= 0xFFFFFFFF
    if delta >= 2**31:
        delta -= 2**32
    return delta & U64


def split_mutation(mutation: bytes) -> tuple[bytes, bytes, bytes, tuple[bytes, bytes, bytes], bytes]:
    """(head, key, flags, (ts, ldt, ttl) stat vints, rest) of a one-partition-update mutation."""
    count, offset = read_uvint(mutation, 0)
    if count != 1:
        raise ValueError("templates hold one partition update")
    head_end = offset + 16
    key_len, key_start = read_uvint(mutation, head_end)
    flags_at = key_start + key_len
    stats = []
    offset = flags_at + 1
    for _ in range(3):
        start = offset
        _, offset = read_uvint(mutation, offset)
        stats.append(mutation[start:offset])
    return (
        mutation[:head_end],
        mutation[key_start:flags_at],
        mutation[flags_at : flags_at + 1],
        (stats[0], stats[1], stats[2]),
        mutation[offset:],
    )


def find_slots(
    rest: bytes, blocks: Sequence[bytes], rest_other: bytes, blocks_other: Sequence[bytes]
) -> list[int] | None:
    """Where ``blocks`` sit in ``rest``, in order, such that putting ``blocks_other`` there gives ``rest_other``."""

    def search(index: int, start: int, cuts: list[int]) -> list[int] | None:
        if index == len(blocks):
            parts, previous = [], 0
            for at, block, other in zip(cuts, blocks, blocks_other):
                parts += [rest[previous:at], other]
                previous = at + len(block)
            parts.append(rest[previous:])
            return cuts if b"".join(parts) == rest_other else None
        at = rest.find(blocks[index], start)
        while at >= 0:
            found = search(index + 1, at + len(blocks[index]), [*cuts, at])
            if found is not None:
                return found
            at = rest.find(blocks[index], at + 1)
        return None

    return search(0, 0, [])


def clustering_slots(update: PartitionUpdate) -> tuple[int, ...]:
    """How many clustering values each row and range tombstone bound of ``update`` serializes, in order."""
    return tuple(len(item.clustering) for item in update.rows if item.clustering)


@dataclass
class _Columns:
    simple: list[ColumnDef]
    complex: list[ColumnDef]


class TableWorkload:
    """One table: its keys, its operations as partition updates, its key pool and templates."""

    def __init__(self, table: TableDef, rng: random.Random, spec: WorkloadSpec, release: tuple[int, int]) -> None:
        self.table = table
        self.rng = rng
        self.spec = spec
        self.release = release
        self.values = ValueFactory(rng)
        live = list(table.columns.values())  # (the run starts after every drop: see run.py)
        self.regular = _Columns(
            [c for c in live if c.kind == "regular" and not c.type.is_complex],
            [c for c in live if c.kind == "regular" and c.type.is_complex],
        )
        self.static = _Columns(
            [c for c in live if c.kind == "static" and not c.type.is_complex],
            [c for c in live if c.kind == "static" and c.type.is_complex],
        )
        self.counter = any(c.type.is_counter for c in live)
        self.paddable = [c for c in self.regular.simple if c.type.kind in PADDABLE]
        self.key_serial = rng.randrange(10**6)
        self.key_parts = [self._key_maker(c.type) for c in table.partition_key]
        self.pool: list[PoolEntry] = []
        self.counts: dict[tuple[bytes, str], int] = {}
        self.templates: dict[str, list[Template]] = {op: [] for op in OPERATIONS}
        self.uncheckable: dict[str, int] = {}  # fresh builds whose template check failed, per operation
        self.check_values = ValueFactory(random.Random(rng.getrandbits(64)))  # other clusterings, for checks

    # -- what the table can take ----------------------------------------------------------------
    def supports(self, operation: str) -> bool:
        has_columns = bool(self.regular.simple or self.regular.complex or self.static.simple or self.static.complex)
        if operation in ("insert", "ttl"):
            return not self.counter
        if operation == "update":
            return has_columns
        if operation == "collection":
            return not self.counter and bool(self.regular.complex or self.static.complex)
        if operation == "range_delete":
            return bool(self.table.clustering)
        return operation in ("delete", "partition_delete")

    def templated(self, operation: str) -> bool:
        """Whether ``operation`` reuses byte templates here (counter values are built each time)."""
        return self.spec.templates > 0 and not (self.counter and operation == "update")

    # -- keys -------------------------------------------------------------------------------------
    def new_key(self) -> bytes:
        """A partition key not used before in this run (a serial number or random bits in every component)."""
        self.key_serial += 1
        serial = self.key_serial
        if len(self.key_parts) == 1:
            return self.key_parts[0](serial)
        parts = [make(serial) for make in self.key_parts]
        return b"".join(len(p).to_bytes(2, "big") + p + b"\x00" for p in parts)

    def _key_maker(self, ctype: CqlType) -> Any:
        kind = ctype.kind
        rng = self.rng
        if kind in ("text", "ascii"):
            prefix = self.table.name
            return lambda serial: f"{prefix}-{serial:08d}".encode()
        if kind in ("int", "bigint", "smallint", "tinyint", "varint", "timestamp", "time", "date"):
            bits = {"tinyint": 8, "smallint": 16, "int": 32, "date": 16}.get(kind, 48)
            sign = -1 if kind == "date" else 1  # dates: days back from 2026-01-01
            base = 20_454 if kind == "date" else 0
            return lambda serial: encode(ctype, base + sign * (serial % (2 ** (bits - 1))))
        if kind == "blob":
            return lambda serial: serial.to_bytes(8, "big")
        if kind == "uuid":

            def random_uuid(serial: int) -> bytes:
                raw = bytearray(rng.randbytes(16))
                raw[6] = raw[6] & 0x0F | 0x40
                raw[8] = raw[8] & 0x3F | 0x80
                return bytes(raw)

            return random_uuid
        return lambda serial: self.values.encoded(ctype)  # timeuuid and the rest: random

    def clustering(self, values: ValueFactory | None = None) -> tuple[bytes | None, ...]:
        factory = values or self.values
        return tuple(factory.encoded(c.type, c.name) for c in self.table.clustering)

    def remember(self, key: bytes, clustering: tuple[bytes | None, ...], block: bytes | None = None) -> None:
        entry = (key, clustering, clustering_block(self.table, clustering) if block is None else block)
        if len(self.pool) < self.spec.pool_size:
            self.pool.append(entry)
        else:
            victim = int(self.rng.random() * len(self.pool))
            if self.counter:
                self.forget_counts(self.pool[victim][0])
            self.pool[victim] = entry

    def known(self) -> PoolEntry:
        """A key, clustering and clustering block written earlier, else new ones."""
        if self.pool:
            return self.pool[int(self.rng.random() * len(self.pool))]
        clustering = self.clustering()
        return self.new_key(), clustering, clustering_block(self.table, clustering)

    def forget_counts(self, key: bytes) -> None:
        """A deleted counter partition starts again from 0."""
        for column in self.regular.simple + self.static.simple:
            self.counts.pop((key, column.name), None)

    # -- cells ------------------------------------------------------------------------------------
    def _simple(self, column: ColumnDef, ts: int, ttl: int, now: int) -> Cell:
        value = self.values.encoded(column.type, column.name)
        return Cell(column.name, ts, value, ttl=ttl, ldt=now + ttl if ttl else None)

    def _complex(self, column: ColumnDef, ts: int, ttl: int, now: int) -> list[Cell | ComplexDeletion]:
        """A whole non-frozen collection or UDT written: the overwrite's deletion, then the elements."""
        items: list[Cell | ComplexDeletion] = [ComplexDeletion(column.name, Deletion(ts - 1, now))]
        items.extend(self._elements(column, ts, ttl, now, self.rng.randint(0, 4)))
        return items

    def _elements(self, column: ColumnDef, ts: int, ttl: int, now: int, count: int) -> list[Cell | ComplexDeletion]:
        ctype = column.type
        ldt = now + ttl if ttl else None
        kind = ctype.kind
        cells: list[Cell | ComplexDeletion] = []
        if kind == "list":  # appends: new timeuuid paths, in their order
            for path in self._list_paths(count):
                cells.append(Cell(column.name, ts, self.values.encoded(ctype.params[0]), path, ttl, ldt))
        elif kind == "set":
            for raw, _ in self.values.elements(ctype.params[0], count, column.name):
                cells.append(Cell(column.name, ts, b"", raw, ttl, ldt))
        elif kind == "map":
            for raw, _ in self.values.elements(ctype.params[0], count, column.name):
                cells.append(Cell(column.name, ts, self.values.encoded(ctype.params[1]), raw, ttl, ldt))
        else:  # a non-frozen UDT: one cell per non-null field, in field order
            for index, (name, ftype) in enumerate(zip(ctype.field_names, ctype.params)):
                if self.rng.random() < 0.85:
                    value = self.values.encoded(ftype, name)
                    cells.append(Cell(column.name, ts, value, index.to_bytes(2, "big"), ttl, ldt))
        return cells

    def _removals(self, column: ColumnDef, ts: int, now: int) -> list[Cell | ComplexDeletion]:
        """Element deletions: tombstones at element paths (set/map keys, list cells, UDT fields)."""
        ctype = column.type
        count = self.rng.randint(1, 2)
        if ctype.kind == "list":
            paths = self._list_paths(count)
        elif ctype.kind in ("set", "map"):
            paths = [raw for raw, _ in self.values.elements(ctype.params[0], count, column.name)]
        else:
            paths = [i.to_bytes(2, "big") for i in sorted(self.rng.sample(range(len(ctype.field_names)), 1))]
        return [Cell(column.name, ts, b"", path, ldt=now) for path in paths]

    def _list_paths(self, count: int) -> list[bytes]:
        """Distinct list cell paths (timeuuids) in TimeUUIDType order."""
        paths = {timeuuid_order(raw): raw for raw in (self.values.timeuuid().bytes for _ in range(count))}
        return [paths[k] for k in sorted(paths)]

    def _row_cells(self, columns: _Columns, ts: int, ttl: int, now: int, keep: float) -> list[Cell | ComplexDeletion]:
        cells: list[Cell | ComplexDeletion] = []
        for column in columns.simple:
            if self.rng.random() < keep:
                cells.append(self._simple(column, ts, ttl, now))
        for column in columns.complex:
            if self.rng.random() < keep:
                cells.extend(self._complex(column, ts, ttl, now))
        return cells

    # -- operations -------------------------------------------------------------------------------
    def build(
        self,
        operation: str,
        key: bytes,
        clustering: tuple[bytes | None, ...],
        ts: int,
        now: int,
        single_event: bool = False,
    ) -> PartitionUpdate:
        """The partition update of ``operation`` on ``key`` (and ``clustering``) at ``ts``, ``now``.

        ``single_event``: no static row next to a regular row (the caller has one event left)."""
        table = self.table
        if operation in ("insert", "ttl"):
            ttl = self.rng.choice(list(self.spec.ttls)) if operation == "ttl" else 0
            return self._insert(key, clustering, ts, now, ttl, single_event)
        if operation == "update":
            if self.counter:
                return self._counter_update(key, clustering, ts)
            return self._update(key, clustering, ts, now, single_event)
        if operation == "collection":
            return self._collection(key, clustering, ts, now)
        if operation == "delete":
            if table.clustering:
                return PartitionUpdate(table, key, rows=[Row(clustering, deletion=Deletion(ts, now))])
            return PartitionUpdate(table, key, deletion=Deletion(ts, now))
        if operation == "partition_delete":
            return PartitionUpdate(table, key, deletion=Deletion(ts, now))
        if operation == "range_delete":
            return PartitionUpdate(table, key, rows=list(self._range(clustering, Deletion(ts, now))))
        raise ConfigError(f"unknown operation {operation!r}")

    def _insert(
        self, key: bytes, clustering: tuple[bytes | None, ...], ts: int, now: int, ttl: int, single_event: bool
    ) -> PartitionUpdate:
        liveness = Liveness(ts, ttl, now + ttl) if ttl else Liveness(ts)
        row = Row(clustering, liveness, cells=self._row_cells(self.regular, ts, ttl, now, 0.9))
        static = None
        if (self.static.simple or self.static.complex) and not single_event and self.rng.random() < 0.3:
            cells = self._row_cells(self.static, ts, ttl, now, 0.9)
            static = Row((), cells=cells) if cells else None
        update = PartitionUpdate(self.table, key, static_row=static, rows=[row])
        if self.spec.row_size:
            self._pad(update, row, ts, ttl, now)
        return update

    def _pad(self, update: PartitionUpdate, row: Row, ts: int, ttl: int, now: int) -> None:
        """Grow a text/blob cell of ``row`` so that the mutation is about ``row_size`` bytes."""
        if not self.paddable or self.spec.row_size is None:
            return
        missing = self.spec.row_size - len(encode_mutation([update], self.release))
        if missing <= 0:
            return
        column = self.rng.choice(self.paddable)
        cells = [c for c in row.cells if not (isinstance(c, Cell) and c.column == column.name)]
        old = next((c for c in row.cells if isinstance(c, Cell) and c.column == column.name), None)
        base = old.value if old is not None else b""
        grow = max(missing - (0 if old is not None else len(column.name) + 4), 1)
        if column.type.kind in ("blob", "custom"):
            value = base + self.rng.randbytes(grow)
        else:
            value = base + self.values.padding(grow).encode()
        cells.append(Cell(column.name, ts, value, ttl=ttl, ldt=now + ttl if ttl else None))
        row.cells = cells

    def _update(
        self, key: bytes, clustering: tuple[bytes | None, ...], ts: int, now: int, single_event: bool
    ) -> PartitionUpdate:
        rng = self.rng
        static_columns = self.static.simple
        regular_columns = self.regular.simple
        touch_static = bool(static_columns) and (not regular_columns and not self.regular.complex or rng.random() < 0.2)
        static = None
        if touch_static:
            column = rng.choice(static_columns)
            static = Row((), cells=[self._set_or_null(column, ts, now)])
            if single_event or rng.random() < 0.5:
                return PartitionUpdate(self.table, key, static_row=static)
        cells: list[Cell | ComplexDeletion] = []
        if regular_columns:
            for column in rng.sample(regular_columns, rng.randint(1, min(3, len(regular_columns)))):
                cells.append(self._set_or_null(column, ts, now))
        if self.regular.complex and (not cells or rng.random() < 0.2):
            cells.extend(self._complex(rng.choice(self.regular.complex), ts, 0, now))
        if not cells:
            return PartitionUpdate(self.table, key, static_row=static)
        return PartitionUpdate(self.table, key, static_row=static, rows=[Row(clustering, cells=cells)])

    def _set_or_null(self, column: ColumnDef, ts: int, now: int) -> Cell:
        if self.rng.random() < 0.12:
            return Cell(column.name, ts, b"", ldt=now)  # SET c = null: a tombstone
        return self._simple(column, ts, 0, now)

    def _counter_update(self, key: bytes, clustering: tuple[bytes | None, ...], ts: int) -> PartitionUpdate:
        rng = self.rng
        columns = self.regular.simple or self.static.simple
        chosen = sorted(rng.sample(columns, rng.randint(1, len(columns))), key=lambda c: c.name)
        cells: list[Cell | ComplexDeletion] = []
        for column in chosen:
            total = self.counts.get((key, column.name), 0) + rng.choice((1, 1, 1, 2, 5, -1))
            self.counts[(key, column.name)] = total
            context = self.values.counter(total, ts)
            cells.append(Cell(column.name, ts, encode(column.type, context)))
        if columns is self.static.simple:
            return PartitionUpdate(self.table, key, static_row=Row((), cells=cells))
        return PartitionUpdate(self.table, key, rows=[Row(clustering, cells=cells)])

    def _collection(self, key: bytes, clustering: tuple[bytes | None, ...], ts: int, now: int) -> PartitionUpdate:
        rng = self.rng
        candidates = self.regular.complex + self.static.complex
        column = rng.choice(candidates)
        action = rng.random()
        items: list[Cell | ComplexDeletion]
        if action < 0.1:  # DELETE col: the whole collection
            items = [ComplexDeletion(column.name, Deletion(ts, now))]
        elif action < 0.4:  # element removes
            items = list(self._removals(column, ts, now))
        else:  # element adds / field sets
            items = list(self._elements(column, ts, 0, now, rng.randint(1, 3)))
            if not items:
                items = list(self._removals(column, ts, now))
        row = Row(() if column.kind == "static" else clustering, cells=items)
        if column.kind == "static":
            return PartitionUpdate(self.table, key, static_row=row)
        return PartitionUpdate(self.table, key, rows=[row])

    def _range(self, clustering: tuple[bytes | None, ...], deletion: Deletion) -> list[Marker]:
        """``ck1 = a`` (several clustering columns), else ``ck1 > a`` / ``ck1 < a``, or with several
        clustering columns ``ck1 = a AND ck2 > b``: a start bound then an end bound, in clustering order."""
        columns = self.table.clustering
        rng = self.rng
        shape = rng.random()
        if len(columns) > 1 and shape < 0.4:
            prefix = clustering[:1]
            return [Marker(INCL_START, prefix, deletion), Marker(INCL_END, prefix, deletion)]
        size = 2 if len(columns) > 1 and shape < 0.7 else 1
        bound = clustering[:size]
        outer = clustering[: size - 1]  # the equality prefix, () for a slice on the first column
        greater = rng.random() < 0.5
        # "ck > v" covers the clustering order after v, unless the column is DESC (then before it).
        after = greater != columns[size - 1].reversed
        if after:
            return [Marker(EXCL_START, bound, deletion), Marker(INCL_END, outer, deletion)]
        return [Marker(INCL_START, outer, deletion), Marker(EXCL_END, bound, deletion)]

    # -- templates --------------------------------------------------------------------------------
    def template(
        self,
        operation: str,
        update: PartitionUpdate,
        mutation: bytes,
        ts: int,
        now: int,
        state: Any,
        clustering: tuple[bytes | None, ...],
    ) -> Template | None:
        """A template of ``mutation``, if building it again from the same random state at another
        time, with another clustering, changes exactly the stats and the clustering block."""
        shift, seconds = 987_654_321_000, 987_654
        other_clustering = self.other_clustering(clustering)
        if other_clustering is None:
            return None
        after = self.rng.getstate()
        self.rng.setstate(state)
        try:
            again = self.build(operation, update.key, other_clustering, ts + shift, now + seconds)
            other = encode_mutation([again], self.release)
        finally:
            self.rng.setstate(after)
        head, _, flags, (_, ldt_bytes, ttl_bytes), rest = split_mutation(mutation)
        _, _, _, (_, _, ttl_other), rest_other = split_mutation(other)
        stats, stats_other = encoding_stats(update, self.release), encoding_stats(again, self.release)
        if ttl_bytes != ttl_other or stats_other.min_timestamp - stats.min_timestamp != shift:
            return None
        if stats.min_ldt == stats_other.min_ldt == DELETION_TIME_EPOCH:
            min_ldt = None
        elif stats_other.min_ldt - stats.min_ldt == seconds:
            min_ldt = stats.min_ldt
        else:
            return None
        slots = clustering_slots(update)
        if clustering_slots(again) != slots:
            return None
        blocks = [clustering_block(self.table, clustering[:size]) for size in slots]
        others = [clustering_block(self.table, other_clustering[:size]) for size in slots]
        cuts = find_slots(rest, blocks, rest_other, others)
        if cuts is None:
            return None
        pieces, previous = [], 0
        for at, block in zip(cuts, blocks):
            pieces.append(rest[previous:at])
            previous = at + len(block)
        pieces.append(rest[previous:])
        return Template(
            self.table,
            head,
            flags,
            stats.min_timestamp,
            ts,
            min_ldt,
            now,
            ldt_bytes,
            ttl_bytes,
            rest,
            tuple(pieces),
            slots,
            events_of(update),
            clustering,
            clustering_block(self.table, clustering),
        )

    def other_clustering(self, clustering: tuple[bytes | None, ...]) -> tuple[bytes | None, ...] | None:
        """A clustering whose every value differs from ``clustering``'s (drawn apart from the workload)."""
        for _ in range(20):
            other = self.clustering(self.check_values)
            if all(a != b for a, b in zip(other, clustering)):
                return other
        return None


class _Plan:
    """One (table, operation) the workload draws, with what its hot path needs at hand."""

    __slots__ = ("new_key", "operation", "table", "templated", "templates", "wide")

    def __init__(self, table: TableWorkload, operation: str) -> None:
        self.table = table
        self.operation = operation
        self.templates = table.templates[operation]
        self.templated = table.templated(operation)
        self.new_key = operation in NEW_KEYS
        self.wide = bool(table.table.clustering)


class Workload:
    """Mutations for a schema's CDC tables, following a :class:`WorkloadSpec`, one per :meth:`next`."""

    def __init__(self, schema: Schema, spec: WorkloadSpec, version: int = 8) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        release = CASSANDRA_5 if version >= 8 else CASSANDRA_4
        self.tables = [
            TableWorkload(t, random.Random(self.rng.getrandbits(64)), spec, release)
            for t in select_tables(schema, spec.keyspaces, spec.tables)
        ]
        mix = parse_mix(spec.mix)
        candidates = {op: [t for t in self.tables if t.supports(op)] for op in OPERATIONS}
        self.unsupported = sorted(op for op, w in mix.items() if w and not candidates[op])
        self.operations = [op for op in OPERATIONS if mix[op] and candidates[op]]
        if not self.operations:
            raise ConfigError(f"--mix: no selected table can take {', '.join(op for op in mix if mix[op])}")
        self.weights = [mix[op] for op in self.operations]
        # The operation first (so the mix holds), then a table that can take it, uniformly.
        self._plans = [_Plan(t, op) for op in self.operations for t in candidates[op]]
        cumulative, total = [], 0.0
        for plan in self._plans:
            total += mix[plan.operation] / len(candidates[plan.operation])
            cumulative.append(total)
        self._cumulative = cumulative
        self._draws: list[_Plan] = []
        self.fresh = 0
        self.reused = 0

    @property
    def effective_mix(self) -> dict[str, float]:
        """The mix's shares once operations no selected table can take are left out."""
        total = sum(self.weights)
        return {op: w / total for op, w in zip(self.operations, self.weights)}

    def prepare(self, ts: int, now: int) -> int:
        """Fill every template pool now (new keys, nothing remembered), so that later mutations
        cost the same from the first one: what a paced stream needs. Returns the templates made."""
        made = 0
        for plan in self._plans:
            table = plan.table
            for _ in range(4 * self.spec.templates if plan.templated else 0):
                if len(plan.templates) >= self.spec.templates:
                    break
                key, clustering = table.new_key(), table.clustering()
                state = table.rng.getstate()
                update = table.build(plan.operation, key, clustering, ts, now)
                mutation = encode_mutation([update], table.release)
                template = table.template(plan.operation, update, mutation, ts, now, state, clustering)
                if template is not None:
                    plan.templates.append(template)
                    made += 1
        return made

    def next(self, ts: int, now: int, max_events: int | None = None) -> Generated:
        """The next mutation, written at ``ts`` (microseconds) on a node whose clock says ``now``
        (seconds); at most ``max_events`` events (at least 1)."""
        capacity = self.spec.templates
        for _ in range(50):
            if not self._draws:
                self._draws = self.rng.choices(self._plans, cum_weights=self._cumulative, k=4096)
            plan = self._draws.pop()
            table = plan.table
            templates = plan.templates
            if plan.templated and len(templates) >= capacity:
                # The hot path: a template with a new key (inserts) or a key written earlier.
                rnd = table.rng.random
                template = templates[int(rnd() * len(templates))]
                if max_events is None or len(template.events) <= max_events:
                    self.reused += 1
                    pool = table.pool
                    if plan.new_key:
                        if plan.wide and pool and rnd() < WIDE_PARTITIONS:
                            key = pool[int(rnd() * len(pool))][0]
                        else:
                            key = table.new_key()
                        table.remember(key, template.clustering, template.block)
                        mutation = template.instantiate(key, ts, now)
                    else:
                        key, clustering, block = pool[int(rnd() * len(pool))] if pool else table.known()
                        mutation = template.instantiate(key, ts, now, clustering, block)
                    return Generated(table.table, plan.operation, mutation, template.events)
            made = self._make(table, plan.operation, ts, now, max_events == 1)
            if max_events is None or len(made.events) <= max_events:
                return made
        table = self.tables[0]
        update = table.build("partition_delete", table.known()[0], (), ts, now)
        return Generated(table.table, "partition_delete", encode_mutation([update], table.release), events_of(update))

    def _make(self, table: TableWorkload, operation: str, ts: int, now: int, single_event: bool) -> Generated:
        templated = table.templated(operation)
        pool = table.templates[operation]
        new_key = operation in NEW_KEYS
        if new_key:
            reuse = table.table.clustering and table.pool and table.rng.random() < WIDE_PARTITIONS
            key = table.known()[0] if reuse else table.new_key()
        else:
            key, clustering, block = table.known()
        if templated and len(pool) >= self.spec.templates:
            template = pool[int(table.rng.random() * len(pool))]
            if not (single_event and len(template.events) > 1):
                self.reused += 1
                if new_key:
                    table.remember(key, template.clustering, template.block)
                    return Generated(table.table, operation, template.instantiate(key, ts, now), template.events)
                mutation = template.instantiate(key, ts, now, clustering, block)
                return Generated(table.table, operation, mutation, template.events)
        if new_key:
            clustering = table.clustering()
        keep = templated and len(pool) < self.spec.templates and not single_event
        state = table.rng.getstate() if keep else None
        update = table.build(operation, key, clustering, ts, now, single_event)
        mutation = encode_mutation([update], table.release)
        self.fresh += 1
        if keep:
            made = table.template(operation, update, mutation, ts, now, state, clustering)
            if made is not None:
                pool.append(made)
            else:
                table.uncheckable[operation] = table.uncheckable.get(operation, 0) + 1
        if new_key or (operation == "update" and table.counter):
            table.remember(key, clustering)
        elif table.counter and update.deletion is not None:
            table.forget_counts(key)
        return Generated(table.table, operation, mutation, events_of(update))
