"""Warehouse values read back into cdcfast.values' decoded shapes (the inverse of the documented
renderings in docs/type-mapping.md), so sink contents compare with expected/ value for value."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from decimal import Decimal
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values import Duration

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_INTEGERS = {"tinyint", "smallint", "int", "bigint", "varint", "timestamp", "date", "time", "counter"}


def from_json_rendering(ctype: CqlType, value: Any) -> Any:
    if value is None:
        return None
    kind = ctype.kind
    if kind in _INTEGERS:
        return int(value)
    if kind in ("float", "double"):
        return float(value)
    if kind == "decimal":
        return Decimal(value)
    if kind in ("blob", "custom"):
        return bytes.fromhex(value[2:])
    if kind in ("uuid", "timeuuid"):
        return uuid.UUID(value)
    if kind == "inet":
        return ipaddress.ip_address(value)
    if kind == "duration":
        return Duration(int(value["months"]), int(value["days"]), int(value["nanoseconds"]))
    if kind in ("list", "set", "vector"):
        return [from_json_rendering(ctype.params[0], v) for v in value]
    if kind == "map":
        key_type, value_type = ctype.params
        pairs = value.items() if isinstance(value, dict) else value
        return [(from_json_rendering(key_type, k), from_json_rendering(value_type, v)) for k, v in pairs]
    if kind == "tuple":
        return tuple(from_json_rendering(t, v) for t, v in zip(ctype.params, value))
    if kind == "udt":
        return {n: from_json_rendering(t, value.get(n)) for n, t in zip(ctype.field_names, ctype.params)}
    return value


def from_postgres(ctype: CqlType, sql: str, value: Any) -> Any:
    """A value fetched with asyncpg from a column of SQL type ``sql``."""
    if value is None:
        return None
    kind = ctype.kind
    if sql == "jsonb":
        return from_json_rendering(ctype, value)
    if sql.endswith("[]"):
        return [from_postgres(ctype.params[0], sql[:-2], v) for v in value]
    if kind == "timestamp":
        return (value - EPOCH) // dt.timedelta(milliseconds=1)
    if kind == "date":
        return (value - dt.date(1970, 1, 1)).days
    if kind == "varint":
        return int(value)
    if kind == "inet":
        return ipaddress.ip_address(str(value).split("/")[0])
    return value


def _unwrap(sql: str) -> str:
    return sql[len("Nullable(") : -1] if sql.startswith("Nullable(") else sql


def from_clickhouse(ctype: CqlType, sql: str, value: Any) -> Any:
    """A value read with clickhouse-driver (``strings_as_bytes``) from a column of type ``sql``."""
    if value is None:
        return None
    sql = _unwrap(sql)
    kind = ctype.kind
    if sql.startswith("Array("):
        # ClickHouse arrays cannot be NULL: a null collection reads back as [] (docs/type-mapping.md)
        element = ctype.params[0]
        return [from_clickhouse(element, sql[6:-1], v) for v in value] or None
    if sql.startswith("Tuple("):
        return tuple(from_clickhouse(t, "", v) for t, v in zip(ctype.params, value))
    if isinstance(value, bytes):
        if kind in ("blob", "custom"):
            return value
        text = value.decode()
        if kind in ("text", "ascii"):
            return text
        if kind == "decimal":
            return Decimal(text)
        if kind == "inet":
            return ipaddress.ip_address(text)
        import json

        return from_json_rendering(ctype, json.loads(text))
    if kind == "varint":
        return int(value)
    if kind == "boolean":
        return bool(value)
    return value
