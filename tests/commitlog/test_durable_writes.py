"""durable_writes (issue 9): a CDC table in a keyspace WITH durable_writes = false never reaches the
commit log, so cdcfast never sees its changes; the schema says which tables, and a warning names them.
(The live node case is in tests/live/test_live_truncate.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Corpus

from cdcfast.commitlog.schema import durable_writes_warnings, load_schema, non_durable_cdc_tables


def dump(target: Path) -> Path:
    """A ``system_schema`` dump as ``SELECT JSON`` writes it, with one keyspace not durable."""

    def table(ks: str, name: str, number: int, cdc: bool) -> dict:
        return {"keyspace_name": ks, "table_name": name, "id": f"00000000-0000-1000-8000-{number:012d}", "cdc": cdc}

    def key(ks: str, name: str) -> dict:
        return {
            "keyspace_name": ks,
            "table_name": name,
            "column_name": "id",
            "type": "int",
            "kind": "partition_key",
            "position": 0,
            "clustering_order": "none",
        }

    tables = [
        table("volatile", "events", 1, True),
        table("volatile", "cache", 2, False),
        table("volatile", "audit", 3, True),
        table("safe", "orders", 4, True),
        table("unlisted", "things", 5, True),  # its keyspace row is missing: nothing says it is not durable
    ]
    document = {
        "after_seq": 0,
        "step": 0,
        "keyspaces": [
            {"keyspace_name": "volatile", "durable_writes": False, "replication": {"class": "SimpleStrategy"}},
            {"keyspace_name": "safe", "durable_writes": True, "replication": {"class": "SimpleStrategy"}},
        ],
        "tables": tables,
        "columns": [key(t["keyspace_name"], t["table_name"]) for t in tables],
        "types": [],
        "dropped_columns": [],
    }
    target.write_text(json.dumps(document))
    return target


def test_the_schema_knows_durable_writes_per_keyspace_and_table(tmp_path: Path) -> None:
    schema = load_schema(dump(tmp_path / "007.json"))
    durable = {t.qualified_name: t.durable_writes for t in schema.tables.values()}
    assert durable == {
        "volatile.events": False,
        "volatile.cache": False,
        "volatile.audit": False,
        "safe.orders": True,
        "unlisted.things": True,
    }
    assert schema.durable_writes == {"volatile": False, "safe": True}


def test_cdc_tables_of_non_durable_keyspaces_are_listed_with_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "schema"
    folder.mkdir()
    (folder / "001.json").write_text(json.dumps({"tables": [], "columns": [], "keyspaces": []}))
    dump(folder / "002.json")  # a folder: the highest number is the schema
    schema = load_schema(folder)
    assert [t.qualified_name for t in non_durable_cdc_tables(schema)] == ["volatile.audit", "volatile.events"]
    warnings = durable_writes_warnings(schema)
    assert [t.qualified_name for t, _ in warnings] == ["volatile.audit", "volatile.events"]
    for table, message in warnings:
        assert f"{table.keyspace}.{table.name}" in message
        assert "durable_writes = false" in message and "never reach the commit log" in message


def test_the_corpora_have_no_such_table(corpus: Corpus) -> None:
    schema = load_schema(corpus.schema_dir)
    assert schema.cdc_tables() and all(t.durable_writes for t in schema.tables.values())
    assert non_durable_cdc_tables(schema) == [] and durable_writes_warnings(schema) == []
