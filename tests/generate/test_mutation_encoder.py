"""The mutation encoder (issue 7): decoded records back into Cassandra's serialized mutation bytes.

Corpus test: every user-keyspace mutation of every corpus is decoded by the reader, turned into
partition updates (:class:`BatchRecords`) and re-encoded; the bytes must equal the node's own.

* The records lack one thing the bytes need: the header column lists (a statement's columns may
  have no cell in a row, e.g. an unset bind value). The decoder does not expose them, so the
  comparison takes them from the original bytes (``original_headers=True``, read from the batch
  arena); a second pass without them counts what recomputing them from the cells gets wrong.
* Mutations whose records are incomplete are compared separately: the decoder drops the cells of
  dropped columns written before the drop (as Cassandra's reader does). They are found by decoding
  twice, with the schema and with the same schema with every drop forgotten; records that differ
  are incomplete, and the forgotten-drops records must still re-encode byte for byte.

Hypothesis tests: random partition updates over synthetic tables (every wire shape: fixed and
prefixed values, complex columns, 64+ column subsets, markers, TTLs, extreme timestamps) and over
the corpus tables encode, decode back to the same partition updates and re-encode to the same bytes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from conftest import USER_KEYSPACES, Corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcfast import _commitlog
from cdcfast.commitlog import CommitLogReader, Schema
from cdcfast.commitlog.batch import Batch
from cdcfast.commitlog.schema import ColumnDef, TableDef, load_schema_file, schema_files, schema_from_rows
from cdcfast.commitlog.segment import discover, raw_entries
from cdcfast.generate.framing import entry
from cdcfast.generate.mutation import (
    CASSANDRA_4,
    CASSANDRA_5,
    NO_STATS,
    BatchRecords,
    Cell,
    ComplexDeletion,
    Deletion,
    Liveness,
    Marker,
    PartitionUpdate,
    Row,
    cassandra_order,
    encode_mutation,
    encoding_stats,
    header_columns,
)
from cdcfast.values.vint import encode_uvint, read_uvint

# -- corpus comparison ---------------------------------------------------------------------------


def schema_with_history(folder: Path) -> Schema:
    """The final schema plus the tables dropped during the workload (shop.scratch), as the last
    schema that had them defined them: their mutations are user mutations too."""
    files = schema_files(folder)
    final = load_schema_file(files[-1])
    tables = dict(final.tables)
    for path in reversed(files[:-1]):
        for table_id, table in load_schema_file(path).tables.items():
            tables.setdefault(table_id, table)
    return replace(final, tables=tables)


def ignoring_drops(schema: Schema) -> Schema:
    """The same schema with every column drop forgotten: the decoder then keeps dropped columns' cells."""

    def undrop(columns: dict[str, ColumnDef]) -> dict[str, ColumnDef]:
        return {name: replace(column, dropped_at_us=None) for name, column in columns.items()}

    tables = {
        tid: replace(table, columns=undrop(table.columns), dropped=undrop(table.dropped))
        for tid, table in schema.tables.items()
    }
    return replace(schema, tables=tables)


def decode_by_position(schema: Schema, cdc_raw: Path) -> dict[tuple[int, int], tuple[BatchRecords, int]]:
    """(segment id, position) -> the records of that mutation, for everything the reader decodes."""
    found: dict[tuple[int, int], tuple[BatchRecords, int]] = {}
    for batch in CommitLogReader(schema).read_paths([cdc_raw]):
        records = BatchRecords(batch)
        for ordinal in range(batch.mutation_count):
            found[records.position(ordinal)] = (records, ordinal)
    return found


def first_table_id(mutation: bytes) -> uuid.UUID:
    _, offset = read_uvint(mutation, 0)
    return uuid.UUID(bytes=mutation[offset : offset + 16])


