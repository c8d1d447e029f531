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
locked while merged, so concurrent writers serialize per partition. docs/exactly-once.md tells
how each part is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

import asyncpg
import orjson
from asyncpg.pgproto.pgproto import UUID

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import ColumnDef, Schema, TableDef
from cdcfast.config import Hypertable
from cdcfast.errors import ConfigError
from cdcfast.events import ChangeEvent
from cdcfast.log import get_logger
from cdcfast.sinks import migrate_postgres
from cdcfast.sinks._merge import BatchKeys
from cdcfast.sinks._pgcopy import (
    COPY_HEADER,
    COPY_TRAILER,
    change_row_copy,
    state_kinds,
    state_row_copy,
    state_rows_copy,
)
from cdcfast.sinks._scalars import row_values
from cdcfast.sinks.base import WarehouseSink
from cdcfast.sinks.encode import Converted, Screening, TableCodec, collector_paused
from cdcfast.sinks.merge import PartitionPlan, StoredPartition, batch_keys, by_table, plan, scope
from cdcfast.sinks.poison import DeadLetter
from cdcfast.sinks.postgres_copy import copy_in, unless_lost
from cdcfast.sinks.state import VisibleRow
from cdcfast.sinks.tcp import TCP_TIMEOUT_SECONDS, give_up_unacknowledged, keepalive
from cdcfast.sinks.truncation import StateWork, state_work
from cdcfast.transform.typemap import TypeMappings, convert_cell, load_mappings

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
STAGED_BATCHES = 8  # after an event id found in the change log: batches written through staging
COPY_CHUNK = 1 << 18  # bytes of change-log rows per COPY data message
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

TOMBSTONE_COLUMNS = ("_key", "_pk", "_state")  # an invisible row's table: all bytea (TableWriter.ddl)
_tombstone_kinds = state_kinds(["bytea"] * len(TOMBSTONE_COLUMNS))
assert _tombstone_kinds is not None  # bytea has an encoder
TOMBSTONE_KINDS: bytes = _tombstone_kinds

_event_id = attrgetter("event_id")
_letter_event_id = attrgetter("event.event_id")
CLOSE_SECONDS = 5.0  # a graceful close waits this long for the server, then the connection is cut
SETUP_LOCK = "cdcfast setup"  # advisory lock key while creating cdcfast's own schema and tables


