"""Transformations between the change events and the sinks.

``typemap``: the one CQL type -> PostgreSQL / TimescaleDB / ClickHouse mapping every sink uses, read
from ``schema-mappings.yaml`` (see ``docs/type-mapping.md``). Its API is re-exported here.
"""

from __future__ import annotations

from cdcfast.transform.typemap import (
    CONVERTERS,
    PACKAGE_MAPPINGS,
    ClickHouseFeatures,
    TargetType,
    TypeMappings,
    ValueMappingError,
    bind,
    clickhouse_nullable,
    convert_cell,
    counter_shards,
    json_value,
    load_mappings,
    to_json,
)

__all__ = [
    "CONVERTERS",
    "PACKAGE_MAPPINGS",
    "ClickHouseFeatures",
    "TargetType",
    "TypeMappings",
    "ValueMappingError",
    "bind",
    "clickhouse_nullable",
    "convert_cell",
    "counter_shards",
    "json_value",
    "load_mappings",
    "to_json",
]
