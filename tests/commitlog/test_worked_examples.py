"""The hand-built byte examples of the format reference (§9), decoded from their literal bytes."""

from __future__ import annotations

import uuid
from pathlib import Path

from cdcfast.commitlog import CommitLogReader
from cdcfast.commitlog.reference import reference_lines
from cdcfast.commitlog.schema import schema_from_rows
from cdcfast.generate.framing import descriptor_header, entry, sync_marker

SEGMENT_ID = 1700000000000
T = 1700000000000000
N = 1700000000


def table_rows(table_id: str, name: str, columns: list[tuple[str, str, str, int]]) -> dict:
    return {
        "keyspaces": [{"keyspace_name": "ks", "durable_writes": True}],
        "tables": [{"keyspace_name": "ks", "table_name": name, "id": table_id, "cdc": True}],
        "columns": [
            {
                "keyspace_name": "ks",
                "table_name": name,
                "column_name": c,
                "kind": k,
                "type": t,
                "position": p,
                "clustering_order": "asc" if k == "clustering" else "none",
            }
            for c, k, t, p in columns
        ],
        "types": [],
        "dropped_columns": [],
    }


def decode(tmp_path: Path, rows: dict, segment: bytes) -> tuple[list[dict], CommitLogReader]:
    (tmp_path / f"CommitLog-7-{SEGMENT_ID}.log").write_bytes(segment)
    reader = CommitLogReader(schema_from_rows(rows))
    lines = [line for batch in reader.read_paths([tmp_path]) for line in reference_lines(batch)]
    return lines, reader


T2_ROWS = table_rows(
    "9d4e5f60-8322-11ee-b962-0242ac120002",
    "t2",
    [("pk", "partition_key", "text", 0), ("ck", "clustering", "int", 0), ("l", "regular", "list<int>", -1)],
)


def one_entry_segment(mutation: bytes) -> bytes:
    """Header (H = 20), one section holding one entry, then the zeroed marker that ends the chain."""
    header = descriptor_header(7, SEGMENT_ID)
    return header + sync_marker(SEGMENT_ID, 20, 28 + 12 + len(mutation)) + entry(mutation) + bytes(8)


def test_header_bytes_match_the_reference_example() -> None:
    assert descriptor_header(7, SEGMENT_ID) == bytes.fromhex("00000007 0000018bcfe56800 0002 7b7d 52ecfd5a")


def test_one_insert_segment(tmp_path: Path) -> None:
    mutation = bytes.fromhex(
        "01 8bc3f4a0832211eeb9620242ac120002 0400000001 10 fce9d96a43c000 00 00 01 01 76 01 24 00 08 02 6869 01"
    )
    assert len(mutation) == 43
    segment = one_entry_segment(mutation)
    assert segment[20:28] == bytes.fromhex("00000053da074c34")
    assert segment[28:36] == bytes.fromhex("0000002b8df8265c")
    assert segment[79:83] == bytes.fromhex("7d2191c3")
    rows = table_rows(
        "8bc3f4a0-8322-11ee-b962-0242ac120002", "t", [("id", "partition_key", "int", 0), ("v", "regular", "text", -1)]
    )
    lines, reader = decode(tmp_path, rows, segment)
    assert not reader.issues
    assert lines == [
        {
            "segment": SEGMENT_ID,
            "version": 7,
            "messaging_version": 12,
            "position": 83,
            "size": 43,
            "keyspace": "ks",
            "table": "t",
            "table_id": "8bc3f4a0-8322-11ee-b962-0242ac120002",
            "cdc": True,
            "pk": "00000001",
            "rows": [
                {
                    "kind": "row",
                    "clustering": [],
                    "liveness": {"ts": T, "ttl": 0},
                    "cells": [{"col": "v", "type": "text", "ts": T, "value": "6869"}],
                }
            ],
        }
    ]


def test_clustering_and_list_overwrite(tmp_path: Path) -> None:
    mutation = bytes.fromhex(
        "01 9d4e5f60832211eeb9620242ac120002 0161 10 fce9d96a43bfff ef535700 00 01 016c 01 60 0000000005"
        " 0000 01 00 01 10a1b2c3d4832211ee8000000000000007 0400000007 01"
    )
    lines, reader = decode(tmp_path, T2_ROWS, one_entry_segment(mutation))
    assert not reader.issues
    assert lines[0]["rows"] == [
        {
            "kind": "row",
            "clustering": ["00000005"],
            "cells": [
                {"col": "l", "complex_deletion": {"ts": T - 1, "ldt": N}},
                {
                    "col": "l",
                    "type": "list<int>",
                    "path": ["a1b2c3d4832211ee8000000000000007"],
                    "ts": T,
                    "value": "00000007",
                },
            ],
        }
    ]


def test_range_tombstone_markers(tmp_path: Path) -> None:
    # The §9.4 marker fragment inside a partition update with stats minTimestamp = T, minLDT = N.
    mutation = bytes.fromhex(
        "01 9d4e5f60832211eeb9620242ac120002 0161 10 fce9d96a43c000 ef535700 00 00 01"
        " 02 07 0001 00 00000005 00 00   02 06 0000 00 00   01"
    )
    lines, reader = decode(tmp_path, T2_ROWS, one_entry_segment(mutation))
    assert not reader.issues
    assert lines[0]["rows"] == [
        {
            "kind": "rt_bound",
            "bound_kind": "EXCL_START_BOUND",
            "clustering": ["00000005"],
            "deletion": {"ts": T, "ldt": N},
        },
        {"kind": "rt_bound", "bound_kind": "INCL_END_BOUND", "clustering": [], "deletion": {"ts": T, "ldt": N}},
    ]
    assert uuid.UUID(lines[0]["table_id"])