def ident(name: str) -> str:
    """A PostgreSQL identifier, always quoted: Cassandra allows ``order`` or ``"Weird Name"``."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


class TableWriter:
    """DDL and row conversion for one Cassandra table in PostgreSQL."""

    def __init__(
        self,
        table: TableDef,
        mappings: TypeMappings,
        timescale: bool,
        hypertable: Hypertable | None = None,
        stored: Collection[str] | None = None,
    ) -> None:
        """``stored``: the data columns the warehouse state table has, when a schema change is not
        applied to it (auto_migrate off); None: all of ``table``'s."""
        self.table = table
        self.timescale = timescale
        self.hypertable = hypertable
        if hypertable is not None:
            check_hypertable(table, hypertable)
        self.ks = table.keyspace
        self.changes = qualified(table.keyspace, f"{table.name}_changes")
        self.state = qualified(table.keyspace, table.name)
        self.partitions = qualified(table.keyspace, f"{table.name}__partitions")
        self.tombstones = qualified(table.keyspace, f"{table.name}__tombstones")
        self.key_columns = table.partition_key + table.clustering
        self.data_columns = list(table.columns.values())
        self.targets = {c.name: mappings.postgres(self._storage_type(c)) for c in self.key_columns + self.data_columns}
        self.codec = TableCodec(table, self.targets)
        if stored is not None:  # the state table lacks some columns: write the others
            self.data_columns = [c for c in self.data_columns if c.name in stored]
            self.codec.data = [self.codec.columns[c.name] for c in self.data_columns]
        self.staged = 0  # batches whose change-log rows go through staging (after ids found there already)
        state_tables = (self.state, self.tombstones)
        self.load_query = " UNION ALL ".join(
            f"SELECT _pk, _key, _state, {shown} FROM {relation} WHERE _pk = ANY($1) OR _key = ANY($2)"
            for relation, shown in zip(state_tables, ("true", "false"))
        )
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
        # A hypertable's unique keys hold its time column; a row's key decides its time column anyway.
        state_key = "_key" if self.hypertable is None else f"_key, {ident(self.hypertable.time_column)}"
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {ident(self.ks)}",
            f"""CREATE TABLE IF NOT EXISTS {self.changes} (
  event_id uuid NOT NULL, op text NOT NULL, ts bigint NOT NULL, change_time timestamptz NOT NULL,
  segment_id bigint NOT NULL, position integer NOT NULL, source text NOT NULL, key jsonb NOT NULL,
  cells jsonb, deletion_ts bigint, range jsonb, PRIMARY KEY ({change_key}))""",
            f"""CREATE TABLE IF NOT EXISTS {self.state} (
  {columns},
  _key bytea NOT NULL, _pk bytea NOT NULL, _expires jsonb, _row_expires timestamptz, _state bytea NOT NULL,
  PRIMARY KEY ({state_key}))""",
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
        if self.hypertable is not None:
            statements += self._state_hypertable(self.hypertable)
        return statements

    def _state_hypertable(self, hypertable: Hypertable) -> list[str]:
        """The state table as a hypertable on its configured time column. A state table created
        before without it gets the time column into its primary key first (a row's key decides its
        time column, so the rows stay unique), then its rows moved into chunks."""
        column = ident(hypertable.time_column)
        relation = _literal(self.state)
        interval = f"interval '{float(hypertable.chunk_interval)} seconds'"
        return [
            f"""DO $$ DECLARE pk name; BEGIN
  SELECT conname INTO pk FROM pg_constraint WHERE conrelid = {relation}::regclass AND contype = 'p'
    AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = conrelid AND a.attnum = ANY(conkey)
                    AND a.attname = {_literal(hypertable.time_column)});
  IF pk IS NOT NULL THEN
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD PRIMARY KEY (_key, %s)', {relation}, pk, {_literal(column)});
  END IF;
END $$""",
            f"SELECT create_hypertable({relation}, {_literal(hypertable.time_column)}, "
            f"chunk_time_interval => {interval}, if_not_exists => TRUE, migrate_data => TRUE)",
        ]

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

    def state_record(self, row: VisibleRow, key: bytes, pk: bytes, blob: bytes, converted: Converted) -> tuple:
        """A current-state row for binary COPY (``state_columns``)."""
        expires = orjson.dumps(row.expires) if row.expires else None
        row_expires = EPOCH + dt.timedelta(seconds=row.row_expires) if row.row_expires else None
        return (*self.codec.row_values(row, converted), key, pk, expires, row_expires, blob)


def change_record(
    event_id: bytes,
    op: str,
    ts: int,
    segment_id: int,
    position: int,
    source: str,
    key: bytes,
    cells: bytes | None,
    deletion_ts: int | None,
    range_: bytes | None,
) -> tuple:
    """A change-log row as asyncpg's ``copy_records_to_table`` takes it (``CHANGE_COLUMNS``). The writer
    sends :func:`cdcfast.sinks._pgcopy.change_row_copy`'s bytes instead: the same values, stored alike
    (and timestamps outside Python's ``datetime``, which this refuses)."""
    change_time = EPOCH + dt.timedelta(microseconds=ts)
    return (UUID(event_id), op, ts, change_time, segment_id, position, source, key, cells, deletion_ts, range_)