def dropped_cells(updates: list[PartitionUpdate], schema: Schema) -> int:
    """Cells and complex deletions of ``updates`` that ``schema`` says were dropped (ts <= drop time)."""
    count = 0
    for update in updates:
        table = schema.tables[update.table.id]
        rows = [r for r in [update.static_row, *update.rows] if isinstance(r, Row)]
        for row in rows:
            for item in row.cells:
                column = table.columns.get(item.column) or table.dropped[item.column]
                ts = item.deletion.ts if isinstance(item, ComplexDeletion) else item.ts
                if column.dropped_at_us is not None and ts <= column.dropped_at_us:
                    count += 1
    return count


def first_difference(mine: bytes, original: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(mine, original)) if a != b), min(len(mine), len(original)))
    return (
        f"first differing byte {at} of {len(original)} (encoded {len(mine)}): "
        f"original ...{original[max(0, at - 8) : at + 8].hex()} encoded ...{mine[max(0, at - 8) : at + 8].hex()}"
    )


def mismatch_cause(
    records: BatchRecords, ordinal: int, updates: list[PartitionUpdate], original: bytes, release: tuple[int, int]
) -> tuple[str, str]:
    """Why re-encoding differs: the first partition-level writer choice that differs from the
    original header, else where the bytes first differ. Returns (cause, detail)."""
    for update, header in zip(updates, records.serialized_headers(ordinal)):
        if header is None:
            continue
        stats = update.stats if update.stats is not None else encoding_stats(update, release)
        if stats.deltas() != header.stats_deltas:
            return "stats", f"{update.table.qualified_name}: {stats.deltas()} != original {header.stats_deltas}"
        static, regular = header_columns(update)
        if regular != header.regular_columns or (update.static_row is not None and static != header.static_columns):
            return "header", f"{static}/{regular} != original {header.static_columns}/{header.regular_columns}"
    return "bytes", first_difference(encode_mutation(updates, release), original)


@dataclass
class Comparison:
    """What re-encoding one corpus gave, per category of user mutation."""

    corpus: str
    user: int = 0  # user-keyspace mutations among the segments' CRC-valid entries
    undecodable: list[tuple[int, int]] = field(default_factory=list)
    incomplete: list[tuple[int, int]] = field(default_factory=list)  # records lack dropped columns' cells
    incomplete_identical: int = 0  # ... whose records with drops ignored re-encode exactly
    incomplete_tables: Counter = field(default_factory=Counter)
    with_dropped_cells: set[tuple[int, int]] = field(default_factory=set)
    compared: int = 0
    identical: int = 0
    mismatches: list[tuple[tuple[int, int], str]] = field(default_factory=list)
    without_headers: Counter = field(default_factory=Counter)  # cause -> mutations differing
    header_superset: int = 0  # mutations whose header names a column no row has data for
    partition_updates: int = 0
    empty_partition_updates: int = 0

    def summary(self) -> str:
        return (
            f"{self.corpus}: {self.identical} of {self.compared} complete user mutations byte-identical "
            f"({self.user} user mutations; {len(self.undecodable)} undecodable; {len(self.incomplete)} incomplete "
            f"(cells of dropped columns), of which {self.incomplete_identical} byte-identical with drops ignored); "
            f"{self.partition_updates} partition updates ({self.empty_partition_updates} empty); "
            f"without the original header lists: {dict(self.without_headers)} "
            f"({self.header_superset} mutations list columns without data)"
        )


def release_of(corpus: Corpus) -> tuple[int, int]:
    major, minor = (corpus.root / "cassandra_version.txt").read_text().strip().split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="module")
