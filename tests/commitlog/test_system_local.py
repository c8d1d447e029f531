"""system.local, built in (issue 9): decoded exactly as Cassandra's reader decodes it, with no schema.

The corpora's user schemas hold no system keyspace, yet their segments carry system.local
mutations: the node's metadata at start-up, and ``truncated_at`` map entries (a truncation record:
table id -> commit log position and time). cdcfast knows the table on its own; Cassandra's
reference decoding of each corpus (system keyspace lines included) is the judge.
"""

from __future__ import annotations

import functools
import gzip
import json
import struct
import uuid
from pathlib import Path

import pytest
from conftest import Corpus

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.commitlog.reference import reference_lines
from cdcfast.commitlog.segment import discover, raw_entries
from cdcfast.commitlog.system import (
    SYSTEM_LOCAL_ID,
    read_truncation_record,
    system_local_table,
    system_table_id,
    with_system_tables,
)
from cdcfast.generate.mutation import CASSANDRA_4, CASSANDRA_5, Cell, PartitionUpdate, Row, encode_mutation


@functools.cache
def _system_lines(root: Path) -> tuple[dict, ...]:
    """Cassandra's decoding of the system keyspaces' partition updates (parsed once per corpus)."""
    with gzip.open(root / "reference-decoding.jsonl.gz", "rt") as handle:
        return tuple(json.loads(text) for text in handle if '"keyspace":"system' in text)


def cassandra_system_lines(corpus: Corpus) -> list[dict]:
    return list(_system_lines(corpus.root))


def cassandra_local_lines(corpus: Corpus) -> list[dict]:
    return [line for line in _system_lines(corpus.root) if (line["keyspace"], line["table"]) == ("system", "local")]


def local_segments(corpus: Corpus) -> list[Path]:
    """The segment files holding system.local mutations (with their idx beside them)."""
    ids = {line["segment"] for line in cassandra_local_lines(corpus)}
    return [s.path for s in discover([corpus.cdc_raw]) if s.segment_id in ids]


def test_the_table_id_is_the_one_cassandra_uses(corpus: Corpus) -> None:
    ids = {line["table_id"] for line in cassandra_local_lines(corpus)}
    assert ids == {str(system_table_id("system", "local"))}
    assert SYSTEM_LOCAL_ID == system_table_id("system", "local") == system_local_table().id
    # Other system tables follow the same name-based rule (Cassandra's TableId.forSystemTable).
    lines = cassandra_system_lines(corpus)
    assert len({line["table"] for line in lines}) > 10
    for line in lines:
        assert line["table_id"] == str(system_table_id(line["keyspace"], line["table"])), line["table"]


def test_system_local_decodes_as_cassandras_reader_does(corpus: Corpus) -> None:
    reader = CommitLogReader(load_schema(corpus.schema_dir))
    mine = [
        line
        for batch in reader.read_paths(local_segments(corpus))
        for line in reference_lines(batch)
        if line["keyspace"] == "system" and line["table"] == "local"
    ]
    reference = cassandra_local_lines(corpus)
    assert len(reference) > 10
    assert mine == reference
    assert str(SYSTEM_LOCAL_ID).replace("-", "") not in reader.stats.unknown_tables
    assert not [i for i in reader.issues if i.kind != "unknown_table"]


def test_truncation_records_read_as_cassandra_stores_them(corpus: Corpus) -> None:
    """Each ``truncated_at`` element of Cassandra's decoding: the key is the truncated table's id, the
    value CommitLogPosition.serializer's bytes (segment id i64, position i32) then truncatedAt (ms, i64)."""
    seen = 0
    for line in cassandra_local_lines(corpus):
        for cell in line["rows"][0]["cells"]:
            if cell["col"] != "truncated_at":
                continue
            blob = bytes.fromhex(cell["value"])
            segment_id, position, truncated_at = struct.unpack(">qiq", blob)
            record = read_truncation_record(bytes.fromhex(cell["path"][0]), blob)
            assert record is not None
            assert record.table_id == uuid.UUID(cell["path"][0])
            assert (record.segment_id, record.position, record.truncated_at) == (segment_id, position, truncated_at)
            # Written after the flush it records, in the same run of the node, at about the same time.
            assert (record.segment_id, record.position) < (line["segment"], line["position"])
            assert 0 <= cell["ts"] // 1000 - record.truncated_at < 60_000
            seen += 1
    assert seen >= 3


def test_records_without_a_time_and_damaged_records() -> None:
    table = uuid.uuid4()
    old = read_truncation_record(table.bytes, struct.pack(">qi", 17, 99))  # before truncatedAt was stored
    assert old is not None and (old.segment_id, old.position, old.truncated_at) == (17, 99, None)
    assert read_truncation_record(table.bytes, b"\x00" * 11) is None
    assert read_truncation_record(b"\x01\x02", struct.pack(">qiq", 1, 2, 3)) is None


@pytest.mark.parametrize("release", [CASSANDRA_4, CASSANDRA_5])
def test_a_hand_built_truncation_record_is_byte_for_byte_cassandras(corpus: Corpus, release: tuple[int, int]) -> None:
    """The unit tests build truncation records with the encoder and the built-in table: the bytes
    are the node's own (values taken from Cassandra's decoding of the corpus)."""
    originals = {
        (seg.segment_id, pos): m for seg in discover(local_segments(corpus)) for pos, m in raw_entries(seg.path)
    }
    compared = 0
    for line in cassandra_local_lines(corpus):
        cells = line["rows"][0]["cells"]
        if [c["col"] for c in cells] != ["truncated_at"]:
            continue
        cell = cells[0]
        update = PartitionUpdate(
            system_local_table(),
            bytes.fromhex(line["pk"]),
            rows=[
                Row(
                    cells=[
                        Cell("truncated_at", cell["ts"], bytes.fromhex(cell["value"]), bytes.fromhex(cell["path"][0]))
                    ]
                )
            ],
        )
        assert encode_mutation([update], release) == originals[line["segment"], line["position"]]
        compared += 1
    assert compared >= 3


def test_a_schema_that_has_system_local_keeps_its_own_definition(corpus: Corpus) -> None:
    schema = load_schema(corpus.schema_dir)
    decoding = with_system_tables(schema)
    assert SYSTEM_LOCAL_ID not in schema.tables  # the user's schema is left alone
    assert decoding.tables[SYSTEM_LOCAL_ID].qualified_name == "system.local"
    assert set(decoding.tables) - {SYSTEM_LOCAL_ID} == set(schema.tables)
    own = system_local_table()
    own.columns.pop("rack")
    schema.tables[SYSTEM_LOCAL_ID] = own  # as read from a live node's system_schema
    assert with_system_tables(schema).tables[SYSTEM_LOCAL_ID] is own
