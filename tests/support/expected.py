"""Cassandra's ``SELECT JSON`` renderings (the corpora's ``expected/``) turned into cdcfast's decoded
values, and both into one canonical form, so that states can be compared value for value.

The renderings (documented in docs/type-rendering.md): timestamps ``2026-01-01 00:00:03.472Z``, dates
``2217-02-16``, times ``11:07:58.611840546``, durations ``2y29d51m53s340ms838us505ns``, blobs ``0x..``,
inet in Java's long form, floats in Java's shortest form (compared as float32), map keys as JSON
strings.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
import math
import re
import struct
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import TableDef
from cdcfast.values import Duration
from cdcfast.values.codec import Empty

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_DURATION_UNITS = {
    "y": (12, 0, 0),
    "mo": (1, 0, 0),
    "w": (0, 7, 0),
    "d": (0, 1, 0),
    "h": (0, 0, 3600 * 10**9),
    "m": (0, 0, 60 * 10**9),
    "s": (0, 0, 10**9),
    "ms": (0, 0, 10**6),
    "us": (0, 0, 1000),
    "µs": (0, 0, 1000),
    "ns": (0, 0, 1),
}


def parse_duration(text: str) -> Duration:
    sign = -1 if text.startswith("-") else 1
    months = days = nanos = 0
    for amount, unit in re.findall(r"(\d+)(mo|ms|us|µs|ns|y|w|d|h|m|s)", text):
        m, d, n = _DURATION_UNITS[unit]
        months, days, nanos = months + m * int(amount), days + d * int(amount), nanos + n * int(amount)
    return Duration(sign * months, sign * days, sign * nanos)


def from_cassandra_json(ctype: CqlType, value: Any) -> Any:
    """A ``SELECT JSON`` value as cdcfast.values would decode the same data."""
    if value is None:
        return None
    kind = ctype.kind
    if kind == "blob":
        return bytes.fromhex(value[2:])
    if kind == "timestamp":
        if isinstance(value, int):
            return value
        when = dt.datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%d %H:%M:%S.%f%z")
        return (when - EPOCH) // dt.timedelta(milliseconds=1)
    if kind == "date":
        if isinstance(value, int):
            return value
        return (dt.date.fromisoformat(value) - dt.date(1970, 1, 1)).days
    if kind == "time":
        hours, minutes, rest = value.split(":")
        seconds, _, fraction = rest.partition(".")
        return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 10**9 + int((fraction + "000000000")[:9])
    if kind == "duration":
        return parse_duration(value)
    if kind in ("uuid", "timeuuid"):
        return uuid.UUID(value)
    if kind == "inet":
        return ipaddress.ip_address(value)
    if kind == "decimal":
        return Decimal(str(value))
    if kind in ("float", "double"):
        return float(value)
    if kind in ("list", "set", "vector"):
        return [from_cassandra_json(ctype.params[0], v) for v in value]
    if kind == "map":
        key_type, value_type = ctype.params
        text_keys = key_type.kind in ("text", "ascii")
        return [
            (from_cassandra_json(key_type, k if text_keys else json.loads(k)), from_cassandra_json(value_type, v))
            for k, v in value.items()
        ]
    if kind == "tuple":
        return tuple(from_cassandra_json(t, v) for t, v in zip(ctype.params, value))
    if kind == "udt":
        return {name: from_cassandra_json(t, value.get(name)) for name, t in zip(ctype.field_names, ctype.params)}
    return value


def canonical(ctype: CqlType, value: Any) -> Any:
    """A hashable, comparable form: floats by bit pattern (float32 for float), collections as tuples,
    sets and maps order-free (Cassandra's JSON and cdcfast may order them differently)."""
    if value is None or isinstance(value, Empty):
        return None
    kind = ctype.kind
    if kind == "float":
        return ("f32", struct.pack(">f", value)) if not math.isnan(value) else ("nan",)
    if kind == "double":
        # expected/ holds JSON: it has null where Cassandra returned NaN or an infinity
        return ("f64", struct.pack(">d", value)) if math.isfinite(value) else None
    if kind == "decimal":
        # expected/ went through JSON doubles: decimals compare at double precision there
        return ("dec", float(value))
    if kind in ("list", "vector"):
        return tuple(canonical(ctype.params[0], v) for v in value)
    if kind == "set":
        return frozenset(canonical(ctype.params[0], v) for v in value)
    if kind == "map":
        return frozenset((canonical(ctype.params[0], k), canonical(ctype.params[1], v)) for k, v in value)
    if kind == "tuple":
        return tuple(canonical(t, v) for t, v in zip(ctype.params, value))
    if kind == "udt":
        return tuple(canonical(t, value.get(n)) for n, t in zip(ctype.field_names, ctype.params))
    if kind == "counter" and not isinstance(value, int):
        return value.total()
    return value


def all_columns(table: TableDef) -> list:
    return table.partition_key + table.clustering + list(table.columns.values())


def canonical_rows(table: TableDef, rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    columns = all_columns(table)
    key_columns = table.partition_key + table.clustering
    out = {}
    for row in rows:
        key = tuple(canonical(c.type, row.get(c.name)) for c in key_columns)
        out[key] = {c.name: canonical(c.type, row.get(c.name)) for c in columns}
    return out


def load_expected(corpus_root: Path, table: TableDef) -> dict[tuple, dict[str, Any]]:
    columns = {c.name: c for c in all_columns(table)}
    with gzip.open(corpus_root / "expected" / f"{table.qualified_name}.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    decoded = [
        {name: from_cassandra_json(columns[name].type, v) for name, v in row.items() if name in columns} for row in rows
    ]
    return canonical_rows(table, decoded)


def as_of(corpus_root: Path) -> int:
    return int(json.loads((corpus_root / "expected" / "as_of.json").read_text())["unix_seconds"])


def differences(table: TableDef, got: dict[tuple, dict], want: dict[tuple, dict], limit: int = 5) -> str:
    lines = []
    missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
    lines += [f"missing row {k}: {want[k]}" for k in list(missing)[:limit]]
    lines += [f"unexpected row {k}: {got[k]}" for k in list(extra)[:limit]]
    for key in list(want.keys() & got.keys()):
        diff = {c: (got[key][c], want[key][c]) for c in want[key] if got[key].get(c) != want[key][c]}
        if diff:
            lines.append(f"row {key}: (cdcfast, cassandra) {diff}")
        if len(lines) > 3 * limit:
            break
    head = f"{table.qualified_name}: {len(missing)} missing, {len(extra)} unexpected rows\n"
    return head + "\n".join(lines)
