"""Schema changes applied to PostgreSQL and TimescaleDB (see :mod:`cdcfast.sinks.migrate`).

Everything for one table happens in one transaction under the table's advisory lock (the one
:meth:`PostgresSink.prepare_table` always took), so two writers migrating at once serialize and
the second finds the work done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdcfast.commitlog.schema import Schema, TableDef
from cdcfast.log import get_logger
from cdcfast.sinks.errors import ErrorClass, classify
from cdcfast.sinks.migrate import (
    REEVALUATE_CHUNK,
    aside_name,
    column_changes,
    first_status,
    newly_dropped,
    original_name,
    registry_columns,
    warn_unapplied,
)
from cdcfast.sinks.postgres_copy import copy_in

if TYPE_CHECKING:
    import asyncpg

    from cdcfast.sinks.postgres import PostgresSink, TableWriter

REGISTRY_DDL = """CREATE TABLE IF NOT EXISTS cdcfast.tables (
  keyspace text NOT NULL, "table" text NOT NULL, table_id uuid NOT NULL, columns text[] NOT NULL,
  status text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (keyspace, "table"))"""
STATE_SUFFIXES = ("", "_changes", "__partitions", "__tombstones")
INDEX_SUFFIXES = ("__by_partition", "__tombstones_by_partition")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(schema: str, name: str) -> str:
    return f"{_ident(schema)}.{_ident(name)}"


async def columns_of(conn: asyncpg.Connection, relation: str) -> list[str]:
    """The columns a relation really has (pg_attribute), in order."""
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        relation,
    )
    return [r[0] for r in rows]


async def move_aside(conn: asyncpg.Connection, keyspace: str, name: str, aside: str) -> None:
    """Rename the warehouse tables (and their indexes) of ``keyspace.name`` to ``aside``; the as-of
    function and view go (their bodies name the tables; they are made again for ``aside`` if its
    late mutations arrive)."""
    await conn.execute(f"DROP VIEW IF EXISTS {_qualified(keyspace, name + '_live')}")
    await conn.execute(f"DROP FUNCTION IF EXISTS {_qualified(keyspace, name + '_as_of')}(timestamptz)")
    for suffix in STATE_SUFFIXES:
        await conn.execute(
            f"ALTER TABLE IF EXISTS {_qualified(keyspace, name + suffix)} RENAME TO {_ident(aside + suffix)}"
        )
    for suffix in INDEX_SUFFIXES:
        await conn.execute(
            f"ALTER INDEX IF EXISTS {_qualified(keyspace, name + suffix)} RENAME TO {_ident(aside + suffix)}"
        )
    await conn.execute('DELETE FROM cdcfast.tables WHERE keyspace = $1 AND "table" = $2', keyspace, aside)
    await conn.execute(
        """UPDATE cdcfast.tables SET "table" = $3, status = 'replaced', updated_at = now()
           WHERE keyspace = $1 AND "table" = $2""",
        keyspace,
        name,
        aside,
    )


async def prepare_table(sink: PostgresSink, table: TableDef) -> TableWriter:
    """Create or migrate the warehouse tables of ``table``; a writer for what they now hold."""
    from cdcfast.sinks.postgres import TableWriter, _literal

    conn = sink.conn
    assert conn is not None
    log = get_logger("migrate", sink=sink.name)
    ks = table.keyspace
    original = original_name(table.name)
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock(hashtext({_literal(f'{ks}.{original or table.name}')}))")
        registered = await _registered(conn, ks, table.name)
        if original is not None:
            # Late mutations of a dropped table whose name a new one took: its tables may still
            # be under the old name (the new table's first event not applied yet).
            before = await _registered(conn, ks, original)
            if before is not None and before == table.id:
                await move_aside(conn, ks, original, table.name)
                log.warning(
                    "table re-created in Cassandra: old warehouse tables renamed",
                    keyspace=ks,
                    table=original,
                    table_id=str(table.id),
                    renamed_to=table.name,
                )
        state = _qualified(ks, table.name)
        exists = await conn.fetchval("SELECT to_regclass($1)", state) is not None
        if exists and registered is not None and registered != table.id:
            aside = aside_name(table.name, registered)
            await move_aside(conn, ks, table.name, aside)
            log.warning(
                "table re-created in Cassandra under the same name: the old warehouse tables renamed aside, "
                "fresh ones created",
                keyspace=ks,
                table=table.name,
                old_table_id=str(registered),
                table_id=str(table.id),
                renamed_to=aside,
            )
            exists = False
        stored = None
        had = None  # the Cassandra columns the registry last recorded for this table id
        if exists:
            had = await conn.fetchval(
                'SELECT columns FROM cdcfast.tables WHERE keyspace = $1 AND "table" = $2 AND table_id = $3',
                ks,
                table.name,
                table.id,
            )
            present = await columns_of(conn, state)
            stored = await _migrate_columns(sink, table, state, present, log)
        writer = TableWriter(table, sink.mappings, sink.timescale, sink.hypertables.get(table.qualified_name), stored)
        if exists:
            await _drop_stale_views(conn, writer)
        for statement in writer.ddl():
            await conn.execute(statement)
        dropped = newly_dropped(table, had)
        if dropped:
            await hide_rows_of_dropped_columns(conn, writer, dropped, log)
        await conn.execute(
            """INSERT INTO cdcfast.tables (keyspace, "table", table_id, columns, status) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (keyspace, "table") DO UPDATE SET table_id = excluded.table_id, columns = excluded.columns,
                 status = CASE WHEN cdcfast.tables.table_id = excluded.table_id THEN cdcfast.tables.status
                          ELSE excluded.status END, updated_at = now()""",
            ks,
            table.name,
            table.id,
            registry_columns(table),
            first_status(table, sink.retired),
        )
    return writer


async def hide_rows_of_dropped_columns(conn: asyncpg.Connection, writer: TableWriter, dropped: list[str], log) -> None:  # noqa: ANN001
    """After ``dropped`` left the table in Cassandra: rows that only their cells kept alive leave the
    state table for the tombstone table (in the migration's transaction), as Cassandra's ``SELECT *``
    no longer shows them. Only rows whose remaining regular columns are all NULL can be such rows;
    they are judged with their stored state, in chunks of :data:`REEVALUATE_CHUNK` keys."""
    from cdcfast.sinks.encode import Converted
    from cdcfast.sinks.merge import StoredPartition, reevaluate, split_row_key

    table = writer.table
    regular = [c for c in writer.data_columns if c.kind == "regular"]
    all_null = " AND ".join(f"{_ident(c.name)} IS NULL" for c in regular) or "true"
    whole = any(c.kind == "static" for c in table.columns.values())  # the static-only row may appear
    hidden, last = 0, b""
    while True:
        candidates = await conn.fetch(
            f"SELECT _pk, _key, _state FROM {writer.state} WHERE {all_null} AND _key > $1 "
            f"ORDER BY _key LIMIT {REEVALUATE_CHUNK}",
            last,
        )
        if not candidates:
            break
        last = candidates[-1][1]
        pks = list(dict.fromkeys(r[0] for r in candidates))
        stored = {
            pk_raw: StoredPartition(blob)
            for pk_raw, blob in await conn.fetch(
                f"SELECT _pk, _state FROM {writer.partitions} WHERE _pk = ANY($1)", pks
            )
        }
        rows = candidates
        if whole:
            rows = await conn.fetch(f"SELECT _pk, _key, _state FROM {writer.state} WHERE _pk = ANY($1)", pks)
        for pk_raw, key, blob in rows:
            stored.setdefault(pk_raw, StoredPartition(None)).rows[key] = (blob, True)
        plans = reevaluate(table, {split_row_key(next(iter(s.rows)))[0]: s for s in stored.values() if s.rows})
        if not plans:
            continue
        gone = [key for p in plans for key, _ in p.tombstones] + [key for p in plans for key in p.gone]
        await conn.execute(f"DELETE FROM {writer.state} WHERE _key = ANY($1)", gone)
        await copy_in(
            conn,
            f"{table.name}__tombstones",
            schema_name=table.keyspace,
            records=[(key, p.pk_bytes, blob) for p in plans for key, blob in p.tombstones],
            columns=("_key", "_pk", "_state"),
        )
        shown = [(key, row, p.pk_bytes, blob) for p in plans for key, row, blob in p.visible]
        if shown:  # static-only rows of partitions left without a row
            converted = Converted(list(writer.codec.columns))
            await copy_in(
                conn,
                table.name,
                schema_name=table.keyspace,
                records=[writer.state_record(row, key, pk, blob, converted) for key, row, pk, blob in shown],
                columns=writer.state_columns,
            )
        hidden += sum(len(p.tombstones) for p in plans)
    log.info(
        "rows kept alive only by dropped columns hidden",
        keyspace=table.keyspace,
        table=table.name,
        columns=dropped,
        rows=hidden,
    )


async def _registered(conn: asyncpg.Connection, keyspace: str, name: str):  # noqa: ANN202 - uuid.UUID | None
    return await conn.fetchval(
        'SELECT table_id FROM cdcfast.tables WHERE keyspace = $1 AND "table" = $2', keyspace, name
    )


async def _migrate_columns(sink: PostgresSink, table: TableDef, state: str, present: list[str], log) -> set[str] | None:  # noqa: ANN001
    """ALTER the state table for the columns Cassandra added or dropped; with auto_migrate off,
    warn instead and return the data columns the state table has."""
    from cdcfast.sinks.postgres import TableWriter

    conn = sink.conn
    assert conn is not None
    changes = column_changes(table, present)
    if not changes:
        return None
    targets = TableWriter(table, sink.mappings, sink.timescale).targets
    add = {
        c.name: f"ALTER TABLE {state} ADD COLUMN IF NOT EXISTS {_ident(c.name)} {targets[c.name].sql}"
        for c in changes.added
    }
    drop = {name: f"ALTER TABLE {state} DROP COLUMN IF EXISTS {_ident(name)}" for name in changes.dropped}
    if sink.auto_migrate:
        for name, ddl in add.items():
            try:
                async with conn.transaction():  # a savepoint: a refused ALTER leaves the rest going
                    await conn.execute(ddl)
            except Exception as exc:  # noqa: BLE001 - classified: a lost connection is retried as ever
                if classify(exc) is ErrorClass.TRANSIENT:
                    raise
                sink.refused.refuse(table, table.columns[name], ddl, exc)
                continue
            log.info("column added", keyspace=table.keyspace, table=table.name, column=name, ddl=ddl)
        if sink.dropped_columns == "remove":
            for name, ddl in drop.items():
                await conn.execute(ddl)
                log.info("dropped column removed", keyspace=table.keyspace, table=table.name, column=name, ddl=ddl)
        refused = sink.refused.reasons.get((table.keyspace, table.name))
        return set(present) | (set(add) - set(refused)) if refused else None
    warn_unapplied(sink, table, add, drop)
    return set(present)


async def _drop_stale_views(conn: asyncpg.Connection, writer: TableWriter) -> None:
    """The as-of function's result columns follow the table's: CREATE OR REPLACE cannot change a
    function's result type, so a function (and the view on it) with other columns is dropped here,
    in the transaction that makes them again."""
    ks, name = writer.table.keyspace, writer.table.name
    function = _qualified(ks, name + "_as_of")
    names = await conn.fetchval(
        "SELECT proargnames FROM pg_proc WHERE oid = to_regprocedure($1)", function + "(timestamptz)"
    )
    want = ["at"] + [c.name for c in writer.key_columns + writer.data_columns]
    if names is not None and list(names) != want:
        await conn.execute(f"DROP VIEW IF EXISTS {_qualified(ks, name + '_live')}")
        await conn.execute(f"DROP FUNCTION {function}(timestamptz)")


async def mark_gone(sink: PostgresSink, schema: Schema) -> None:
    """Registry rows of tables no longer captured: ``dropped`` (gone from Cassandra, or kept only
    for late mutations) or ``cdc_off``. Their warehouse data stays; each is logged once."""
    conn = sink.conn
    assert conn is not None
    live = {t.id for t in schema.cdc_tables() if t.id not in schema.retired}
    not_cdc = {t.id for t in schema.tables.values() if not t.cdc and t.id not in schema.retired}
    rows = await conn.fetch(
        "SELECT keyspace, \"table\", table_id, status FROM cdcfast.tables WHERE status IN ('live', 'cdc_off')"
    )
    for keyspace, name, table_id, status in rows:
        if table_id in live:
            if status != "live":
                await _set_status(conn, keyspace, name, "live")
            continue
        new = "cdc_off" if table_id in not_cdc else "dropped"
        if new == status:
            continue
        await _set_status(conn, keyspace, name, new)
        sink.warn_once((keyspace, name, str(table_id), new), gone_warning(sink.name, keyspace, name, new))


def gone_warning(sink: str, keyspace: str, name: str, status: str) -> str:
    why = "dropped in Cassandra" if status == "dropped" else "no longer has cdc = true"
    return (
        f"sink {sink}: table {keyspace}.{name} {why}: its warehouse tables are kept as they are "
        "(nothing is deleted; drop them yourself once no longer needed)"
    )


async def _set_status(conn: asyncpg.Connection, keyspace: str, name: str, status: str) -> None:
    await conn.execute(
        'UPDATE cdcfast.tables SET status = $3, updated_at = now() WHERE keyspace = $1 AND "table" = $2',
        keyspace,
        name,
        status,
    )