def comparison(corpus: Corpus) -> Comparison:
    schema = schema_with_history(corpus.schema_dir)
    user_ids = {tid for tid, t in schema.tables.items() if t.keyspace in USER_KEYSPACES}
    release = release_of(corpus)
    decoded = decode_by_position(schema, corpus.cdc_raw)
    everything = decode_by_position(ignoring_drops(schema), corpus.cdc_raw)
    result = Comparison(corpus.name)
    for segment in discover([corpus.cdc_raw]):
        for position, original in raw_entries(segment.path):
            if first_table_id(original) not in user_ids:
                continue
            result.user += 1
            where = (segment.segment_id, position)
            if where not in decoded:
                result.undecodable.append(where)
                continue
            records, ordinal = decoded[where]
            updates = records.mutation(ordinal, original_headers=True)
            full_records, full_ordinal = everything[where]
            full = full_records.mutation(full_ordinal, original_headers=True)
            if dropped_cells(full, schema):
                result.with_dropped_cells.add(where)
            # (the tables differ in their columns' drop times only: compare the records, not them)
            if updates != [replace(f, table=u.table) for f, u in zip(full, updates)] or len(updates) != len(full):
                result.incomplete.append(where)
                result.incomplete_tables.update(u.table.qualified_name for u in updates)
                result.incomplete_identical += encode_mutation(full, release) == original
                continue
            result.compared += 1
            result.partition_updates += len(updates)
            result.empty_partition_updates += sum(u.is_empty for u in updates)
            mine = encode_mutation(updates, release)
            if mine == original:
                result.identical += 1
            else:
                result.mismatches.append(
                    (where, " ".join(mismatch_cause(records, ordinal, updates, original, release)))
                )
            bare = records.mutation(ordinal)  # header lists recomputed from the cells
            if any(header_columns(b) != header_columns(u) for b, u in zip(bare, updates)):
                result.header_superset += 1
            if encode_mutation(bare, release) != original:
                result.without_headers[mismatch_cause(records, ordinal, bare, original, release)[0]] += 1
    print(result.summary())
    return result


def test_every_complete_user_mutation_reencodes_byte_identical(comparison: Comparison) -> None:
    assert comparison.user > 80_000
    assert not comparison.undecodable, comparison.undecodable[:5]
    assert not comparison.mismatches, (
        f"{len(comparison.mismatches)} of {comparison.compared} differ; first ones: {comparison.mismatches[:5]}"
    )
    assert comparison.identical == comparison.compared == comparison.user - len(comparison.incomplete)


def test_incomplete_records_are_exactly_the_mutations_with_dropped_columns_cells(comparison: Comparison) -> None:
    # The workload writes shop.users.phone before dropping it: those cells are gone from the records
    # (Cassandra's reader drops them too), so those mutations cannot be rebuilt from the records.
    assert set(comparison.incomplete) == comparison.with_dropped_cells
    assert set(comparison.incomplete_tables) == {"shop.users"}, comparison.incomplete_tables
    # What the records lack is exactly those cells: with the drops ignored they re-encode exactly.
    assert comparison.incomplete_identical == len(comparison.incomplete)


def test_header_lists_are_the_only_thing_records_lack(comparison: Comparison) -> None:
    # Without the original header lists, the encoder recomputes them from the cells (Cassandra's
    # order); that is wrong exactly for the mutations whose statement named columns without data.
    assert set(comparison.without_headers) <= {"header"}
    assert sum(comparison.without_headers.values()) == comparison.header_superset


# -- hypothesis round trips ----------------------------------------------------------------------

T0 = 1_767_225_600_000_000  # 2026-01-01 in microseconds
NOW = 1_767_225_600


