"""Small schemas built in tests, as ``system_schema`` rows would give them."""

from __future__ import annotations

import uuid

from cdcfast.commitlog.schema import Schema, schema_from_rows


def one_table_schema(keyspace: str, static: bool = False) -> Schema:
    """``keyspace.t (id int, seq int, a text, b text, c text[, s text static], PRIMARY KEY (id, seq))`` with cdc."""

    def column(name: str, kind: str, position: int, ctype: str) -> dict:
        order = "asc" if kind == "clustering" else "none"
        return {
            "keyspace_name": keyspace, "table_name": "t", "column_name": name, "kind": kind,
            "position": position, "type": ctype, "clustering_order": order,
        }  # fmt: skip

    rows = {
        "keyspaces": [{"keyspace_name": keyspace, "durable_writes": True, "replication": {}}],
        "tables": [{"keyspace_name": keyspace, "table_name": "t", "id": str(uuid.uuid4()), "cdc": True}],
        "columns": [
            column("id", "partition_key", 0, "int"),
            column("seq", "clustering", 0, "int"),
            column("a", "regular", -1, "text"),
            column("b", "regular", -1, "text"),
            column("c", "regular", -1, "text"),
        ]
        + ([column("s", "static", -1, "text")] if static else []),
        "types": [],
        "dropped_columns": [],
    }
    return schema_from_rows(rows, source="test")
