"""Small schemas built in tests, as ``system_schema`` rows would give them."""

from __future__ import annotations

import uuid

from cdcfast.commitlog.schema import Schema, schema_from_rows
from cdcfast.events import INSERT, Cell, ChangeEvent


def one_table_schema(keyspace: str, static: bool = False) -> Schema:
    """``keyspace.t (id int, seq int, a text, b text, c text[, s text static], PRIMARY KEY (id, seq))`` with cdc."""
    return tables_schema(keyspace, ("t",), static)


def tables_schema(keyspace: str, names: tuple[str, ...], static: bool = False) -> Schema:
    """Tables ``names`` of ``keyspace``, each defined as :func:`one_table_schema`'s ``t``."""

    def column(table: str, name: str, kind: str, position: int, ctype: str) -> dict:
        order = "asc" if kind == "clustering" else "none"
        return {
            "keyspace_name": keyspace, "table_name": table, "column_name": name, "kind": kind,
            "position": position, "type": ctype, "clustering_order": order,
        }  # fmt: skip

    def columns(table: str) -> list[dict]:
        return [
            column(table, "id", "partition_key", 0, "int"),
            column(table, "seq", "clustering", 0, "int"),
            column(table, "a", "regular", -1, "text"),
            column(table, "b", "regular", -1, "text"),
            column(table, "c", "regular", -1, "text"),
        ] + ([column(table, "s", "static", -1, "text")] if static else [])

    rows = {
        "keyspaces": [{"keyspace_name": keyspace, "durable_writes": True, "replication": {}}],
        "tables": [{"keyspace_name": keyspace, "table_name": n, "id": str(uuid.uuid4()), "cdc": True} for n in names],
        "columns": [c for n in names for c in columns(n)],
        "types": [],
        "dropped_columns": [],
    }
    return schema_from_rows(rows, source="test")


def text_insert(keyspace: str, table: str, pk: int, seq: int, position: int, ts: int) -> ChangeEvent:
    """An INSERT into a :func:`tables_schema` table: row (``pk``, ``seq``) with ``a`` set to a text
    naming it, written at ``ts`` from commit log position ``position`` (segment 1)."""
    return ChangeEvent(
        b"",
        keyspace=keyspace,
        table=table,
        op=INSERT,
        partition_key=[pk.to_bytes(4, "big")],
        clustering=[seq.to_bytes(4, "big")],
        ts=ts,
        liveness_ts=ts,
        cells=[Cell("a", 0, ts, f"{table} {pk} {seq}".encode())],
        segment_id=1,
        position=position,
    ).with_content_id()