def synthetic_schema() -> Schema:
    """Tables covering every wire shape the encoder writes."""
    table_rows, column_rows = [], []

    def table(name: str, pk: list[str], ck: list[str], regular: dict[str, str], static: dict[str, str]) -> None:
        table_rows.append({"keyspace_name": "ks", "table_name": name, "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name))})
        for kind, columns in (("partition_key", pk), ("clustering", ck)):
            for position, spec in enumerate(columns):
                column, ctype = spec.split(" ", 1)
                column_rows.append(
                    {
                        "keyspace_name": "ks",
                        "table_name": name,
                        "column_name": column,
                        "kind": kind,
                        "position": position,
                        "type": ctype,
                        "clustering_order": "desc" if column.endswith("_desc") else "asc",
                    }
                )
        for kind, columns in (("regular", regular), ("static", static)):
            for column, ctype in columns.items():
                column_rows.append(
                    {"keyspace_name": "ks", "table_name": name, "column_name": column, "kind": kind, "type": ctype}
                )

    table(
        "mixed",
        ["id blob"],
        ["c1 int", "c2_desc text", "c3 uuid"],
        {
            "a_int": "int",
            "b_text": "text",
            "c_bool": "boolean",
            "d_vec": "vector<float, 3>",
            "e_frozen": "frozen<list<int>>",
            "l": "list<bigint>",
            "m": "map<text, int>",
            "s": "set<timeuuid>",
            "u": "addr",
            "z_ts": "timestamp",
        },
        {"st": "text", "st_set": "set<int>"},
    )
    table("wide", ["id int"], ["c bigint"], {f"col{i:02d}": ("int" if i % 3 else "text") for i in range(70)}, {})
    table("keyonly", ["a int", "b text"], [], {"v": "blob", "w": "list<text>"}, {})
    udts = [
        {"keyspace_name": "ks", "type_name": "addr", "field_names": ["street", "zip"], "field_types": ["text", "int"]}
    ]
    return schema_from_rows({"tables": table_rows, "columns": column_rows, "types": udts}, source="synthetic")


SYNTHETIC = synthetic_schema()


def value_bytes(fixed: int) -> st.SearchStrategy[bytes]:
    if fixed >= 0:
        return st.binary(min_size=fixed, max_size=fixed) | st.just(b"")
    return st.binary(max_size=24)


def timestamps() -> st.SearchStrategy[int]:
    return st.integers(T0 - 10**7, T0 + 10**7) | st.integers(-(2**63) + 1, 2**63 - 1)


@dataclass(frozen=True)
class Limits:
    """Valid local deletion times for a messaging version (signed 32-bit in 12, unsigned in 13)."""

    messaging: int

    def ldts(self) -> st.SearchStrategy[int]:
        top = 2**31 - 2 if self.messaging < 13 else 2**32 - 3
        return st.integers(NOW - 1000, NOW + 10**6) | st.integers(0, top)

    def deletions(self) -> st.SearchStrategy[Deletion]:
        return st.builds(Deletion, timestamps(), self.ldts())


@st.composite
def cells_of(draw: st.DrawFn, column: ColumnDef, row_liveness: Liveness | None, limits: Limits) -> list:
    """The cells (and complex deletion) one column has in a row; possibly none."""

    def ts() -> int:
        if row_liveness is not None and draw(st.booleans()):
            return row_liveness.ts
        return draw(timestamps())

    def cell(path: bytes | None, value_strategy: st.SearchStrategy[bytes]) -> Cell:
        kind = draw(st.sampled_from(["live", "tombstone", "expiring", "row_ttl"]))
        if kind == "tombstone":
            return Cell(column.name, ts(), b"", path, ldt=draw(limits.ldts()))
        if kind == "row_ttl" and row_liveness is not None and row_liveness.ttl:
            return Cell(column.name, ts(), draw(value_strategy), path, row_liveness.ttl, row_liveness.ldt)
        if kind in ("expiring", "row_ttl"):
            return Cell(
                column.name, ts(), draw(value_strategy), path, draw(st.integers(1, 2**31 - 1)), draw(limits.ldts())
            )
        return Cell(column.name, ts(), draw(value_strategy), path)

    ctype = column.type
    if column.dropped_at_us is not None:
        return []  # a re-added column: the decoder drops its cells older than the drop
    if not ctype.is_complex:
        return [cell(None, value_bytes(ctype.fixed_length))] if draw(st.booleans()) else []
    items: list = []
    floor = -(2**63) + 1
    if draw(st.booleans()):
        deletion = draw(limits.deletions())
        items.append(ComplexDeletion(column.name, deletion))
        floor = deletion.ts  # the decoder drops cells older than the column's deletion, as Cassandra does
    if ctype.kind == "list":
        paths = st.binary(min_size=16, max_size=16)
    elif ctype.kind == "udt":
        paths = st.integers(0, len(ctype.field_names) - 1).map(lambda i: i.to_bytes(2, "big"))
    else:
        paths = st.binary(max_size=12)
    values = st.just(b"") if ctype.kind == "set" else st.binary(max_size=16)
    for path in draw(st.lists(paths, max_size=3, unique=True)):
        made = cell(path, values)
        items.append(made if made.ts >= floor else replace(made, ts=floor))
    return items


@st.composite
def rows_of(draw: st.DrawFn, table: TableDef, columns: list[ColumnDef], static: bool, limits: Limits) -> Row:
    liveness = None
    if draw(st.booleans()):
        if draw(st.booleans()):
            liveness = Liveness(draw(timestamps()), draw(st.integers(1, 2**31 - 1)), draw(limits.ldts()))
        else:
            liveness = Liveness(draw(timestamps()))
    deletion = draw(st.none() | limits.deletions())
    shadowable = deletion is not None and (liveness is None or liveness.ts <= deletion.ts) and draw(st.booleans())
    cells: list = []
    for column in cassandra_order(columns):
        cells.extend(draw(cells_of(column, liveness, limits)))
    if liveness is None and deletion is None and not cells:
        liveness = Liveness(draw(timestamps()))  # Cassandra never writes a row with nothing in it
    clustering: tuple[bytes | None, ...] = ()
    if not static:
        clustering = tuple(draw(value_bytes(c.type.fixed_length)) for c in table.clustering)
    return Row(clustering, liveness, deletion, shadowable, cells)


@st.composite
def markers_of(draw: st.DrawFn, table: TableDef, limits: Limits) -> Marker:
    size = draw(st.integers(0, len(table.clustering)))
    if size == 0:
        kind = draw(st.sampled_from([1, 6]))  # bottom and top
    else:
        kind = draw(st.sampled_from([0, 1, 2, 5, 6, 7]))
    values = [draw(value_bytes(c.type.fixed_length) | st.none()) for c in table.clustering[:size]]
    start = draw(limits.deletions()) if kind in (2, 5) else None
    return Marker(kind, tuple(values), draw(limits.deletions()), start)


@st.composite
def partition_updates(draw: st.DrawFn, table: TableDef, key: bytes, limits: Limits) -> PartitionUpdate:
    regular = [c for c in table.columns.values() if c.kind == "regular"]
    statics = [c for c in table.columns.values() if c.kind == "static"]
    static_row = draw(st.none() | rows_of(table, statics, True, limits)) if statics else None
    items = draw(
        st.lists(rows_of(table, regular, False, limits) | markers_of(table, limits), max_size=4)
        if table.clustering
        else st.lists(rows_of(table, regular, False, limits), max_size=1)
    )
    update = PartitionUpdate(table, key, draw(st.none() | limits.deletions()), static_row, items)
    if draw(st.booleans()):
        # A statement's columns without data in any row (unset values) stay in the header.
        static, used = header_columns(update)
        extra = draw(st.lists(st.sampled_from(regular), max_size=3)) if regular else []
        named = {c.name: c for c in [*extra, *(table.columns[n] for n in used)]}
        update.regular_columns = tuple(c.name for c in cassandra_order(named.values()))
    return update


def decode_one(schema: Schema, mutation: bytes, messaging: int, version: int = 7) -> Batch:
    decoder_schema = _commitlog.DecoderSchema(schema)
    decoder = _commitlog.Decoder(decoder_schema)
    framed = entry(mutation)
    decoder.decode_region(framed, 0, len(framed), 0, 1, version, messaging, 2**62)
    assert not decoder.take_issues()
    return Batch.from_buffers(decoder_schema.tables, decoder.take())


def as_decoded(update: PartitionUpdate) -> PartitionUpdate:
    """What the decoder gives back for ``update``: with the header lists that were written (the
    static list only exists with a static row, and an empty update has no header at all)."""
    if update.is_empty:
        return replace(update, static_columns=None, regular_columns=None)
    static, regular = header_columns(update)
    return replace(update, static_columns=static if update.static_row is not None else None, regular_columns=regular)


def check_round_trip(schema: Schema, updates: list[PartitionUpdate], messaging: int, release: tuple[int, int]) -> None:
    encoded = encode_mutation(updates, release)
    batch = decode_one(schema, encoded, messaging, version=8 if messaging >= 13 else 7)
    decoded = BatchRecords(batch).mutation(0, original_headers=True)
    assert decoded == [as_decoded(u) for u in updates]
    assert encode_mutation(decoded, release) == encoded


RELEASES = st.sampled_from([(4, 1), (5, 0)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), messaging=st.sampled_from([12, 13]), release=RELEASES)
def test_random_partition_updates_round_trip(data: st.DataObject, messaging: int, release: tuple[int, int]) -> None:
    limits = Limits(messaging)
    tables = data.draw(
        st.lists(st.sampled_from(list(SYNTHETIC.tables.values())), min_size=1, max_size=3, unique_by=lambda t: t.id)
    )
    key = data.draw(st.binary(min_size=1, max_size=12))
    updates = [data.draw(partition_updates(t, key, limits)) for t in tables]
    check_round_trip(SYNTHETIC, updates, messaging, release)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_mutations_of_the_corpus_tables_round_trip(corpus: Corpus, data: st.DataObject) -> None:
    schema = schema_with_history(corpus.schema_dir)
    messaging = 13 if "v8" in corpus.name else 12
    table = data.draw(st.sampled_from(sorted(schema.tables.values(), key=lambda t: t.qualified_name)))
    key = data.draw(st.binary(min_size=1, max_size=20))
    update = data.draw(partition_updates(table, key, Limits(messaging)))
    check_round_trip(schema, [update], messaging, release_of(corpus))


# -- small, exact cases ----------------------------------------------------------------------------


def single_table(keyspace: str, name: str, table_id: str, columns: list[tuple[str, str, str]]) -> TableDef:
    """A one-table schema from (column, kind, type) triples; key and clustering columns in order."""
    rows = []
    for column, kind, ctype in columns:
        position = sum(1 for c in rows if c["kind"] == kind)
        row = {"keyspace_name": keyspace, "table_name": name, "column_name": column, "kind": kind, "type": ctype}
        rows.append({**row, "position": position})
    tables = [{"keyspace_name": keyspace, "table_name": name, "id": table_id}]
    return next(iter(schema_from_rows({"tables": tables, "columns": rows}).tables.values()))


def test_worked_example_9_2_insert() -> None:
    """Format reference §9.2: INSERT INTO ks.t (id, v) VALUES (1, 'hi') USING TIMESTAMP T."""
    columns = [("id", "partition_key", "int"), ("v", "regular", "text")]
    table = single_table("ks", "t", "8bc3f4a0-8322-11ee-b962-0242ac120002", columns)
    t = 1_700_000_000_000_000
    update = PartitionUpdate(table, b"\x00\x00\x00\x01", rows=[Row((), Liveness(t), cells=[Cell("v", t, b"hi")])])
    expected = bytes.fromhex(
        "01 8bc3f4a0832211eeb9620242ac120002 04 00000001 10 fce9d96a43c000 00 00 01 01 76 01 24 00 08 02 6869 01"
    )
    assert encode_mutation([update]) == expected


def users_table() -> TableDef:
    """shop.users of c50-v7-plain, with the columns the vector below uses."""
    columns = [("user_id", "partition_key", "uuid"), ("age", "regular", "int")]
    columns += [("prefs", "regular", "map<text, text>"), ("tags", "regular", "set<text>")]
    return single_table("shop", "users", "9ecdfa20-e95f-11f1-833c-ab6ebb85193f", columns)


def test_live_complex_deletion_placeholder_as_cassandra_5_writes_it() -> None:
    """With HAS_COMPLEX_DELETION every complex column carries a deletion; one without is written as
    DeletionTime.LIVE, whose local deletion time is Long.MAX_VALUE in 5.0 (Integer.MAX_VALUE before).

    The expected bytes were serialized by cassandra-all 5.0.9 itself (a BTreeRow with liveness, an
    int cell, a map overwrite and a set element, through PartitionUpdate.singleRowUpdate, hence
    NO_STATS; identical for messaging 12 and 13). The corpora never have this case."""
    table = users_table()
    row = Row(
        (),
        Liveness(T0),
        cells=[
            Cell("age", T0, b"\x00\x00\x00\x05"),
            ComplexDeletion("prefs", Deletion(T0 - 1, NOW)),
            Cell("prefs", T0, b"v", b"k"),
            Cell("tags", T0, b"", b"x"),
        ],
    )
    update = PartitionUpdate(table, bytes(16), rows=[row], stats=NO_STATS)
    cassandra_5 = bytes.fromhex(
        "01 9ecdfa20e95f11f1833cab6ebb85193f 10 00000000000000000000000000000000 10 000000"
        " 03 03616765 057072656673 0474616773 01 64 fd26fd9845c000 08 00000005"
        " fd26fd9845bfff f013551f00 01 08 016b 0176 ff7ffadfb552258000 ffffffffffa9ff65ff 01 0c 0178 01"
    )
    assert encode_mutation([update], CASSANDRA_5) == cassandra_5
    four = encode_mutation([update], CASSANDRA_4)
    assert four.replace(bytes.fromhex("f029ff65ff"), bytes.fromhex("ffffffffffa9ff65ff")) == cassandra_5
    for release in (CASSANDRA_4, CASSANDRA_5):
        for messaging in (12, 13):
            batch = decode_one(Schema({table.id: table}), encode_mutation([update], release), messaging)
            assert BatchRecords(batch).mutation(0) == [replace(update, stats=None)]
    # Collected stats (what a CQL statement's update carries) make the deltas small.
    collected = encode_mutation([replace(update, stats=None)])
    assert len(collected) < len(cassandra_5)


@pytest.mark.parametrize("present", [0, 1, 20, 34, 35, 36, 50, 69, 70])
def test_column_subsets_of_64_columns_and_more(present: int) -> None:
    """From 64 header columns on, a subset is the missing count, then the present indexes when fewer
    than half are present, else the missing ones (Columns.Serializer.serializeLargeSubset)."""
    table = SYNTHETIC.by_name("ks", "wide")
    header = tuple(c.name for c in cassandra_order(table.columns.values()))
    indexes = sorted(range(70), key=lambda i: (i * 37) % 70)[:present]  # spread over the list
    cells: list[Cell | ComplexDeletion] = []
    for i in sorted(indexes):
        cells.append(Cell(header[i], T0, b"\x00\x00\x00\x01" if table.columns[header[i]].type.kind == "int" else b"x"))
    update = PartitionUpdate(table, b"\x00\x00\x00\x01", rows=[Row((bytes(8),), Liveness(T0), cells=cells)])
    update.regular_columns = header
    encoded = encode_mutation([update])
    assert BatchRecords(decode_one(SYNTHETIC, encoded, 12)).mutation(0, original_headers=True) == [update]
    # Row: flags, clustering (header 0, 8 bytes), liveness delta 0 (every timestamp is T0), subset.
    missing = [i for i in range(70) if i not in indexes]
    if present == 70:
        row = b"\x24" + bytes(10)
    else:
        listed = sorted(indexes) if present < 70 // 2 else missing
        row = b"\x04" + bytes(10) + b"".join(encode_uvint(i) for i in [len(missing), *listed])
    assert row in encoded
