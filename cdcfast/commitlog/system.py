"""What cdcfast knows of Cassandra's own tables without a schema: ``system.local`` and its
truncation records.

TRUNCATE leaves no mark in the truncated table's commit log stream. The node flushes the table,
then records the truncation in ``system.local``: ``truncated_at`` is a ``map<uuid, blob>`` from a
table id to the commit log position up to which the table's data is truncated (the position the
flush covered: ``CommitLogPosition.serializer``, an i64 segment id and an i32 position) followed by
the truncation time (i64 milliseconds). The node writes each entry as a map element of its own
(``UPDATE system.local SET truncated_at = truncated_at + {id: blob}``), a mutation that travels in
the same segments as everything else. On replay the node itself skips the table's mutations at or
before that position; cdcfast does the same (``docs/truncate.md``).

System table ids are not random: Cassandra derives them from the names (``TableId.forSystemTable``:
a name-based MD5 UUID of keyspace + table), so ``system.local`` has the same id on every node and
release. Its columns here are those of Cassandra 4.0, 4.1 and 5.0 (identical), plus ``thrift_version``
as the dropped column 4.0 records it as (3.x wrote it): every system.local mutation decodes, not
only truncation records.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass, replace

from cdcfast.commitlog.cqltypes import parse_cql_type
from cdcfast.commitlog.schema import ColumnDef, Schema, TableDef


def system_table_id(keyspace: str, table: str) -> uuid.UUID:
    """Cassandra's fixed id of a system table: ``UUID.nameUUIDFromBytes(keyspace + table)``."""
    digest = bytearray(hashlib.md5((keyspace + table).encode("utf-8"), usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x30  # version 3: name-based, MD5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the IETF variant
    return uuid.UUID(bytes=bytes(digest))


SYSTEM_LOCAL_ID = system_table_id("system", "local")
TRUNCATED_AT = "truncated_at"
NEVER_WRITTEN_SINCE = 2**63 - 1  # a drop time (µs) that hides every cell of the column

_LOCAL_COLUMNS = {
    "bootstrapped": "text",
    "broadcast_address": "inet",
    "broadcast_port": "int",
    "cluster_name": "text",
    "cql_version": "text",
    "data_center": "text",
    "gossip_generation": "int",
    "host_id": "uuid",
    "listen_address": "inet",
    "listen_port": "int",
    "native_protocol_version": "text",
    "partitioner": "text",
    "rack": "text",
    "release_version": "text",
    "rpc_address": "inet",
    "rpc_port": "int",
    "schema_version": "uuid",
    "tokens": "set<text>",
    TRUNCATED_AT: "map<uuid, blob>",
}


def _column(name: str, kind: str, type_text: str, position: int = -1, dropped_at: int | None = None) -> ColumnDef:
    ctype = parse_cql_type(type_text, {})
    return ColumnDef(name, kind, position, ctype, ctype.cql(), dropped_at_us=dropped_at)


def system_local_table() -> TableDef:
    """A fresh :class:`TableDef` of ``system.local`` (``key text PRIMARY KEY``, one row: 'local')."""
    return TableDef(
        id=SYSTEM_LOCAL_ID,
        keyspace="system",
        name="local",
        cdc=False,
        partition_key=[_column("key", "partition_key", "text", position=0)],
        clustering=[],
        columns={name: _column(name, "regular", text) for name, text in sorted(_LOCAL_COLUMNS.items())},
        dropped={"thrift_version": _column("thrift_version", "regular", "text", dropped_at=NEVER_WRITTEN_SINCE)},
    )


def with_system_tables(schema: Schema) -> Schema:
    """``schema`` plus the built-in ``system.local``, for decoding: a definition the schema already
    has (``cassandra://`` schemas list the system keyspace) is kept. ``schema`` is not changed."""
    if SYSTEM_LOCAL_ID in schema.tables:
        return schema
    return replace(schema, tables={**schema.tables, SYSTEM_LOCAL_ID: system_local_table()})


@dataclass(frozen=True)
class TruncationRecord:
    """One ``truncated_at`` entry: the table's changes at or before (``segment_id``, ``position``) of
    this node's commit log are truncated; ``truncated_at`` is when (ms since the epoch; None in
    records older than Cassandra 2.1, which stored no time)."""

    table_id: uuid.UUID
    segment_id: int
    position: int
    truncated_at: int | None


def read_truncation_record(key: bytes, value: bytes) -> TruncationRecord | None:
    """A ``truncated_at`` map element (the cell path is the table id, the value the record), or None
    when it is not one (Cassandra's own reader would fail on it too)."""
    if len(key) != 16 or not (len(value) == 12 or len(value) >= 20):
        return None
    segment_id, position = struct.unpack_from(">qi", value)
    truncated_at = struct.unpack_from(">q", value, 12)[0] if len(value) > 12 else None
    return TruncationRecord(uuid.UUID(bytes=key), segment_id, position, truncated_at)
