"""Schema changes applied to ClickHouse (see :mod:`cdcfast.sinks.migrate`).

ClickHouse has no transactions nor advisory locks: every step checks ``system.columns`` /
``system.tables`` first, and a step another writer did meanwhile (its ALTER or RENAME failing here)
is accepted once the check shows it done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clickhouse_driver.errors import ServerException

from cdcfast.commitlog.schema import Schema, TableDef
from cdcfast.log import get_logger
from cdcfast.sinks.clickhouse_sql import ident, key_table, literal, qualified
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

if TYPE_CHECKING:
    from clickhouse_driver import Client

    from cdcfast.sinks.clickhouse import ClickHouseSink, TableWriter

REGISTRY_DDL = """CREATE TABLE IF NOT EXISTS cdcfast.tables (
  keyspace String, table String, table_id UUID, columns Array(String), status String, updated_at DateTime,
  _version UInt64
) ENGINE = ReplacingMergeTree(_version) ORDER BY (keyspace, table)"""
MIGRATION_WRITER = "(migration)"  # the writer name of row versions a migration stores
TABLE_SUFFIXES = ("_changes", "__rows", "__partitions", "__truncations")


def columns_of(client: Client, database: str, table: str) -> list[str]:
    rows = client.execute(
        "SELECT name FROM system.columns WHERE database = %(d)s AND table = %(t)s", {"d": database, "t": table}
    )
    return [r[0] for r in rows]


def exists(client: Client, database: str, table: str) -> bool:
    return bool(
        client.execute(
            "SELECT count() FROM system.tables WHERE database = %(d)s AND name = %(t)s", {"d": database, "t": table}
        )[0][0]
    )


def _tolerant(client: Client, ddl: str, done: Callable[[], bool]) -> None:
    """Run ``ddl``; if it fails because another writer did the same meanwhile, that is fine."""
    try:
        client.execute(ddl)
    except ServerException:
        if not done():
            raise


def registered(client: Client, keyspace: str, name: str) -> tuple[Any, str] | None:
    rows = client.execute(
        "SELECT table_id, status FROM cdcfast.tables FINAL WHERE keyspace = %(k)s AND table = %(t)s",
        {"k": keyspace, "t": name},
    )
    return (rows[0][0], rows[0][1]) if rows else None


def registered_columns(client: Client, keyspace: str, name: str, table_id: Any) -> list[str] | None:
    """The Cassandra columns the registry last recorded for ``table_id`` under ``keyspace.name``."""
    rows = client.execute(
        "SELECT table_id, columns FROM cdcfast.tables FINAL WHERE keyspace = %(k)s AND table = %(t)s",
        {"k": keyspace, "t": name},
    )
    return list(rows[0][1]) if rows and rows[0][0] == table_id else None


def hide_rows_of_dropped_columns(sink: ClickHouseSink, writer: TableWriter, dropped: list[str], log: Any) -> None:
    """As :func:`cdcfast.sinks.migrate_postgres.hide_rows_of_dropped_columns`: rows only ``dropped``'s
    cells kept alive are superseded by an invisible version (``_visible = 0``, their state kept), in
    chunks of :data:`REEVALUATE_CHUNK` keys. Idempotent: a crash before the registry records the
    drop judges them again at the next start."""
    from cdcfast.sinks import clickhouse_versions as versions
    from cdcfast.sinks.encode import Converted
    from cdcfast.sinks.merge import StoredPartition, reevaluate, split_row_key

    client = sink.client
    assert client is not None
    table = writer.table
    nothing = []
    for c in writer.data_columns:
        if c.kind != "regular":
            continue
        target = writer.targets[c.name]
        array = target.nullable_sql == target.sql and target.sql.startswith("Array")
        nothing.append(f"{'empty' if array else 'isNull'}({ident(c.name)})")
    all_null = " AND ".join(nothing) or "1"
    whole = any(c.kind == "static" for c in table.columns.values())  # the static-only row may appear
    generation = sink._generation(writer)
    empty = sink._empty_row(writer)
    hidden, last = 0, b""
    winning = versions.winners(writer.rows, generation)  # each row's winning version (several writers')
    while True:
        candidates = client.execute(
            f"SELECT _pk, _key, _state, _version, _basis FROM ({winning}) WHERE _visible = 1 AND {all_null} "
            f"AND _key > unhex(%(last)s) ORDER BY _key LIMIT {REEVALUATE_CHUNK}",
            {"last": last.hex()},
            settings={"strings_as_bytes": True},
        )
        if not candidates:
            break
        last = candidates[-1][1]
        pks = list(dict.fromkeys(r[0] for r in candidates))
        partitions = key_table("_partitions", pks)
        states: dict[bytes, list[tuple[str, bytes]]] = {}
        for pk_raw, source, blob in client.execute(
            f"SELECT _pk, _source, _state FROM {writer.partitions} FINAL WHERE _pk IN _partitions "
            f"AND _version > {generation}",
            settings={"strings_as_bytes": True},
            external_tables=[partitions],
        ):
            states.setdefault(pk_raw, []).append((source.decode(), blob))
        stored = {pk_raw: StoredPartition(versions.joined_partition(states.get(pk_raw, []))) for pk_raw in pks}
        rows = candidates
        if whole:
            rows = client.execute(
                f"SELECT _pk, _key, _state, _version, _basis FROM ({winning}) WHERE _pk IN _partitions "
                "AND _visible = 1",
                settings={"strings_as_bytes": True},
                external_tables=[partitions],
            )
        bases = {}
        for pk_raw, key, blob, _, basis in rows:
            stored[pk_raw].rows[key] = (blob, True)
            bases[pk_raw] = basis
        plans = reevaluate(table, {split_row_key(next(iter(s.rows)))[0]: s for s in stored.values() if s.rows})
        if not plans:
            continue
        version = max(time.time_ns(), generation + 1, max(r[3] for r in rows) + 1)  # above the winners
        converted = Converted(list(writer.codec.columns))
        out: list[tuple] = []
        for p in plans:
            mine = (version, MIGRATION_WRITER, bases[p.pk_bytes])
            out += [(*empty, key, p.pk_bytes, 0, 0, blob, *mine) for key, blob in p.tombstones]
            out += [(*empty, key, p.pk_bytes, 0, 0, b"", *mine) for key in p.gone]
            out += [
                (*writer.state_values(row, converted), key, p.pk_bytes, 1, row.row_expires, blob, *mine)
                for key, row, blob in p.visible
            ]
        client.execute(
            f"INSERT INTO {writer.rows} ({', '.join(ident(c) for c in writer.row_columns)}) VALUES",
            list(map(list, zip(*out))),
            columnar=True,
        )
        hidden += sum(len(p.tombstones) for p in plans)
    log.info(
        "rows kept alive only by dropped columns hidden",
        keyspace=table.keyspace,
        table=table.name,
        columns=dropped,
        rows=hidden,
    )


def register(client: Client, keyspace: str, name: str, table_id: Any, columns: list[str], status: str) -> None:
    client.execute(
        "INSERT INTO cdcfast.tables (keyspace, table, table_id, columns, status, updated_at, _version) VALUES",
        [(keyspace, name, table_id, columns, status, int(time.time()), time.time_ns())],
    )


def move_aside(client: Client, keyspace: str, name: str, aside: str) -> None:
    """Rename ``keyspace.name``'s tables to ``aside``; its view goes (made again for ``aside`` if
    late mutations of the old table arrive)."""
    client.execute(f"DROP TABLE IF EXISTS {qualified(keyspace, name)}")  # the view
    for suffix in TABLE_SUFFIXES:
        if exists(client, keyspace, name + suffix):
            _tolerant(
                client,
                f"RENAME TABLE {qualified(keyspace, name + suffix)} TO {qualified(keyspace, aside + suffix)}",
                lambda suffix=suffix: exists(client, keyspace, aside + suffix),  # type: ignore[misc]
            )
    old = registered(client, keyspace, name)
    if old is not None:
        register(client, keyspace, aside, old[0], [], "replaced")


def prepare_table(sink: ClickHouseSink, table: TableDef) -> TableWriter:
    """Create or migrate the ClickHouse tables of ``table``; a writer for what they now hold."""
    from cdcfast.sinks.clickhouse import TableWriter

    client = sink.client
    assert client is not None and sink.features is not None
    log = get_logger("migrate", sink=sink.name)
    ks = table.keyspace
    original = original_name(table.name)
    if original is not None:
        before = registered(client, ks, original)
        if before is not None and before[0] == table.id:
            move_aside(client, ks, original, table.name)
    mine = registered(client, ks, table.name)
    there = exists(client, ks, table.name + "__rows")
    if there and mine is not None and mine[0] != table.id:
        aside = aside_name(table.name, mine[0])
        move_aside(client, ks, table.name, aside)
        log.warning(
            "table re-created in Cassandra under the same name: the old warehouse tables renamed aside, "
            "fresh ones created",
            keyspace=ks,
            table=table.name,
            old_table_id=str(mine[0]),
            table_id=str(table.id),
            renamed_to=aside,
        )
        there, mine = False, None
    if there:
        _writers_versions(client, ks, table.name, log)
        _sparse_expiries(client, ks, table.name, log)
    had = registered_columns(client, ks, table.name, table.id) if there else None
    stored = _migrate_columns(sink, table, log) if there else None
    writer = TableWriter(table, sink.mappings, sink.features, stored)
    if there:
        want = [c.name for c in writer.key_columns + writer.data_columns]
        view = columns_of(client, ks, table.name)
        if view and view != want:  # the view's column list follows the table's
            client.execute(f"DROP TABLE IF EXISTS {writer.view}")
    for statement in writer.ddl():
        client.execute(statement)
    dropped = newly_dropped(table, had)
    if dropped:  # before the registry records the new columns: a crash in between judges again
        hide_rows_of_dropped_columns(sink, writer, dropped, log)
    status = mine[1] if mine is not None and mine[0] == table.id else first_status(table, sink.retired)
    register(client, ks, table.name, table.id, registry_columns(table), status)
    return writer


def _writers_versions(client: Client, keyspace: str, name: str, log: Any) -> None:
    """State tables made before each writer kept its own versions (cdcfast.sinks.clickhouse_versions)
    get ``_source`` (and rows ``_basis``) at the end of their sorting key; what they hold stays, as
    the versions of a writer named ``''``."""
    for suffix, extra in (("__rows", ", ADD COLUMN _basis UInt64"), ("__partitions", "")):
        relation = name + suffix
        if "_source" in columns_of(client, keyspace, relation):
            continue
        key = client.execute(
            "SELECT sorting_key FROM system.tables WHERE database = %(d)s AND name = %(t)s",
            {"d": keyspace, "t": relation},
        )[0][0]
        ddl = (
            f"ALTER TABLE {qualified(keyspace, relation)} ADD COLUMN _source String{extra}, "
            f"MODIFY ORDER BY ({key}, _source)"
        )
        _tolerant(client, ddl, lambda: "_source" in columns_of(client, keyspace, relation))  # noqa: B023
        log.info("state table keeps each writer's versions from now on", keyspace=keyspace, table=relation, ddl=ddl)


def _sparse_expiries(client: Client, keyspace: str, name: str, log: Any) -> None:
    """Rows tables made with one expiry column per data column (``_exp_<column>``) get the two
    arrays rows keep now (the expiring values' columns and expiries); for the rows they hold, the
    arrays are computed from the old columns on read (a DEFAULT), and merges store them. The old
    columns stay: those rows' arrays are computed from them."""
    relation = name + "__rows"
    present = columns_of(client, keyspace, relation)
    if "_exp_names" in present:
        return
    old = [c for c in present if c.startswith("_exp_")]
    names = ", ".join(literal(c.removeprefix("_exp_")) for c in old)
    expiries = ", ".join(ident(c) for c in old)
    if old:
        defaults = (
            f" DEFAULT arrayFilter((n, e) -> e != 0, [{names}], [{expiries}])",
            f" DEFAULT arrayFilter(e -> e != 0, [{expiries}])",
        )
    else:
        defaults = ("", "")
    ddl = (
        f"ALTER TABLE {qualified(keyspace, relation)} ADD COLUMN _exp_names Array(String){defaults[0]}, "
        f"ADD COLUMN _exp_at Array(UInt32){defaults[1]}"
    )
    _tolerant(client, ddl, lambda: "_exp_names" in columns_of(client, keyspace, relation))
    log.info("rows keep their expiring values' expiries in two arrays from now on", keyspace=keyspace, table=relation)


def _migrate_columns(sink: ClickHouseSink, table: TableDef, log: Any) -> set[str] | None:
    from cdcfast.sinks.clickhouse import TableWriter

    client = sink.client
    assert client is not None and sink.features is not None
    ks, rows_table = table.keyspace, table.name + "__rows"
    present = columns_of(client, ks, rows_table)
    changes = column_changes(table, present)
    if not changes:
        return None
    full = TableWriter(table, sink.mappings, sink.features)
    relation = qualified(ks, rows_table)
    add = {c.name: f"ALTER TABLE {relation} ADD COLUMN {ident(c.name)} {full.sql_type(c)}" for c in changes.added}
    # A table made with an expiry column per value keeps them (see _sparse_expiries): the rows it
    # held then read their expiries from them.
    drop = {name: f"ALTER TABLE {relation} DROP COLUMN {ident(name)}" for name in changes.dropped}
    if sink.auto_migrate:
        for name, ddl in add.items():
            try:
                _tolerant(client, ddl, lambda name=name: name in columns_of(client, ks, rows_table))  # type: ignore[misc]
            except ServerException as exc:  # refused (e.g. a type this server lacks): the rest goes on
                if classify(exc) is ErrorClass.TRANSIENT:
                    raise
                sink.refused.refuse(table, table.columns[name], ddl, exc)
                continue
            log.info("column added", keyspace=ks, table=table.name, column=name, ddl=ddl)
        if sink.dropped_columns == "remove":
            for name, ddl in drop.items():
                _tolerant(client, ddl, lambda name=name: name not in columns_of(client, ks, rows_table))  # type: ignore[misc]
                log.info("dropped column removed", keyspace=ks, table=table.name, column=name, ddl=ddl)
        refused = sink.refused.reasons.get((ks, table.name))
        return set(present) | (set(add) - set(refused)) if refused else None
    warn_unapplied(sink, table, add, drop)
    return set(present)


def mark_gone(sink: ClickHouseSink, schema: Schema) -> None:
    """As :func:`cdcfast.sinks.migrate_postgres.mark_gone`: tables no longer captured are kept and marked."""
    from cdcfast.sinks.migrate_postgres import gone_warning

    client = sink.client
    assert client is not None
    live = {t.id for t in schema.cdc_tables() if t.id not in schema.retired}
    not_cdc = {t.id for t in schema.tables.values() if not t.cdc and t.id not in schema.retired}
    rows = client.execute(
        "SELECT keyspace, table, table_id, columns, status FROM cdcfast.tables FINAL "
        "WHERE status IN ('live', 'cdc_off')"
    )
    for keyspace, name, table_id, columns, status in rows:
        new = "live" if table_id in live else "cdc_off" if table_id in not_cdc else "dropped"
        if new == status:
            continue
        register(client, keyspace, name, table_id, columns, new)
        if new != "live":
            sink.warn_once((keyspace, name, str(table_id), new), gone_warning(sink.name, keyspace, name, new))
