"""The PostgreSQL writer (and TimescaleDB's: the same, with hypertables).

Per CDC table ``ks.t``, in schema ``ks``:

* ``ks.t_changes``: the change log, one row per event, unique on ``event_id``;
* ``ks.t``: the current state, one column per Cassandra column plus ``_expires`` (jsonb: column ->
  expiry, epoch seconds), ``_row_expires`` and the stored row state (``_state``);
* ``ks.t_live`` (view) and ``ks.t_as_of(timestamptz)`` (function): the state with values hidden
  once their TTL has passed, now or at a given time;
* ``ks.t__partitions`` and ``ks.t__tombstones``: partition states and invisible rows' states.

Exactly once: a batch's change-log rows, state rewrite and the checkpoint row in
``cdcfast.checkpoints`` commit in ONE transaction. A restart resumes after the checkpoint; a replay
from anywhere is harmless anyway (the change log skips known event ids, and the state merge is
idempotent), which is what makes three replicas writing into one sink safe. Partition rows are
locked (``FOR UPDATE``) while merged, so concurrent writers serialize per partition.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import orjson

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import ColumnDef, Schema, TableDef
from cdcfast.events import ChangeEvent
from cdcfast.sinks.changelog import change_row
from cdcfast.sinks.merge import StoredPartition, by_table, partition_key_bytes, plan, scope
from cdcfast.sinks.poison import DeadLetter, screen
from cdcfast.sinks.state import frozen_bytes
from cdcfast.transform.typemap import TypeMappings, convert_cell, load_mappings

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
CHANGE_COLUMNS = (
    "event_id",
    "op",
    "ts",
    "change_time",
    "segment_id",
    "position",
    "source",
    "key",
    "cells",
    "deletion_ts",
    "range",
)


def ident(name: str) -> str:
    """A PostgreSQL identifier, always quoted: Cassandra allows ``order`` or ``"Weird Name"``."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def micros_to_time(ts: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=ts)


