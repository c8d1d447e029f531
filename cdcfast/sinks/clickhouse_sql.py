"""ClickHouse SQL text: identifiers and literals quoted safely, keys sent beside a query."""

from __future__ import annotations


def ident(name: str) -> str:
    """A quoted identifier: a Cassandra name may be ``order`` or ``Weird `Name```."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def qualified(database: str, name: str) -> str:
    return f"{ident(database)}.{ident(name)}"


def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def key_table(name: str, keys: list[bytes]) -> dict:
    """Binary keys sent as a temporary table for ``IN`` (no query-size limit, no escaping)."""
    return {"name": name, "structure": [("k", "String")], "data": [{"k": key} for key in keys]}