async def binary_copy(rows: Iterable[bytes], sent: asyncio.Future[None] | None = None) -> AsyncIterator[bytes]:
    """Rows in binary COPY form (:func:`cdcfast.sinks._pgcopy.change_row_copy`), framed for
    ``copy_to_table(..., format="binary")`` and sent in chunks as they come (the server stores rows
    while later ones are still being rendered). ``sent`` is resolved once the last chunk is taken."""
    chunk, size = [COPY_HEADER], 0
    for row in rows:
        chunk.append(row)
        size += len(row)
        if size >= COPY_CHUNK:
            yield b"".join(chunk)
            chunk, size = [], 0
    chunk.append(COPY_TRAILER)
    yield b"".join(chunk)
    if sent is not None and not sent.done():
        sent.set_result(None)


def by_event_id(events: list[ChangeEvent]) -> list[ChangeEvent]:
    """``events`` in event-id order, the order every writer inserts a table's change-log rows in:
    writers of replicas holding the same changes in other orders never wait for each other in a
    cycle (each meets an id another holds holding only smaller ones)."""
    return sorted(events, key=_event_id)


def in_order_of(events: list[ChangeEvent], some: list[ChangeEvent]) -> list[ChangeEvent]:
    """``some`` of ``events`` (the same objects, in any order) in ``events``' order."""
    if len(some) == len(events):
        return events
    kept = {id(e) for e in some}
    return [e for e in events if id(e) in kept]


@dataclass
class Loaded:
    """A table's batch after its change log, with the stored state its merge needs (locked)."""

    writer: TableWriter
    events: list[ChangeEvent]
    converted: Converted
    keys: BatchKeys
    stored: dict[tuple[bytes, ...], StoredPartition]
    in_state: set[bytes] = field(default_factory=set)  # row keys stored as visible rows
    in_tombstones: set[bytes] = field(default_factory=set)  # ... as invisible ones


@dataclass
class StateWrites:
    """A table's merge, planned: what to write into its state, row tombstone and partition tables."""

    writer: TableWriter
    converted: Converted
    plans: list[PartitionPlan]
    tombstone_rows: list[bytes]  # (row key, partition key, row state) in binary COPY form
    partition_rows: list[tuple[bytes, bytes]]  # (partition key, new state)
    drop_state: list[bytes]  # row keys to delete from the state table
    drop_tombstones: list[bytes]  # ... from the row tombstones


def planned(loaded: Loaded) -> StateWrites:
    """``loaded``'s merge planned: client work only, no statement."""
    plans = plan(loaded.writer.table, loaded.stored, loaded.events, loaded.keys)
    writes = StateWrites(loaded.writer, loaded.converted, plans, [], [], [], [])
    in_state, in_tombstones = loaded.in_state, loaded.in_tombstones
    for p in plans:
        if p.state is not None:
            writes.partition_rows.append((p.pk_bytes, p.state))
        for key, blob in p.tombstones:
            writes.tombstone_rows.append(state_row_copy(TOMBSTONE_KINDS, (key, p.pk_bytes, blob)))
        for key in [key for key, _ in p.tombstones] + [key for key, _, _ in p.visible]:
            if key in in_state:
                writes.drop_state.append(key)
            elif key in in_tombstones:
                writes.drop_tombstones.append(key)
        writes.drop_state.extend(p.gone)
    return writes


def _jsonb(text: str | bytes) -> bytes:
    """jsonb's binary form: a version byte (1), then the JSON text."""
    return b"\x01" + (text if isinstance(text, bytes) else text.encode())


HYPERTABLE_TIME_TYPES = ("timestamp", "date")