class TableWriter:
    """DDL and row conversion for one Cassandra table in PostgreSQL."""

    def __init__(self, table: TableDef, mappings: TypeMappings, timescale: bool) -> None:
        self.table = table
        self.timescale = timescale
        self.ks = table.keyspace
        self.changes = qualified(table.keyspace, f"{table.name}_changes")
        self.state = qualified(table.keyspace, table.name)
        self.partitions = qualified(table.keyspace, f"{table.name}__partitions")
        self.tombstones = qualified(table.keyspace, f"{table.name}__tombstones")
        self.key_columns = table.partition_key + table.clustering
        self.data_columns = list(table.columns.values())
        self.targets = {c.name: mappings.postgres(self._storage_type(c)) for c in self.key_columns + self.data_columns}
        self.state_columns = [c.name for c in self.key_columns + self.data_columns] + [
            "_key",
            "_pk",
            "_expires",
            "_row_expires",
            "_state",
        ]

    @staticmethod
    def _storage_type(column: ColumnDef) -> CqlType:
        # Non-frozen collections are stored as their frozen value; the SQL type is the same.
        return replace(column.type, frozen=True) if column.type.is_complex else column.type

    def ddl(self) -> list[str]:
        columns = ",\n  ".join(
            f"{ident(c.name)} {self.targets[c.name].sql}" for c in self.key_columns + self.data_columns
        )
        change_key = "event_id, change_time" if self.timescale else "event_id"
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {ident(self.ks)}",
            f"""CREATE TABLE IF NOT EXISTS {self.changes} (
  event_id uuid NOT NULL, op text NOT NULL, ts bigint NOT NULL, change_time timestamptz NOT NULL,
  segment_id bigint NOT NULL, position integer NOT NULL, source text NOT NULL, key jsonb NOT NULL,
  cells jsonb, deletion_ts bigint, range jsonb, PRIMARY KEY ({change_key}))""",
            f"""CREATE TABLE IF NOT EXISTS {self.state} (
  {columns},
  _key bytea PRIMARY KEY, _pk bytea NOT NULL, _expires jsonb, _row_expires timestamptz, _state bytea NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {ident(self.table.name + '__by_partition')} ON {self.state} (_pk)",
            f"CREATE TABLE IF NOT EXISTS {self.partitions} (_pk bytea PRIMARY KEY, _state bytea)",
            f"""CREATE TABLE IF NOT EXISTS {self.tombstones} (
  _key bytea PRIMARY KEY, _pk bytea NOT NULL, _state bytea NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {ident(self.table.name + '__tombstones_by_partition')} "
            f"ON {self.tombstones} (_pk)",
            self._as_of_function(),
            f"CREATE OR REPLACE VIEW {qualified(self.ks, self.table.name + '_live')} AS "
            f"SELECT * FROM {qualified(self.ks, self.table.name + '_as_of')}(now())",
        ]
        if self.timescale:
            statements.append(
                f"SELECT create_hypertable('{self.changes}', 'change_time', if_not_exists => TRUE, "
                "migrate_data => TRUE)"
            )
        return statements

    def _as_of_function(self) -> str:
        """``ks.t_as_of(at)``: the state as SELECT * showed it at ``at``: TTL-expired values hidden."""
        name = qualified(self.ks, self.table.name + "_as_of")
        returns = ", ".join(f"{ident(c.name)} {self.targets[c.name].sql}" for c in self.key_columns + self.data_columns)
        keys = [ident(c.name) for c in self.key_columns]
        values = [
            f"CASE WHEN (_expires->>{_literal(c.name)})::bigint <= extract(epoch from at) "
            f"THEN NULL ELSE {ident(c.name)} END"
            for c in self.data_columns
        ]
        return (
            f"CREATE OR REPLACE FUNCTION {name}(at timestamptz) RETURNS TABLE ({returns}) LANGUAGE sql STABLE AS $$ "
            f"SELECT {', '.join(keys + values)} FROM {self.state} "
            f"WHERE _row_expires IS NULL OR _row_expires > at $$"
        )

    # -- values ---------------------------------------------------------------------------
    def convert_value(self, column: str, raw: bytes) -> Any:
        """One serialized value as this column stores it; errors name keyspace, table and column."""
        return convert_cell(self.targets[column], self.table.keyspace, self.table.name, column, raw)

    def column_value(self, column: ColumnDef, raw: Any) -> Any:
        if raw is None:
            return None
        if column.type.is_counter:
            return raw  # the counter's total, already summed over shards
        if column.type.is_complex:
            raw = frozen_bytes(column.type, raw)
        return self.targets[column.name].to_target(raw)

    def change_record(self, event: ChangeEvent, source: str) -> tuple:
        row = change_row(self.table, event, source)
        return (
            uuid.UUID(bytes=row.event_id),
            row.op,
            row.ts,
            micros_to_time(row.ts),
            row.segment_id,
            row.position,
            row.source,
            row.key,
            row.cells,
            row.deletion_ts,
            row.range,
        )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PostgresSink:
    """Applies batches of change events to one PostgreSQL (or TimescaleDB) database."""

    kind = "postgresql"

    def __init__(
        self, dsn: str, name: str = "postgresql", timescale: bool = False, mappings: TypeMappings | None = None
    ) -> None:
        self.dsn = dsn
        self.name = name
        self.timescale = timescale
        self.mappings = mappings or load_mappings()
        self.conn: asyncpg.Connection | None = None
        self.writers: dict[tuple[str, str], TableWriter] = {}

    async def connect(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)
        # Binary COPY needs a binary jsonb codec: a version byte (1), then the JSON text.
        await self.conn.set_type_codec(
            "jsonb",
            encoder=lambda text: b"\x01" + text.encode(),
            decoder=lambda data: orjson.loads(data[1:]),
            schema="pg_catalog",
            format="binary",
        )
        if self.timescale:
            await self.conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        await self.conn.execute(
            """CREATE SCHEMA IF NOT EXISTS cdcfast;
               CREATE TABLE IF NOT EXISTS cdcfast.dead_letters (
                 event_id uuid NOT NULL, sink text NOT NULL, source text NOT NULL, keyspace text NOT NULL,
                 "table" text NOT NULL, segment_id bigint NOT NULL, position integer NOT NULL, reason text NOT NULL,
                 event bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), replayed_at timestamptz,
                 PRIMARY KEY (event_id, sink));
               CREATE TABLE IF NOT EXISTS cdcfast.checkpoints (
                 source text NOT NULL, sink text NOT NULL, segment_id bigint NOT NULL, position integer NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, sink))"""
        )

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def prepare(self, schema: Schema) -> None:
        """Create (if missing) the tables of every CDC table in ``schema``."""
        assert self.conn is not None
        for table in schema.cdc_tables():
            await self.prepare_table(table)

    async def table_writer(self, table: TableDef) -> TableWriter:
        return await self.prepare_table(table)

    async def prepare_table(self, table: TableDef) -> TableWriter:
        assert self.conn is not None
        key = (table.keyspace, table.name)
        writer = self.writers.get(key)
        if writer is None:
            writer = TableWriter(table, self.mappings, self.timescale)
            async with self.conn.transaction():
                await self.conn.execute(f"SELECT pg_advisory_xact_lock(hashtext({_literal(table.qualified_name)}))")
                for statement in writer.ddl():
                    await self.conn.execute(statement)
            self.writers[key] = writer
        return writer

    async def _dead_letters(self, dead: list[DeadLetter], source: str) -> None:
        assert self.conn is not None
        await self.conn.executemany(
            """INSERT INTO cdcfast.dead_letters (event_id, sink, source, keyspace, "table", segment_id, position,
                 reason, event) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING""",
            [
                (
                    uuid.UUID(bytes=d.event.event_id),
                    self.name,
                    source,
                    d.event.keyspace,
                    d.event.table,
                    d.event.segment_id,
                    d.event.position,
                    d.reason,
                    d.payload,
                )
                for d in dead
            ],
        )

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter of this sink, oldest first (``cdcfast dlq list``)."""
        assert self.conn is not None
        rows = await self.conn.fetch(
            """SELECT event_id, source, keyspace, "table", segment_id, position, reason, event, created_at,
                 replayed_at FROM cdcfast.dead_letters WHERE sink = $1 ORDER BY created_at, segment_id, position""",
            self.name,
        )
        return [dict(r) for r in rows]

    async def mark_replayed(self, event_ids: list[bytes]) -> None:
        assert self.conn is not None
        await self.conn.execute(
            "UPDATE cdcfast.dead_letters SET replayed_at = now() WHERE sink = $1 AND event_id = ANY($2::uuid[])",
            self.name,
            [uuid.UUID(bytes=e) for e in event_ids],
        )

    async def checkpoint(self, source: str) -> tuple[int, int] | None:
        assert self.conn is not None
        row = await self.conn.fetchrow(
            "SELECT segment_id, position FROM cdcfast.checkpoints WHERE source = $1 AND sink = $2", source, self.name
        )
        return None if row is None else (row["segment_id"], row["position"])

    async def apply(
        self,
        events: Sequence[ChangeEvent],
        tables: dict[tuple[str, str], TableDef],
        source: str,
        position: tuple[int, int] | None,
    ) -> None:
        """Write ``events`` and move the checkpoint to ``position``, in one transaction."""
        assert self.conn is not None
        groups = by_table(events)
        for key in groups:
            await self.prepare_table(tables[key])
        async with self.conn.transaction():
            for key, table_events in groups.items():
                await self._apply_table(self.writers[key], table_events, source)
            if position is not None:  # None: a dead-letter replay, which moves no checkpoint
                await self.conn.execute(
                    """INSERT INTO cdcfast.checkpoints (source, sink, segment_id, position) VALUES ($1, $2, $3, $4)
                       ON CONFLICT (source, sink) DO UPDATE SET segment_id = excluded.segment_id,
                         position = excluded.position, updated_at = now()
                       WHERE (cdcfast.checkpoints.segment_id, cdcfast.checkpoints.position)
                           < (excluded.segment_id, excluded.position)""",
                    source,
                    self.name,
                    position[0],
                    position[1],
                )

    async def _apply_table(self, writer: TableWriter, events: list[ChangeEvent], source: str) -> None:
        conn = self.conn
        assert conn is not None
        events, dead = screen(writer.table, events, writer.convert_value, source)
        if dead:
            await self._dead_letters(dead, source)
        if not events:
            return
        records = [writer.change_record(e, source) for e in events]
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS _cdc_changes (LIKE {writer.changes}) ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table("_cdc_changes", records=records, columns=CHANGE_COLUMNS)
        await conn.execute(f"INSERT INTO {writer.changes} SELECT * FROM _cdc_changes ON CONFLICT DO NOTHING")
        await conn.execute("TRUNCATE _cdc_changes")

        pks = list(dict.fromkeys(tuple(e.partition_key) for e in events))
        pk_bytes = [partition_key_bytes(pk) for pk in pks]
        await conn.execute(
            f"INSERT INTO {writer.partitions} (_pk) SELECT unnest($1::bytea[]) ON CONFLICT DO NOTHING", pk_bytes
        )
        locked = await conn.fetch(
            f"SELECT _pk, _state FROM {writer.partitions} WHERE _pk = ANY($1) ORDER BY _pk FOR UPDATE", pk_bytes
        )
        by_bytes = dict(zip(pk_bytes, pks))
        stored = {by_bytes[r["_pk"]]: StoredPartition(r["_state"]) for r in locked}
        whole, row_keys = scope(writer.table, events)
        whole_bytes = [partition_key_bytes(pk) for pk in whole]
        where = "_pk = ANY($1) OR _key = ANY($2)"
        for relation in (writer.state, writer.tombstones):
            for r in await conn.fetch(f"SELECT _pk, _key, _state FROM {relation} WHERE {where}", whole_bytes, row_keys):
                if r["_state"]:
                    stored[by_bytes[r["_pk"]]].rows[r["_key"]] = r["_state"]
        plans = plan(writer.table, stored, events)

        await conn.execute(f"DELETE FROM {writer.state} WHERE {where}", whole_bytes, row_keys)
        await conn.execute(f"DELETE FROM {writer.tombstones} WHERE {where}", whole_bytes, row_keys)
        state_rows: list[tuple] = []
        tombstone_rows: list[tuple[bytes, bytes, bytes]] = []
        partition_rows: list[tuple[bytes, bytes]] = []
        for p in plans:
            partition_rows.append((p.pk_bytes, p.state))
            tombstone_rows.extend((key, p.pk_bytes, blob) for key, blob in p.tombstones)
            for key, row, blob in p.visible:
                values = [writer.column_value(c, raw) for c, raw in zip(writer.table.partition_key, row.partition_key)]
                clustering = row.clustering or (None,) * len(writer.table.clustering)
                values += [writer.column_value(c, raw) for c, raw in zip(writer.table.clustering, clustering)]
                values += [writer.column_value(c, row.values.get(c.name)) for c in writer.data_columns]
                expires = orjson.dumps(row.expires).decode() if row.expires else None
                row_expires = dt.datetime.fromtimestamp(row.row_expires, dt.timezone.utc) if row.row_expires else None
                state_rows.append((*values, key, p.pk_bytes, expires, row_expires, blob))
        if state_rows:
            await conn.copy_records_to_table(
                writer.table.name, schema_name=writer.table.keyspace, records=state_rows, columns=writer.state_columns
            )
        if tombstone_rows:
            await conn.copy_records_to_table(
                f"{writer.table.name}__tombstones",
                schema_name=writer.table.keyspace,
                records=tombstone_rows,
                columns=("_key", "_pk", "_state"),
            )
        await conn.executemany(f"UPDATE {writer.partitions} SET _state = $2 WHERE _pk = $1", partition_rows)
