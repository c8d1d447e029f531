"""The ClickHouse writer: native protocol (clickhouse-driver), columnar inserts.

Per CDC table ``ks.t``, in database ``ks``:

* ``ks.t_changes``: the change log, ``ReplacingMergeTree`` ordered by ``event_id``;
* ``ks.t__rows``: every row's merged state, ``ReplacingMergeTree(_version)`` ordered by
  ``(_pk, _key, _source)``: one version per writer, the highest ``(_version, _source)`` wins
  (:mod:`cdcfast.sinks.clickhouse_versions`); invisible rows (deleted) keep ``_visible = 0`` so
  that late, older events still lose;
* ``ks.t`` (view): the current state, ``SELECT *`` as Cassandra answers it, TTL-expired values
  hidden as of ``now()``; :meth:`TableWriter.as_of_select` gives the same for any moment;
* ``ks.t__partitions``: partition states, one per writer; ``cdcfast.checkpoints``: one row per
  (source, sink);
* ``ks.t__truncations``: the truncations applied; rows and partition states with a ``_version`` at
  or below the newest one's are cleared (docs/truncate.md).

Exactly once, without transactions (docs/exactly-once.md): a batch is written data first, then its
checkpoint. A crash in between leaves rows whose checkpoint did not move; the restart replays them
and writes the same change-log rows (same ``event_id``) and the same merged states again. The
engines collapse rows with equal sorting keys, and every query reads with ``FINAL``, so each change
is seen once however often it was written. Merged states are idempotent, so the state is the same
too. Writers of several nodes into one sink: :mod:`cdcfast.sinks.clickhouse_versions`.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import replace
from socket import SHUT_RDWR
from typing import Any, ParamSpec, TypeVar

from clickhouse_driver import Client, defines

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import ColumnDef, Schema, TableDef
from cdcfast.events import ChangeEvent
from cdcfast.sinks import clickhouse_versions as versions
from cdcfast.sinks import migrate_clickhouse
from cdcfast.sinks._chnative import change_log_columns
from cdcfast.sinks.base import WarehouseSink
from cdcfast.sinks.clickhouse_native import NativeClient, NativeColumns, NativeRows
from cdcfast.sinks.clickhouse_sql import ident, literal, qualified
from cdcfast.sinks.encode import Converted, Screened, TableCodec, collector_paused
from cdcfast.sinks.errors import WritersKeptRacing
from cdcfast.sinks.merge import PartitionPlan, batch_keys, by_table, converge, plan, scope
from cdcfast.sinks.poison import DeadLetter
from cdcfast.sinks.state import VisibleRow
from cdcfast.sinks.tcp import TCP_TIMEOUT_SECONDS
from cdcfast.sinks.truncation import state_work
from cdcfast.transform.typemap import ClickHouseFeatures, TargetType, TypeMappings, convert_cell, load_mappings

P = ParamSpec("P")
R = TypeVar("R")
PROBE_SECONDS = 10  # a question about the server's running queries gets this long to connect and answer
SETTLE_ROUNDS = 20  # reads after writing while other writers change the same rows (then: an error, applied again)
# Rows per mark of the state tables' sparse index. Every write reads the stored versions of the
# partitions its batch touches; with ClickHouse's default (8,192) a few hundred scattered keys read
# most of a big table on each write. Smaller marks cost a larger index in memory (one entry per 256
# rows) and nothing measurable on inserts.
STATE_INDEX_GRANULARITY = 256


CHANGE_LOG_COLUMNS = (
    "event_id", "op", "ts", "change_time", "segment_id", "position", "source", "key", "cells", "deletion_ts", "range",
)  # fmt: skip
# The change log's column types, as ddl() makes them and as the server reports them for an insert
# (what cdcfast.sinks._chnative encodes).
CHANGE_LOG_TYPES = [
    "UUID", "String", "Int64", "DateTime('UTC')", "Int64", "Int32", "String", "String", "Nullable(String)",
    "Nullable(Int64)", "Nullable(String)",
]  # fmt: skip
CHANGE_LOG_DEFINITION = ", ".join(f"{name} {type_}" for name, type_ in zip(CHANGE_LOG_COLUMNS, CHANGE_LOG_TYPES))


def change_fields(*fields: Any) -> tuple:
    """A change-log row as screening renders it (``change_record``'s arguments), for
    :func:`change_log_rows`: converted only if the driver is to encode it."""
    return fields


def change_log_rows(rows: list[tuple]) -> NativeRows:
    """Rows of :func:`change_fields` as an insert's data: encoded by cdcfast when the table is as
    ddl() makes it (:mod:`cdcfast.sinks._chnative`), else by the driver from ``change_record``."""
    return NativeRows(rows, CHANGE_LOG_TYPES, change_log_columns, _change_log_columnar)


def _change_log_columnar(rows: list[tuple]) -> list[list[Any]]:
    return [list(c) for c in zip(*(change_record(*r) for r in rows))]


DATETIME_MAX = 2**32 - 1  # DateTime's last second (2106-02-07T06:28:15Z)


def change_seconds(ts: int) -> int:
    """A change's ``change_time``: its write timestamp's second, within what a ``DateTime`` holds (1970
    to 2106; Cassandra takes any 64-bit timestamp, and ``ts`` keeps it exactly)."""
    return min(max(0, ts // 1_000_000), DATETIME_MAX)


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
    """A change-log row for a native insert (``event_id`` .. ``range``)."""
    event_uuid, change_time = uuid.UUID(bytes=event_id), change_seconds(ts)
    return (event_uuid, op, ts, change_time, segment_id, position, source, key, cells, deletion_ts, range_)


class TableWriter:
    def __init__(
        self,
        table: TableDef,
        mappings: TypeMappings,
        features: ClickHouseFeatures,
        stored: Collection[str] | None = None,
    ) -> None:
        """``stored``: the data columns the warehouse rows table has, when a schema change is not
        applied to it (auto_migrate off); None: all of ``table``'s."""
        self.table = table
        self.db = table.keyspace
        self.changes = qualified(self.db, f"{table.name}_changes")
        self.state = versions.StateTable(self.db, table.name)
        self.rows = self.state.rows
        self.view = qualified(self.db, table.name)
        self.partitions = self.state.partitions
        self.truncations = qualified(self.db, f"{table.name}__truncations")
        self.key_columns = table.partition_key + table.clustering
        self.data_columns = list(table.columns.values())
        self.targets: dict[str, TargetType] = {
            c.name: mappings.clickhouse(self._storage_type(c), features) for c in self.key_columns + self.data_columns
        }
        arrays: dict[str, Any] = {
            name: [] for name, t in self.targets.items() if t.nullable_sql == t.sql and t.sql.startswith("Array")
        }
        self.codec = TableCodec(table, self.targets, arrays)
        if stored is not None:  # the rows table lacks some columns: write the others
            self.data_columns = [c for c in self.data_columns if c.name in stored]
            self.codec.data = [self.codec.columns[c.name] for c in self.data_columns]
        self.row_columns = (
            [c.name for c in self.key_columns + self.data_columns]
            + ["_exp_names", "_exp_at"]
            + ["_key", "_pk", "_visible", "_row_expires", "_state", "_version", "_source", "_basis"]
        )

    @staticmethod
    def _storage_type(column: ColumnDef) -> CqlType:
        return replace(column.type, frozen=True) if column.type.is_complex else column.type

    def sql_type(self, column: ColumnDef) -> str:
        target = self.targets[column.name]
        return target.nullable_sql

    def ddl(self) -> list[str]:
        columns = ",\n  ".join(f"{ident(c.name)} {self.sql_type(c)}" for c in self.key_columns + self.data_columns)
        return [
            f"CREATE DATABASE IF NOT EXISTS {ident(self.db)}",
            f"CREATE TABLE IF NOT EXISTS {self.changes} ({CHANGE_LOG_DEFINITION}) "
            "ENGINE = ReplacingMergeTree ORDER BY event_id",
            f"""CREATE TABLE IF NOT EXISTS {self.rows} (
  {columns},
  _exp_names Array(String), _exp_at Array(UInt32),
  _key String, _pk String, _visible UInt8, _row_expires UInt32, _state String, _version UInt64,
  _source String, _basis UInt64
) ENGINE = ReplacingMergeTree(_version) ORDER BY (_pk, _key, _source)
SETTINGS index_granularity = {STATE_INDEX_GRANULARITY}""",
            f"""CREATE TABLE IF NOT EXISTS {self.partitions} (
  _pk String, _state String, _version UInt64, _source String
) ENGINE = ReplacingMergeTree(_version) ORDER BY (_pk, _source)
SETTINGS index_granularity = {STATE_INDEX_GRANULARITY}""",
            self.truncations_ddl(),
            f"CREATE VIEW IF NOT EXISTS {self.view} AS {self.as_of_select('now()')}",
        ]

    def truncations_ddl(self) -> str:
        """The table's truncations as applied: each one's ``_version`` is the state's generation from
        then on (rows and partition states at or below the newest are cleared: docs/truncate.md)."""
        return f"""CREATE TABLE IF NOT EXISTS {self.truncations} (
  event_id UUID, source String, segment_id Int64, position Int32, truncated_segment_id Int64,
  truncated_position Int32, truncated_at Nullable(Int64), _version UInt64
) ENGINE = ReplacingMergeTree ORDER BY event_id"""

    def generation(self) -> str:
        """The current state's generation: the newest truncation's version (0: never truncated)."""
        return self.state.generation()

    def as_of_select(self, moment: str) -> str:
        """The current state as ``SELECT *`` returned it at ``moment`` (a ClickHouse DateTime expression):
        each row's winning version (:mod:`cdcfast.sinks.clickhouse_versions`), when it shows.

        The inner query renames every column (``__v_<name>``): ClickHouse 18.16 resolves an alias
        inside its own expression (``if(..., x) AS x``) as a cycle."""
        inner = [f"{ident(c.name)} AS {ident('__v_' + c.name)}" for c in self.key_columns + self.data_columns]
        inner += ["_exp_names", "_exp_at"]
        stored = [ident(c.name) for c in self.key_columns + self.data_columns]
        stored += ["_exp_names", "_exp_at", "_visible", "_row_expires"]
        outer = [f"{ident('__v_' + c.name)} AS {ident(c.name)}" for c in self.key_columns]
        for c in self.data_columns:
            target = self.targets[c.name]
            value, expiry = ident("__v_" + c.name), f"_exp_at[indexOf(_exp_names, {literal(c.name)})]"  # 0: none
            # Arrays cannot be NULL: an empty array of the column's own type (a bare [] has no type).
            array = target.nullable_sql == target.sql and target.sql.startswith("Array")
            empty = f"arraySlice({value}, 1, 0)" if array else "NULL"
            outer.append(f"if({expiry} != 0 AND {expiry} <= toUInt32({moment}), {empty}, {value}) AS {ident(c.name)}")
        return (
            f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM "
            f"({versions.winners(self.rows, self.generation(), ', '.join(stored))}) "
            f"WHERE _visible = 1 AND (_row_expires = 0 OR _row_expires > toUInt32({moment})))"
        )

    def convert_value(self, column: str, raw: bytes) -> Any:
        """One serialized value as this column stores it; errors name keyspace, table and column."""
        return convert_cell(self.targets[column], self.table.keyspace, self.table.name, column, raw)

    def state_values(self, row: VisibleRow, converted: Converted) -> list[Any]:
        """A visible row's column values and its expiring values' expiries (``row_columns`` up to ``_key``)."""
        expires = row.expires
        return [*self.codec.row_values(row, converted), list(expires), list(expires.values())]


def in_thread(method: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """``method`` (blocking: clickhouse-driver waits on its socket) run in a thread when awaited."""

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, *args, **kwargs)

    return run


class ClickHouseSink(WarehouseSink):
    """Applies batches of change events to one ClickHouse server."""

    kind = "clickhouse"

    def __init__(
        self,
        dsn: str,
        name: str = "clickhouse",
        mappings: TypeMappings | None = None,
        dropped_columns: str = "keep",
        auto_migrate: bool = True,
        tcp_timeout_seconds: float = TCP_TIMEOUT_SECONDS,
    ) -> None:
        """``dropped_columns`` (keep|remove) and ``auto_migrate``: docs/schema-evolution.md."""
        super().__init__(name, dropped_columns, auto_migrate, tcp_timeout_seconds)
        self.dsn = dsn
        self.mappings = mappings or load_mappings()
        self.client: NativeClient | None = None
        self.features: ClickHouseFeatures | None = None
        self.writers: dict[tuple[str, str], TableWriter] = {}
        self.checkpoints: dict[str, tuple[int, int] | None] = {}  # per source, as last read or written

    @in_thread
    def connect(self) -> None:
        """A new connection, with cdcfast's own tables. An attempt given up before its socket existed
        (see :meth:`abort`) goes on in its thread until the driver's connect timeout: it works on its
        own client only, and closes it at the end if a later attempt has replaced it meanwhile (or is
        closed by the later attempt, if it connected before)."""
        self.checkpoints.clear()
        previous, client = self.client, NativeClient.from_url(self.dsn)
        self.client = client  # abort() cuts the socket being made
        if previous is not None:
            previous.disconnect()
        client.connection.client_name = self._client_name
        client.tcp_timeout_seconds = self.tcp_timeout_seconds
        try:
            self._set_up(client)
        finally:
            if self.client is not client:
                client.disconnect()

    def _set_up(self, client: NativeClient) -> None:
        version = client.execute("SELECT version()")[0][0]
        self.features = ClickHouseFeatures.from_version(version)
        client.execute("CREATE DATABASE IF NOT EXISTS cdcfast")
        client.execute(
            """CREATE TABLE IF NOT EXISTS cdcfast.dead_letters (
                 event_id UUID, sink String, source String, keyspace String, table String, segment_id Int64,
                 position Int32, reason String, event String, created_at DateTime, replayed UInt8, _version UInt64
               ) ENGINE = ReplacingMergeTree(_version) ORDER BY (sink, event_id)"""
        )
        client.execute(
            """CREATE TABLE IF NOT EXISTS cdcfast.checkpoints (
                 source String, sink String, segment_id Int64, position Int32, updated_at DateTime,
                 _version UInt64
               ) ENGINE = ReplacingMergeTree(_version) ORDER BY (source, sink)"""
        )
        client.execute(migrate_clickhouse.REGISTRY_DDL)

    async def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None

    @in_thread
    def waiting_on(self) -> dict[str, Any] | None:
        """This sink's queries the server is running (``system.processes``), asked on a connection of
        its own: how long each has run, rows read and written, memory."""
        probe = Client.from_url(self.dsn)
        probe.connection.connect_timeout = probe.connection.send_receive_timeout = PROBE_SECONDS
        try:
            rows = probe.execute(
                "SELECT query_id, elapsed, read_rows, written_rows, memory_usage, substring(query, 1, 300) "
                "FROM system.processes WHERE client_name = %(name)s ORDER BY elapsed DESC",
                {"name": self._client_name},
            )
        finally:
            probe.disconnect()
        fields = ("query_id", "elapsed", "read_rows", "written_rows", "memory_usage", "query")
        return {"running": [dict(zip(fields, row)) for row in rows]}

    def abort(self) -> bool:
        """Shut the write's socket down: the driver's read returns at once (a close alone would not
        wake it in the writing thread), and the write fails as transient."""
        socket = self.client.connection.socket if self.client is not None else None
        if socket is None:
            return False  # no socket yet: the driver's connect_timeout ends the attempt
        try:
            socket.shutdown(SHUT_RDWR)
        except OSError:
            pass  # already gone
        return True

    @property
    def _client_name(self) -> str:
        """How the server lists this sink's connection (``system.processes.client_name``)."""
        return f"{defines.DBMS_NAME} cdcfast {self.name}"

    @in_thread
    def prepare(self, schema: Schema) -> None:
        self.retired = set(schema.retired)
        for table in schema.cdc_tables():
            if table.id not in schema.retired:  # a dropped table's: made when late mutations need them
                self.prepare_table(table)
        migrate_clickhouse.mark_gone(self, schema)

    @in_thread
    def table_writer(self, table: TableDef) -> TableWriter:
        return self.prepare_table(table)

    def prepare_table(self, table: TableDef) -> TableWriter:
        assert self.client is not None and self.features is not None
        key = (table.keyspace, table.name)
        writer = self.writers.get(key)
        if writer is None or (writer.table is not table and writer.table != table) or self.refused.due(key):
            # New, or its definition changed in Cassandra (or a column it refused may be fixed by
            # now): create or migrate its tables first.
            self.refused.forget(key)
            writer = migrate_clickhouse.prepare_table(self, table)
            self._view_up_to_date(writer)
            self.writers[key] = writer
        return writer

    def _view_up_to_date(self, writer: TableWriter) -> None:
        """A state view made before truncations were applied, before each writer kept its own versions
        of a row, or before rows kept only their expiring values' expiries, is made again."""
        assert self.client is not None
        rows = self.client.execute(
            "SELECT create_table_query FROM system.tables WHERE database = %(db)s AND name = %(name)s",
            {"db": writer.db, "name": writer.table.name},
        )
        made = rows[0][0] if rows else ""
        if rows and any(part not in made for part in (f"{writer.table.name}__truncations", "LIMIT 1 BY", "_exp_names")):
            self.client.execute(f"DROP TABLE IF EXISTS {writer.view}")
            self.client.execute(f"CREATE VIEW IF NOT EXISTS {writer.view} AS {writer.as_of_select('now()')}")

    def _truncate(self, writer: TableWriter, truncation: ChangeEvent, source: str) -> int:
        """Apply one truncation: its record with a version above everything the state holds, which
        clears the state (rows and partition states at or below it no longer count). A replayed
        truncation keeps the version it was given first, so the rows written after it stay.
        Returns the generation to write and read against."""
        assert self.client is not None
        event_id = uuid.UUID(bytes=truncation.event_id)
        known = self.client.execute(
            f"SELECT max(_version), count() FROM {writer.truncations} WHERE event_id = %(id)s", {"id": event_id}
        )
        newest = self._generation(writer)
        if known[0][1]:
            return max(newest, known[0][0])
        version = max(time.time_ns(), newest + 1)
        self.client.execute(
            f"INSERT INTO {writer.truncations} (event_id, source, segment_id, position, truncated_segment_id, "
            "truncated_position, truncated_at, _version) VALUES",
            [
                (
                    event_id,
                    source,
                    truncation.segment_id,
                    truncation.position,
                    truncation.truncated_segment_id,
                    truncation.truncated_position,
                    truncation.truncated_at,
                    version,
                )
            ],
        )
        return version

    def _generation(self, writer: TableWriter) -> int:
        assert self.client is not None
        return int(self.client.execute(f"SELECT {writer.generation()}")[0][0])

    def _dead_letters(self, dead: list[DeadLetter], source: str, replayed: int) -> None:
        assert self.client is not None
        if not replayed:
            self.dead_lettered += dead
        now = int(time.time())
        self.client.execute(
            "INSERT INTO cdcfast.dead_letters (event_id, sink, source, keyspace, table, segment_id, position, "
            "reason, event, created_at, replayed, _version) VALUES",
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
                    now,
                    replayed,
                    time.time_ns(),
                )
                for d in dead
            ],
        )

    @in_thread
    def store_dead_letters(self, dead: list[DeadLetter], source: str) -> None:
        """Keep changes refused at apply time (cdcfast.supervisor.isolate); stored again, a letter
        replaces itself (ReplacingMergeTree by sink and event id)."""
        self._dead_letters(dead, source, replayed=0)

    @in_thread
    def dlq_depth(self) -> int:
        """Dead letters of this sink not replayed yet."""
        assert self.client is not None
        query = "SELECT count() FROM cdcfast.dead_letters FINAL WHERE sink = %(sink)s AND replayed = 0"
        return int(self.client.execute(query, {"sink": self.name})[0][0])

    @in_thread
    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter of this sink, oldest first (``cdcfast dlq list``)."""
        return self._read_dead_letters()

    def _read_dead_letters(self) -> list[dict[str, Any]]:
        assert self.client is not None
        rows = self.client.execute(
            "SELECT event_id, source, keyspace, table, segment_id, position, reason, event, created_at, replayed "
            "FROM cdcfast.dead_letters FINAL WHERE sink = %(sink)s ORDER BY created_at, segment_id, position",
            {"sink": self.name},
            settings={"strings_as_bytes": True},
        )
        keys = (
            "event_id",
            "source",
            "keyspace",
            "table",
            "segment_id",
            "position",
            "reason",
            "event",
            "created_at",
            "replayed_at",
        )
        out = []
        for row in rows:
            item = dict(zip(keys, row))
            for text in ("source", "keyspace", "table", "reason"):
                item[text] = item[text].decode()
            item["replayed_at"] = item["created_at"] if item["replayed_at"] else None
            out.append(item)
        return out

    @in_thread
    def truncations(self, table: TableDef) -> list[tuple[str, int, int]]:
        """The table's truncations applied here: (source, recorded segment, recorded position)."""
        assert self.client is not None
        writer = self.prepare_table(table)
        rows = self.client.execute(
            f"SELECT source, truncated_segment_id, truncated_position FROM {writer.truncations} FINAL"
        )
        return [(source, segment_id, position) for source, segment_id, position in rows]

    @in_thread
    def mark_replayed(self, event_ids: list[bytes]) -> None:
        from cdcfast.sinks.poison import EVENT_DECODER

        wanted = {uuid.UUID(bytes=e) for e in event_ids}
        letters = [d for d in self._read_dead_letters() if d["event_id"] in wanted]
        if letters:
            self._dead_letters(
                [DeadLetter(EVENT_DECODER.decode(d["event"]), d["reason"]) for d in letters],
                letters[0]["source"],
                replayed=1,
            )

    @in_thread
    def checkpoint(self, source: str) -> tuple[int, int] | None:
        return self._read_checkpoint(source)

    def _read_checkpoint(self, source: str) -> tuple[int, int] | None:
        assert self.client is not None
        rows = self.client.execute(
            "SELECT segment_id, position FROM cdcfast.checkpoints FINAL WHERE source = %(s)s AND sink = %(k)s",
            {"s": source, "k": self.name},
        )
        self.checkpoints[source] = (rows[0][0], rows[0][1]) if rows else None
        return self.checkpoints[source]

    @in_thread
    def apply(
        self,
        events: Sequence[ChangeEvent],
        tables: dict[tuple[str, str], TableDef],
        source: str,
        position: tuple[int, int] | None,
    ) -> None:
        """Write ``events``, then move the checkpoint to ``position`` (data first: see the module doc).
        In a thread: the driver blocks, and the event loop stays free to watch a write that does not
        finish (:meth:`waiting_on`, :meth:`abort`)."""
        client = self.client
        assert client is not None
        groups = by_table(events)
        for key in groups:
            self.prepare_table(tables[key])
        unfollowed = self.refused.set_aside(groups)  # changes with a column the warehouse refused to add
        if unfollowed:
            self._dead_letters(unfollowed, source, replayed=0)
        # The writer whose versions of the rows these are (clickhouse_versions): a dead-letter replay
        # runs beside the node's own writer, so it keeps versions of its own.
        writer_name = source if position is not None else f"{source} (dlq replay)"
        try:
            with collector_paused():
                settle: Callable[[], None] | None = None
                for key, table_events in groups.items():
                    writer = self.writers[key]
                    # Screened while the server stores the previous table's state (not waited on yet).
                    screening = writer.codec.screen(table_events, source, change_fields)
                    if settle is not None:
                        settle()  # hears the server's answer first: a refused write stops here
                    settle = self._apply_table(writer, screening, source, writer_name)
                if settle is not None:
                    settle()
            client.acknowledged()
        except BaseException:
            client.abandon_unacknowledged()  # the next batch starts clean (this one failed anyway)
            raise
        if position is None:  # a dead-letter replay moves no checkpoint
            return
        # The stored checkpoint is read once per source; after that this writer is the one moving it.
        current = self.checkpoints[source] if source in self.checkpoints else self._read_checkpoint(source)
        if current is None or current < position:
            client.execute(
                "INSERT INTO cdcfast.checkpoints (source, sink, segment_id, position, updated_at, _version) VALUES",
                [(source, self.name, position[0], position[1], int(time.time()), time.time_ns())],
            )
            self.checkpoints[source] = position

    def _apply_table(
        self, writer: TableWriter, screening: Screened, source: str, writer_name: str
    ) -> Callable[[], None] | None:
        """Write one table's screened batch: its change log, its merged rows and partition states.
        The server's answer to the last insert is left unheard: the caller screens the next table
        meanwhile, then calls what this returns (the batch's settling, see :meth:`_settle`)."""
        client = self.client
        assert client is not None
        events, changes, dead, converted = screening
        if dead:
            self._dead_letters(dead, source, replayed=0)
        if not events:
            return None
        insert_changes = f"INSERT INTO {writer.changes} ({', '.join(CHANGE_LOG_COLUMNS)}) VALUES"
        work = state_work(events)
        generation = None  # the current one: read with the states
        if work.truncation is not None:
            client.execute(insert_changes, change_log_rows(changes))  # the truncation's own row first
            generation = self._truncate(writer, work.truncation, source)
            events = writer.codec.screen(work.events, source, change_fields)[0]  # raced ones: screened again
            if not events:
                return None
        keys = batch_keys(events)  # each partition's and row's key, encoded once for the batch
        whole, row_keys = scope(writer.table, events, keys)
        batch = versions.Scope(keys.partitions, [keys.pk_bytes[pk] for pk in whole], row_keys)
        snapshot = versions.read(client, writer.state, batch, generation)
        generation = snapshot.generation
        if work.truncation is None:  # stored while the merge is planned
            client.insert_unacknowledged(insert_changes, change_log_rows(changes))
        plans = plan(writer.table, snapshot.stored, events, keys)
        self._store(writer, plans, converted, snapshot, generation, writer_name)
        return functools.partial(self._settle, writer, batch, snapshot, converted, generation, writer_name)

    def _store(
        self,
        writer: TableWriter,
        plans: list[PartitionPlan],
        converted: Converted,
        snapshot: versions.Snapshot,
        generation: int,
        writer_name: str,
    ) -> None:
        """Write ``plans`` as ``writer_name``'s versions, above every version in ``snapshot``."""
        client = self.client
        assert client is not None
        version = max(time.time_ns(), generation + 1, snapshot.newest + 1)  # above all, whatever the clock did
        rows: list[tuple] = []
        empty = self._empty_row(writer)
        for p in plans:
            basis = (
                snapshot.basis(p.pk_bytes, writer_name, version) if p.state is not None else snapshot.basis(p.pk_bytes)
            )
            mine = (version, writer_name, basis)
            for key, row, blob in p.visible:
                rows.append((*writer.state_values(row, converted), key, p.pk_bytes, 1, row.row_expires, blob, *mine))
            for key, blob in p.tombstones:
                rows.append((*empty, key, p.pk_bytes, 0, 0, blob, *mine))
            for key in p.gone:  # e.g. a static-only row once a row shows
                rows.append((*empty, key, p.pk_bytes, 0, 0, b"", *mine))
        # Each insert's answer is heard before the next statement (NativeClient.insert_unacknowledged):
        # the rows last, so that the server stores them while the caller screens the next table.
        # Either order leaves a crash in between to the rows' _basis (stale rows are written again).
        partitions = [(p.pk_bytes, p.state, version, writer_name) for p in plans if p.state is not None]
        if partitions:
            client.insert_unacknowledged(
                f"INSERT INTO {writer.partitions} (_pk, _state, _version, _source) VALUES", partitions
            )
        if rows:
            client.insert_unacknowledged(
                f"INSERT INTO {writer.rows} ({', '.join(ident(c) for c in writer.row_columns)}) VALUES",
                NativeColumns(map(list, zip(*rows))),
                columnar=True,
            )

    def _settle(
        self,
        writer: TableWriter,
        batch: versions.Scope,
        snapshot: versions.Snapshot,
        converted: Converted,
        generation: int,
        writer_name: str,
    ) -> None:
        """Step 3 of :mod:`cdcfast.sinks.clickhouse_versions`: while other writers stored versions of
        the batch's rows since the last read (or rows were stale then), read again and write the
        rows whose winning version is not what every writer's versions give."""
        client = self.client
        assert client is not None
        for _ in range(SETTLE_ROUNDS):
            if not snapshot.stale and not versions.changed_since(
                client, writer.state, batch, generation, snapshot, writer_name
            ):
                return
            snapshot = versions.read(client, writer.state, batch, generation)
            plans = converge(writer.table, snapshot.stored)
            if not plans:
                return
            self._store(writer, plans, converted, snapshot, generation, writer_name)
        raise WritersKeptRacing(
            f"sink {self.name}: table {writer.table.keyspace}.{writer.table.name}: other writers kept changing "
            f"the rows of this batch for {SETTLE_ROUNDS} rounds; the batch is applied again after a backoff"
        )

    @staticmethod
    def _empty_row(writer: TableWriter) -> list[Any]:
        out: list[Any] = []
        for c in writer.key_columns + writer.data_columns:
            target = writer.targets[c.name]
            out.append([] if target.nullable_sql == target.sql and target.sql.startswith("Array") else None)
        return [*out, [], []]  # no expiries