def check_hypertable(table: TableDef, hypertable: Hypertable) -> None:
    """A state table can be a hypertable on a ``timestamp`` or ``date`` column of its primary key
    (a hypertable's unique keys must hold its time column); not on a clustering column of a table
    with static columns, whose static-only rows have no clustering values."""
    name, where = hypertable.time_column, f"hypertables: {table.qualified_name}: time_column"
    keys = table.partition_key + table.clustering
    column = next((c for c in keys if c.name == name), None)
    if column is None:
        kind = "a regular column, not part of the primary key" if name in table.columns else "no column"
        raise ConfigError(
            f"{where} {name!r}: {kind} of {table.qualified_name}; a state table's hypertable time column "
            f"must be in its primary key ({', '.join(c.name for c in keys)})"
        )
    if column.type.kind not in HYPERTABLE_TIME_TYPES or column.type.params:
        raise ConfigError(
            f"{where} {name!r} is a {column.type.cql()} column of {table.qualified_name}; "
            f"a hypertable time column must be a {' or '.join(HYPERTABLE_TIME_TYPES)}"
        )
    if column in table.clustering and any(c.kind == "static" for c in table.columns.values()):
        raise ConfigError(
            f"{where} {name!r} is a clustering column of {table.qualified_name}, which has static columns: "
            "a partition with static values and no rows has no clustering values; use a partition key column"
        )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PostgresSink(WarehouseSink):
    """Applies batches of change events to one PostgreSQL (or TimescaleDB) database."""

    kind = "postgresql"

    def __init__(
        self,
        dsn: str,
        name: str = "postgresql",
        timescale: bool = False,
        mappings: TypeMappings | None = None,
        hypertables: Mapping[str, Hypertable] | None = None,
        dropped_columns: str = "keep",
        auto_migrate: bool = True,
        tcp_timeout_seconds: float = TCP_TIMEOUT_SECONDS,
    ) -> None:
        """``hypertables`` (TimescaleDB): ``keyspace.table`` -> the state table's hypertable settings.
        ``dropped_columns`` (keep|remove) and ``auto_migrate``: docs/schema-evolution.md."""
        super().__init__(name, dropped_columns, auto_migrate, tcp_timeout_seconds)
        self.dsn = dsn
        self.timescale = timescale
        self.hypertables = dict(hypertables or {})
        if self.hypertables and not timescale:
            raise ConfigError(f"sink {name}: hypertables are for TimescaleDB sinks only")
        self.mappings = mappings or load_mappings()
        self.conn: asyncpg.Connection | None = None
        self.writers: dict[tuple[str, str], TableWriter] = {}
        self.backend: tuple[int, Any] | None = None  # the connection's backend: pid, start time

    async def connect(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)
        # asyncpg has no public way to its socket; options it does not set itself stay as set here
        give_up_unacknowledged(self.conn._transport.get_extra_info("socket"), self.tcp_timeout_seconds)
        previous, self.backend = self.backend, tuple(
            await self.conn.fetchrow("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        )
        if previous is not None:
            await self._end_lost_backend(previous)
        await self._set_session()
        # Binary COPY needs a binary jsonb codec: a version byte (1), then the JSON text.
        await self.conn.set_type_codec(
            "jsonb",
            encoder=_jsonb,
            decoder=lambda data: orjson.loads(data[1:]),
            schema="pg_catalog",
            format="binary",
        )
        async with self.conn.transaction():
            # Every node's writer may set up a new database at once, and concurrent CREATE ... IF NOT
            # EXISTS statements collide in the catalogs: one at a time.
            await self.conn.execute(f"SELECT pg_advisory_xact_lock(hashtext({_literal(SETUP_LOCK)}))")
            await self._create_own_tables()

    async def _set_session(self) -> None:
        """Values this connection stores past the TOAST threshold (change-log cells, states) are
        compressed with LZ4, several times cheaper than the default pglz, where the server has it
        (PostgreSQL 14+ built with lz4); readers need nothing, each value records its method. The
        server gives up on this connection's client as soon as the client would on the server
        (:mod:`cdcfast.sinks.tcp`): a backend whose client vanished ends, with its locks."""
        assert self.conn is not None
        idle, interval, probes = keepalive(self.tcp_timeout_seconds)
        await self.conn.execute(
            f"SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = {interval}; "
            f"SET tcp_keepalives_count = {probes}"
        )
        try:
            await self.conn.execute("SET default_toast_compression = 'lz4'")
        except asyncpg.PostgresError as exc:  # older server, or built without lz4: pglz stays
            get_logger("sink", sink=self.name).info("values stay compressed with pglz", reason=str(exc))

    async def _create_own_tables(self) -> None:
        assert self.conn is not None
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
        await self.conn.execute(migrate_postgres.REGISTRY_DDL)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close(timeout=CLOSE_SECONDS)  # then cut: a server gone quiet never answers
            self.conn = None

    async def waiting_on(self) -> dict[str, Any] | None:
        """The write's backend as ``pg_stat_activity`` shows it, asked on a connection of its own:
        its state and wait event, and the sessions blocking it (``pg_blocking_pids``: pid, user,
        application, query, how long their transaction has run). While the connection is being
        made: whether the server answers another one (a server that never does gets the attempt
        cancelled, see :meth:`abort`)."""
        if self.conn is not None and self.conn.is_closed():
            return None
        probe = await asyncpg.connect(self.dsn)
        if self.conn is None:
            await probe.close(timeout=CLOSE_SECONDS)
            return {"state": "connecting", "server": "answers a new connection"}
        pid = self.conn.get_server_pid()
        try:
            me = await probe.fetchrow(
                "SELECT state, wait_event_type, wait_event, pg_blocking_pids(pid) AS blockers, "
                "round(extract(epoch FROM now() - query_start)::numeric, 1)::float8 AS query_seconds "
                "FROM pg_stat_activity WHERE pid = $1",
                pid,
            )
            if me is None:
                return {"pid": pid, "state": "gone"}
            blockers = await probe.fetch(
                "SELECT pid, usename AS user, application_name AS application, state, left(query, 300) AS query, "
                "round(extract(epoch FROM now() - xact_start)::numeric, 1)::float8 AS transaction_seconds "
                "FROM pg_stat_activity WHERE pid = ANY($1::int[]) ORDER BY pid",
                me["blockers"],
            )
        finally:
            await probe.close(timeout=CLOSE_SECONDS)
        found = {k: me[k] for k in ("state", "wait_event_type", "wait_event", "query_seconds")}
        return {"pid": pid, **found, "blocked_by": [dict(b) for b in blockers]}

    def abort(self) -> bool:
        if self.conn is None:
            return False  # still connecting: asyncpg's attempt ends when cancelled
        self.conn.terminate()
        return True

    async def _end_lost_backend(self, backend: tuple[int, Any]) -> None:
        """End the backend of this sink's previous connection if it still runs. A connection lost
        without a word (cut by :meth:`abort`, given up by its socket) leaves it running with its
        transaction, and the locks of the rows it wrote, until it notices; the write done again
        would wait on them meanwhile. Matched by start time: a recycled pid is never ended."""
        assert self.conn is not None
        pid, started = backend
        try:
            ended = await self.conn.fetchval(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2",
                pid,
                started,
            )
        except asyncpg.PostgresError as exc:  # e.g. not allowed: the write may wait until it ends by itself
            get_logger("sink", sink=self.name).warning(
                "could not end the backend of the connection lost", pid=pid, error=str(exc)
            )
            return
        if ended:
            get_logger("sink", sink=self.name).warning("ended the backend of the connection lost", pid=pid)

    async def prepare(self, schema: Schema) -> None:
        """Create (if missing) the tables of every CDC table in ``schema``."""
        assert self.conn is not None
        self.retired = set(schema.retired)
        for table in schema.cdc_tables():
            if table.id not in schema.retired:  # a dropped table's: made when late mutations need them
                await self.prepare_table(table)
        await migrate_postgres.mark_gone(self, schema)

    async def table_writer(self, table: TableDef) -> TableWriter:
        return await self.prepare_table(table)

    async def prepare_table(self, table: TableDef) -> TableWriter:
        assert self.conn is not None
        key = (table.keyspace, table.name)
        writer = self.writers.get(key)
        if writer is None or (writer.table is not table and writer.table != table) or self.refused.due(key):
            # New, or its definition changed in Cassandra (or a column it refused may be fixed by
            # now): create or migrate its tables first.
            self.refused.forget(key)
            writer = await migrate_postgres.prepare_table(self, table)
            self.writers[key] = writer
        return writer

    async def _dead_letters(self, dead: list[DeadLetter], source: str) -> None:
        assert self.conn is not None
        self.dead_lettered += dead
        statement = self.conn.executemany(
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
                for d in sorted(dead, key=_letter_event_id)  # event-id order, as the change log (by_event_id)
            ],
        )
        await unless_lost(self.conn, statement)

    async def store_dead_letters(self, dead: list[DeadLetter], source: str) -> None:
        """Keep changes refused at apply time (cdcfast.supervisor.isolate); a letter stored before is kept as it is."""
        await self._dead_letters(dead, source)

    async def dlq_depth(self) -> int:
        """Dead letters of this sink not replayed yet."""
        assert self.conn is not None
        query = "SELECT count(*) FROM cdcfast.dead_letters WHERE sink = $1 AND replayed_at IS NULL"
        return int(await self.conn.fetchval(query, self.name))

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter of this sink, oldest first (``cdcfast dlq list``)."""
        assert self.conn is not None
        rows = await self.conn.fetch(
            """SELECT event_id, source, keyspace, "table", segment_id, position, reason, event, created_at,
                 replayed_at FROM cdcfast.dead_letters WHERE sink = $1 ORDER BY created_at, segment_id, position""",
            self.name,
        )
        return [dict(r) for r in rows]

    async def truncations(self, table: TableDef) -> list[tuple[str, int, int]]:
        """The table's truncations applied here: (source, recorded segment, recorded position)."""
        assert self.conn is not None
        writer = await self.prepare_table(table)
        rows = await self.conn.fetch(f"SELECT source, range FROM {writer.changes} WHERE op = 'truncate'")
        return [(r[0], r[1]["truncated_segment_id"], r[1]["truncated_position"]) for r in rows]

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
        unfollowed = self.refused.set_aside(groups)  # changes with a column the warehouse refused to add
        if unfollowed:
            await self._dead_letters(unfollowed, source)
        with collector_paused():
            await self._apply(groups, source, position)

    async def _apply(
        self, groups: dict[tuple[str, str], list[ChangeEvent]], source: str, position: tuple[int, int] | None
    ) -> None:
        try:
            await self._transaction(groups, source, position)
        except asyncpg.UniqueViolationError:
            # A change-log row was there already (a replay, or another replica's writer): the batch
            # again, its change-log rows through staging (see _write_changes).
            for key in groups:
                self.writers[key].staged = STAGED_BATCHES
            await self._transaction(groups, source, position)

    async def _transaction(
        self, groups: dict[tuple[str, str], list[ChangeEvent]], source: str, position: tuple[int, int] | None
    ) -> None:
        assert self.conn is not None
        async with self.conn.transaction():
            # Tables one after the other, a table's merge planned while the server still stores the
            # next table's change log and loads its stored state (see _overlapped): the client's
            # planning and the server's work took turns otherwise, on two cores.
            loaded: Loaded | None = None
            for key in sorted(groups):  # one order for every writer's locks (tests/sinks/test_postgres_lock_order.py)
                table_events, writer = groups[key], self.writers[key]
                screening = Screening(writer.codec, by_event_id(table_events), source, change_row_copy)
                sent = asyncio.get_running_loop().create_future()
                work = self._changes_then_load(writer, screening, table_events, source, sent)
                writes, loaded = await self._overlapped(work, sent, loaded)
                if writes is not None:
                    await self._write_state(writes)
            if loaded is not None:
                await self._write_state(planned(loaded))
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

    @staticmethod
    async def _overlapped(
        work: Coroutine[Any, Any, Loaded | None], sent: asyncio.Future[None], loaded: Loaded | None
    ) -> tuple[StateWrites | None, Loaded | None]:
        """Runs ``work`` (:meth:`_changes_then_load`) and, once its change-log rows are rendered and
        sent (``sent``), plans ``loaded``'s merge while the server is still storing them and loading
        what the next merge needs: the rows wait in the socket buffers meanwhile. The connection does
        nothing else until ``work`` is done. Gives the plan and ``work``'s outcome."""
        task = asyncio.ensure_future(work)
        try:
            if loaded is None:
                return None, await task
            await asyncio.wait((task, sent), return_when=asyncio.FIRST_COMPLETED)
            writes = planned(loaded)
            return writes, await task
        finally:
            if not task.done():  # planning failed, or this was cancelled: the COPY ends with the transaction
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _changes_then_load(
        self,
        writer: TableWriter,
        screening: Screening,
        events: list[ChangeEvent],
        source: str,
        sent: asyncio.Future[None],
    ) -> Loaded | None:
        await self._write_changes(writer, screening, sent)
        return await self._load(writer, screening, events, source)

    async def _load(
        self, writer: TableWriter, screening: Screening, events: list[ChangeEvent], source: str
    ) -> Loaded | None:
        """After a table's change log: its dead letters stored, a truncation applied, then the
        batch's partitions locked (new ones inserted, the others locked by a no-op update, in key
        order, tables in name order: concurrent writers never deadlock) with their states read, and
        what the merge needs (scope) of the stored rows and row tombstones loaded. ``events``: the
        table's batch in commit log order (``screening`` took them in event-id order)."""
        conn = self.conn
        assert conn is not None
        events, converted = in_order_of(events, screening.good), screening.converted
        if screening.dead:
            await self._dead_letters(screening.dead, source)
        if not events:
            return None
        work = state_work(events)
        if work.truncation is not None:
            events = await self._truncate(writer, work, source)
            if not events:
                return None
        keys = batch_keys(events)  # each partition's and row's key, encoded once for the batch
        by_bytes = keys.partitions
        stored = {
            by_bytes[r[0]]: StoredPartition(r[1])
            for r in await conn.fetch(
                f"INSERT INTO {writer.partitions} AS p (_pk) SELECT unnest($1::bytea[]) "
                "ON CONFLICT (_pk) DO UPDATE SET _state = p._state RETURNING _pk, _state",
                sorted(by_bytes),
            )
        }
        whole, row_keys = scope(writer.table, events, keys)
        whole_bytes = [keys.pk_bytes[pk] for pk in whole]
        loaded = Loaded(writer, events, converted, keys, stored)
        for pk_raw, key, blob, shown in await conn.fetch(writer.load_query, whole_bytes, row_keys):
            stored[by_bytes[pk_raw]].rows[key] = (blob, shown)
            (loaded.in_state if shown else loaded.in_tombstones).add(key)
        return loaded

    async def _write_state(self, writes: StateWrites) -> None:
        """A table's planned merge into its state, row tombstone and partition tables."""
        conn = self.conn
        assert conn is not None
        writer = writes.writer
        if writes.drop_state or writes.drop_tombstones:
            await conn.execute(
                f"WITH s AS (DELETE FROM {writer.state} WHERE _key = ANY($1)) "
                f"DELETE FROM {writer.tombstones} WHERE _key = ANY($2)",
                writes.drop_state,
                writes.drop_tombstones,
            )
        if any(p.visible for p in writes.plans):
            await self._write_state_rows(writer, writes.plans, writes.converted)
        if writes.tombstone_rows:
            await copy_in(
                conn,
                f"{writer.table.name}__tombstones",
                schema_name=writer.table.keyspace,
                source=binary_copy(writes.tombstone_rows),
                columns=TOMBSTONE_COLUMNS,
            )
        if writes.partition_rows:
            await conn.execute(
                f"UPDATE {writer.partitions} AS p SET _state = n._state "
                "FROM unnest($1::bytea[], $2::bytea[]) AS n(_pk, _state) WHERE p._pk = n._pk",
                [r[0] for r in writes.partition_rows],
                [r[1] for r in writes.partition_rows],
            )

    async def _write_state_rows(self, writer: TableWriter, plans: list[PartitionPlan], converted: Converted) -> None:
        """The visible rows of ``plans`` into the state table. Sent in binary COPY form as they are
        made (:func:`cdcfast.sinks._pgcopy.state_rows_copy`: the bytes of ``TableWriter.state_record``'s
        records, each value written as asyncpg writes it for the column's type as the table has it
        now, read in this transaction as asyncpg reads it for ``copy_records_to_table``); from a row
        holding a value that encoder does not write (or for every row, when a column's type is not
        one it writes), asyncpg encodes the records."""
        conn = self.conn
        assert conn is not None
        types = dict(
            await conn.fetch(
                "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                writer.state,
            )
        )
        known = all(c in types for c in writer.state_columns)
        kinds = state_kinds([types[c] for c in writer.state_columns]) if known else None
        rest: list[tuple[bytes, bytes, VisibleRow, bytes]] = []
        if kinds is None:
            rest = [(p.pk_bytes, key, row, blob) for p in plans for key, row, blob in p.visible]
        else:
            await copy_in(
                conn,
                writer.table.name,
                schema_name=writer.table.keyspace,
                source=binary_copy(state_rows_copy(kinds, plans, row_values, writer.codec, converted.values, rest)),
                columns=writer.state_columns,
            )
        if rest:
            records = [writer.state_record(row, key, pk_bytes, blob, converted) for pk_bytes, key, row, blob in rest]
            await copy_in(
                conn,
                writer.table.name,
                schema_name=writer.table.keyspace,
                records=records,
                columns=writer.state_columns,
            )

    async def _truncate(self, writer: TableWriter, work: StateWork, source: str) -> list[ChangeEvent]:
        """Empty the table's state (rows, row tombstones, partition states: in this transaction, with
        the checkpoint), and give back what to merge after it (docs/truncate.md). The raced writes
        read in earlier batches are screened again: a dead letter stays one. The partitions are locked
        first, in key order as a merge locks them: a partition another writer holds is waited for
        before any of its rows is deleted here (tests/sinks/test_postgres_lock_order.py)."""
        assert self.conn is not None
        await self.conn.execute(
            f"SELECT FROM {writer.partitions} ORDER BY _pk FOR UPDATE; "
            f"DELETE FROM {writer.state}; DELETE FROM {writer.tombstones}; DELETE FROM {writer.partitions}"
        )
        return writer.codec.screen(work.events, source, change_row_copy)[0]

    async def _write_changes(
        self, writer: TableWriter, screening: Screening, sent: asyncio.Future[None] | None = None
    ) -> None:
        """The change-log rows, each once. Straight into the table by COPY, rows sent as they are
        rendered: an event id already there (a replay, another replica's writer) fails the batch,
        which :meth:`_apply` then applies again with this path: a staging table and ``INSERT ...
        ON CONFLICT DO NOTHING``. That path stays for the next batches of the table while they keep
        finding ids already there, and STAGED_BATCHES more."""
        conn = self.conn
        assert conn is not None
        if not writer.staged:
            await copy_in(
                conn,
                f"{writer.table.name}_changes",
                schema_name=writer.table.keyspace,
                source=binary_copy(screening, sent),
                columns=CHANGE_COLUMNS,
            )
            return
        rows = screening.finish().rows
        if not rows:
            return
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS _cdc_changes (LIKE {writer.changes}) ON COMMIT DELETE ROWS"
        )
        await copy_in(conn, "_cdc_changes", source=binary_copy(rows), columns=CHANGE_COLUMNS)
        status = await conn.execute(f"INSERT INTO {writer.changes} SELECT * FROM _cdc_changes ON CONFLICT DO NOTHING")
        await conn.execute("TRUNCATE _cdc_changes")
        inserted = int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
        writer.staged = STAGED_BATCHES if inserted < len(rows) else writer.staged - 1
