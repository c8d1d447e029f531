"""TRUNCATE (issue 9): a ``truncated_at`` entry of system.local becomes a ``truncate`` change event.

Segments are built by hand, byte for byte as a node writes them (the encoder, with cdcfast's
built-in system.local: ``tests/commitlog/test_system_local.py`` checks both against real nodes'
bytes): writes to a CDC table, a truncation record naming the position of the last of them, more
writes. The event must come between the two groups, name the table, the recorded position and
time, and nothing else in system.local may turn into an event, an issue or an unknown table.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from conftest import Corpus

from cdcfast.commitlog import CommitLogReader, Schema
from cdcfast.commitlog.cqltypes import parse_cql_type
from cdcfast.commitlog.schema import ColumnDef, TableDef, schema_from_rows
from cdcfast.commitlog.system import SYSTEM_LOCAL_ID, system_local_table
from cdcfast.events import INSERT, TRUNCATE, ChangeEvent, events_from_batch
from cdcfast.generate.framing import SegmentBuilder
from cdcfast.generate.mutation import Cell, Liveness, PartitionUpdate, Row, encode_mutation

ITEMS = uuid.UUID("6f0e1a00-e95f-11f1-833c-ab6ebb85193f")
PLAIN = uuid.UUID("6f0e1a01-e95f-11f1-833c-ab6ebb85193f")
OTHER = uuid.UUID("6f0e1a02-e95f-11f1-833c-ab6ebb85193f")
UNKNOWN = uuid.UUID("6f0e1a03-e95f-11f1-833c-ab6ebb85193f")
T0 = 1_800_000_000_000_000  # microseconds
TRUNCATED_AT = T0 // 1000 + 5_000  # milliseconds


def user_schema() -> Schema:
    tables = [("app", "items", ITEMS, True), ("app", "plain", PLAIN, False), ("other", "items", OTHER, True)]
    rows: dict[str, list[dict]] = {
        "keyspaces": [{"keyspace_name": ks, "durable_writes": True} for ks in ("app", "other")],
        "tables": [{"keyspace_name": ks, "table_name": t, "id": str(i), "cdc": cdc} for ks, t, i, cdc in tables],
        "columns": [],
        "types": [],
        "dropped_columns": [],
    }
    for ks, t, _, _ in tables:
        for name, ctype, kind, position in (("id", "int", "partition_key", 0), ("v", "text", "regular", -1)):
            rows["columns"].append(
                {
                    "keyspace_name": ks,
                    "table_name": t,
                    "column_name": name,
                    "type": ctype,
                    "kind": kind,
                    "position": position,
                }
            )
    return schema_from_rows(rows, source="test")


def insert(table: TableDef, key: int, ts: int) -> bytes:
    row = Row(liveness=Liveness(ts), cells=[Cell("v", ts, f"value {key}".encode())])
    return encode_mutation([PartitionUpdate(table, key.to_bytes(4, "big"), rows=[row])])


def local(*cells: Cell, table: TableDef | None = None, liveness: int | None = None) -> bytes:
    row = Row(liveness=None if liveness is None else Liveness(liveness), cells=list(cells))
    return encode_mutation([PartitionUpdate(table or system_local_table(), b"local", rows=[row])])


def record(table_id: uuid.UUID, segment_id: int, position: int, truncated_at: int, ts: int) -> Cell:
    """``UPDATE system.local SET truncated_at = truncated_at + {id: blob}``, as SystemKeyspace writes it."""
    return Cell("truncated_at", ts, struct.pack(">qiq", segment_id, position, truncated_at), table_id.bytes)


def startup_metadata(ts: int) -> bytes:
    """What a node writes into system.local as it starts (no truncation in it)."""
    return local(
        Cell("cluster_name", ts, b"test"),
        Cell("release_version", ts, b"5.0.9"),
        Cell("rpc_port", ts, (9042).to_bytes(4, "big")),
        Cell("host_id", ts, uuid.uuid4().bytes),
        Cell("tokens", ts, b"", b"-4611686018427387904"),
        liveness=ts,
    )


def read_paths(paths: list[Path], schema: Schema, policy: str = "skip") -> tuple[list[ChangeEvent], CommitLogReader]:
    reader = CommitLogReader(schema, policy=policy)
    return [e for batch in reader.read_paths(paths) for e in events_from_batch(batch)], reader


def read(folder: Path, schema: Schema, policy: str = "skip") -> tuple[list[ChangeEvent], CommitLogReader]:
    return read_paths([folder], schema, policy)


def scenario(
    folder: Path, segment_id: int = 1_800_000_000_001, version: int = 7, compression: str | None = None
) -> SegmentBuilder:
    """Two writes to app.items; a truncation of it (recording the second write's position) among
    other system.local content; a third write."""
    schema = user_schema()
    items = schema.tables[ITEMS]
    builder = SegmentBuilder(segment_id, version=version, compression=compression)
    builder.add_section([startup_metadata(T0 - 10_000_000), insert(items, 1, T0), insert(items, 2, T0 + 1)])
    flushed_at = builder.positions[-1]
    ts = TRUNCATED_AT * 1000 + 250
    builder.add_section(
        [
            local(record(ITEMS, segment_id, flushed_at, TRUNCATED_AT, ts)),
            local(record(PLAIN, segment_id, flushed_at, TRUNCATED_AT + 1, ts + 1)),  # not a CDC table
            local(record(UNKNOWN, segment_id, flushed_at, TRUNCATED_AT + 2, ts + 2)),  # not in the schema
            local(Cell("truncated_at", ts + 3, b"", ITEMS.bytes, ldt=TRUNCATED_AT // 1000)),  # DROP: record removed
            insert(items, 3, T0 + 2),
        ]
    )
    builder.write(folder)
    return builder


@pytest.mark.parametrize("version", [7, 8])
@pytest.mark.parametrize("compression", [None, "LZ4Compressor"])
def test_a_truncation_comes_between_the_writes_it_covers_and_the_later_ones(
    tmp_path: Path, version: int, compression: str | None
) -> None:
    segment_id = 1_800_000_000_007
    builder = scenario(tmp_path, segment_id, version, compression)
    events, reader = read(tmp_path, user_schema())
    assert [(e.qualified_table, e.op) for e in events] == [
        ("app.items", INSERT),
        ("app.items", INSERT),
        ("app.items", TRUNCATE),
        ("app.items", INSERT),
    ]
    truncate = events[2]
    assert truncate.truncated_at == TRUNCATED_AT
    assert (truncate.truncated_segment_id, truncate.truncated_position) == (segment_id, builder.positions[2])
    assert (truncate.segment_id, truncate.position) == (segment_id, builder.positions[3])  # where it was read
    assert truncate.ts == TRUNCATED_AT * 1000 + 250
    assert truncate.partition_key == [] and truncate.clustering == [] and truncate.cells == []
    assert events[1].position <= truncate.truncated_position < events[3].position
    assert reader.issues == [] and reader.stats.unknown_tables == {}


def test_a_schema_read_from_the_node_itself_gives_the_same_events(tmp_path: Path) -> None:
    scenario(tmp_path)
    with_local = user_schema()
    with_local.tables[SYSTEM_LOCAL_ID] = system_local_table()  # cassandra:// schemas list system tables
    assert read(tmp_path, with_local)[0] == read(tmp_path, user_schema())[0]


def test_truncation_ids_are_stable_across_rereads_and_unique(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    flushed_at = scenario(first).positions[2]
    # The same records read from another copy: framed differently, so read at other positions.
    schema = user_schema()
    builder = SegmentBuilder(1_900_000_000_001, compression="SnappyCompressor")
    builder.add_section([insert(schema.tables[ITEMS], 9, T0 + 50)])
    builder.add_section([insert(schema.tables[ITEMS], 1, T0), insert(schema.tables[ITEMS], 2, T0 + 1)])
    ts = TRUNCATED_AT * 1000 + 250
    builder.add_section(
        [
            local(record(ITEMS, 1_800_000_000_001, flushed_at, TRUNCATED_AT, ts)),
            local(record(ITEMS, 1_800_000_000_001, 1234, TRUNCATED_AT, ts)),  # another flush position
            local(record(ITEMS, 1_800_000_000_001, 1234, TRUNCATED_AT + 1, ts)),  # another time
            local(record(OTHER, 1_800_000_000_001, 1234, TRUNCATED_AT + 1, ts)),  # another table
        ]
    )
    builder.write(second)
    here = [e for e in read(first, schema)[0] if e.op == TRUNCATE]
    there = [e for e in read(second, schema)[0] if e.op == TRUNCATE]
    assert len(here) == 1 and len(there) == 4
    assert here[0].event_id == there[0].event_id and here[0].position != there[0].position
    assert len({e.event_id for e in there}) == 4
    assert [e.qualified_table for e in there] == ["app.items"] * 3 + ["other.items"]


def test_an_unreadable_system_local_mutation_is_skipped_not_fatal(tmp_path: Path) -> None:
    """A newer Cassandra may add columns to system.local: such a mutation cannot be decoded without
    them. It is reported (kind ``system_table``) and skipped, even under ``--on-error stop``; what
    follows is read."""
    future = system_local_table()
    future.columns["future_column"] = ColumnDef("future_column", "regular", -1, parse_cql_type("text"), "text")
    schema = user_schema()
    builder = SegmentBuilder(1_800_000_000_003)
    builder.add_section(
        [
            local(Cell("future_column", T0, b"?"), Cell("cluster_name", T0, b"x"), table=future, liveness=T0),
            insert(schema.tables[ITEMS], 1, T0 + 1),
            local(record(ITEMS, 1_800_000_000_003, 0, TRUNCATED_AT, T0 + 2)),
        ]
    )
    builder.write(tmp_path)
    events, reader = read(tmp_path, schema, policy="stop")
    assert [e.op for e in events] == [INSERT, TRUNCATE]
    assert [(i.kind, i.table, i.position) for i in reader.issues] == [
        ("system_table", "system.local", builder.positions[0])
    ]
    assert reader.stats.unknown_tables == {}


def test_real_truncation_records_become_events(corpus: Corpus) -> None:
    """The corpora's nodes truncated system tables as they started. Declared as CDC tables of a
    user schema, those tables get truncate events from the node's own bytes, equal to the records
    in Cassandra's decoding."""
    from commitlog.test_system_local import cassandra_local_lines, local_segments

    expected = []
    for line in cassandra_local_lines(corpus):
        for cell in line["rows"][0]["cells"]:
            if cell["col"] == "truncated_at" and not cell.get("tombstone"):
                segment_id, position, truncated_at = struct.unpack(">qiq", bytes.fromhex(cell["value"]))
                table = f"t{uuid.UUID(cell['path'][0]).hex}"
                expected.append(("probe", table, cell["ts"], segment_id, position, truncated_at, line["position"]))
    assert len(expected) >= 3
    rows: dict[str, list[dict]] = {"keyspaces": [], "tables": [], "columns": [], "types": [], "dropped_columns": []}
    for _, table, *_ in expected:
        rows["tables"].append({"keyspace_name": "probe", "table_name": table, "id": table[1:], "cdc": True})
        rows["columns"].append(
            {"keyspace_name": "probe", "table_name": table, "column_name": "k", "type": "int", "kind": "partition_key"}
        )
    events, reader = read_paths(local_segments(corpus), schema_from_rows(rows))
    got = [
        (e.keyspace, e.table, e.ts, e.truncated_segment_id, e.truncated_position, e.truncated_at, e.position)
        for e in events
        if e.op == TRUNCATE
    ]
    assert got == expected
    # (The probes' own mutations do not decode: they are not the system tables' columns. Fine here.)
    assert not [i for i in reader.issues if i.table == "system.local" or i.kind == "system_table"]
