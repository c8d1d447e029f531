"""Following Cassandra schema changes in the warehouses (docs/schema-evolution.md).

A sink prepares a table at start-up and whenever the writer hands it a table definition that
differs from the one its cached writer was built for. Preparing compares the definition with what
the warehouse really has, and with the sink's registry (``cdcfast.tables``: which Cassandra table
id a warehouse table belongs to), then:

* a column added in Cassandra: ``ALTER TABLE ... ADD COLUMN`` (state table; ClickHouse: the rows
  table, with the value's expiry column), and the as-of function / views re-created;
* a column dropped in Cassandra: kept (``dropped_columns: keep``, the default: the warehouse column
  stays, gets no new values and leaves the views) or removed (``remove``: ``DROP COLUMN``);
* a table re-created under the same name (a new table id): the old warehouse tables are renamed
  aside (:func:`aside_name`) and fresh ones created;
* a table dropped in Cassandra: nothing is destroyed; the registry marks it ``dropped``.

With ``auto_migrate: false`` no DDL touches an existing table: each change is logged once with the
statement an operator should run, and the state table is written without the missing columns (the
change log keeps every value).

This module holds what both warehouses share; the SQL of each is in :mod:`.migrate_postgres` and
:mod:`.migrate_clickhouse`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cdcfast.commitlog.schema import ColumnDef, Schema, TableDef
from cdcfast.events import ChangeEvent
from cdcfast.log import get_logger
from cdcfast.sinks.poison import DeadLetter

ASIDE = re.compile(r"^(?P<name>.+)__dropped_(?P<id>[0-9a-f]{8})$")


def aside_name(table_name: str, table_id: uuid.UUID) -> str:
    """The name an old table's warehouse tables get when a new table takes its name."""
    return f"{table_name}__dropped_{table_id.hex[:8]}"


def original_name(name: str) -> str | None:
    """The Cassandra table name of an :func:`aside_name`, else None."""
    match = ASIDE.match(name)
    return match.group("name") if match else None


@dataclass
class ColumnChanges:
    """What a warehouse table lacks, or has in excess, against a Cassandra table definition."""

    added: list[ColumnDef] = field(default_factory=list)  # in Cassandra, not in the warehouse
    dropped: list[str] = field(default_factory=list)  # dropped in Cassandra, still in the warehouse

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped)


def column_changes(table: TableDef, present: Iterable[str]) -> ColumnChanges:
    """Compare ``table`` with the warehouse state table's column names ``present``. Only Cassandra's
    own record of dropped columns makes a column "dropped": other warehouse columns (cdcfast's
    ``_state`` etc., or an operator's) are never touched."""
    have = set(present)
    return ColumnChanges(
        added=[c for c in table.columns.values() if c.name not in have],
        dropped=[name for name in table.dropped if name in have and name not in table.columns],
    )


def newly_dropped(table: TableDef, registered_columns: Iterable[str] | None) -> list[str]:
    """Columns dropped in Cassandra since the definition last prepared (the registry's ``columns``):
    the warehouse's rows kept alive only by their values are judged again once (see
    :func:`cdcfast.sinks.merge.reevaluate`). None (no registry row): nothing to judge again."""
    if registered_columns is None:
        return []
    had = set(registered_columns)
    return [name for name in table.dropped if name in had and name not in table.columns]


REEVALUATE_CHUNK = 2000  # stored rows judged again per round trip after a column drop


def shown_table(table: TableDef, stored: Iterable[str] | None) -> TableDef:
    """``table`` restricted to the data columns its warehouse state table has (``stored``; None: all):
    what is written there while an operator has not run the DDL (auto_migrate off)."""
    if stored is None:
        return table
    have = set(stored)
    return replace(table, columns={n: c for n, c in table.columns.items() if n in have})


REFUSED_RETRY_SECONDS = 60.0  # a refused column is tried again this long after (the operator may have fixed it)


def short_error(exc: BaseException) -> str:
    """An error's first lines, without the server's stack trace (ClickHouse sends one)."""
    return f"{type(exc).__name__}: {str(exc).split('Stack trace:', 1)[0].strip()}"


class RefusedColumns:
    """Columns Cassandra added that a warehouse refused to add (a type it lacks, a refused ALTER),
    per table. The table is written without them, and each change carrying one of their cells goes
    to the dead-letter queue with the refusal as reason, until the column is added (tried again at
    every start, schema change, and :data:`REFUSED_RETRY_SECONDS` after a refusal); ``cdcfast dlq
    replay`` applies those changes then. Everything else of the table keeps flowing."""

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self.reasons: dict[tuple[str, str], dict[str, str]] = {}
        self.since: dict[tuple[str, str], float] = {}

    def refuse(self, table: TableDef, column: ColumnDef, ddl: str, exc: BaseException) -> None:
        reason = (
            f"sink {self.sink}: column {column.name} ({column.type.cql()}) added to {table.keyspace}.{table.name} "
            f"in Cassandra cannot be added to the warehouse: {ddl} was refused: {short_error(exc)}; "
            "changes with its values wait in the dead-letter queue until it is added (then: cdcfast dlq replay)"
        )
        key = (table.keyspace, table.name)
        self.reasons.setdefault(key, {})[column.name] = reason
        self.since[key] = time.monotonic()
        get_logger("migrate", sink=self.sink).error(
            "column cannot be added", keyspace=table.keyspace, table=table.name, column=column.name, reason=reason
        )

    def forget(self, key: tuple[str, str]) -> None:
        """Before the table is prepared again: its columns are tried again."""
        self.reasons.pop(key, None)
        self.since.pop(key, None)

    def due(self, key: tuple[str, str]) -> bool:
        """Time to try the table's refused columns again."""
        return key in self.since and time.monotonic() - self.since[key] >= REFUSED_RETRY_SECONDS

    def set_aside(self, groups: dict[tuple[str, str], list[ChangeEvent]]) -> list[DeadLetter]:
        """Take the changes carrying a refused column's cell out of ``groups`` (per table, in place);
        their dead letters."""
        dead: list[DeadLetter] = []
        for key in [k for k in groups if k in self.reasons]:
            refused, kept = self.reasons[key], []
            for event in groups[key]:
                column = next((c.column for c in event.cells if c.column in refused), None)
                if column is None:
                    kept.append(event)
                else:
                    dead.append(DeadLetter(event, refused[column]))
            if kept:
                groups[key] = kept
            else:
                del groups[key]
        return dead


def retain_dropped(previous: Schema | None, current: Schema) -> Schema:
    """``current`` plus the tables of ``previous`` it no longer has (dropped in Cassandra), so that
    mutations written before the drop, read late, still decode with their last definition.

    A dropped table whose name a new table took (re-created) is kept under :func:`aside_name`: its
    late mutations go to the warehouse tables renamed aside, never into the new table's."""
    if previous is None:
        return current
    names = {(t.keyspace, t.name) for t in current.tables.values()}
    tables = dict(current.tables)
    retired = set(current.retired)
    for table_id, table in previous.tables.items():
        if table_id in tables:
            continue
        if (table.keyspace, table.name) in names and original_name(table.name) is None:
            table = replace(table, name=aside_name(table.name, table_id))
        tables[table_id] = table
        retired.add(table_id)
    return replace(current, tables=tables, retired=retired)


def first_status(table: TableDef, retired: set[uuid.UUID]) -> str:
    """The registry status of a table registered for the first time: a table the sink first meets
    through its late mutations may already be dropped, or replaced by a new table of its name."""
    if original_name(table.name) is not None:
        return "replaced"
    return "dropped" if table.id in retired else "live"


def registry_columns(table: TableDef) -> list[str]:
    return [c.name for c in table.partition_key + table.clustering + list(table.columns.values())]


def warn_unapplied(sink: Any, table: TableDef, added: dict[str, str], dropped: dict[str, str]) -> None:
    """With ``auto_migrate`` off: one warning per column change the warehouse did not get, naming
    the DDL an operator should run (``added``/``dropped``: column -> DDL)."""
    changes = [(name, ddl, "add", add_column_warning) for name, ddl in added.items()]
    if sink.dropped_columns == "remove":
        changes += [(name, ddl, "drop", drop_column_warning) for name, ddl in dropped.items()]
    for name, ddl, kind, warning in changes:
        sink.warn_once(
            (table.keyspace, table.name, name, kind),
            warning(sink.name, table, name, ddl),
            keyspace=table.keyspace,
            table=table.name,
            column=name,
            ddl=ddl,
        )


def add_column_warning(sink: str, table: TableDef, column: str, ddl: str) -> str:
    return (
        f"sink {sink}: column {column} added to {table.keyspace}.{table.name} in Cassandra, auto_migrate is off: "
        f"its values are kept in the change log only until an operator runs: {ddl}"
    )


def drop_column_warning(sink: str, table: TableDef, column: str, ddl: str) -> str:
    return (
        f"sink {sink}: column {column} dropped from {table.keyspace}.{table.name} in Cassandra, auto_migrate is off "
        f"and dropped_columns is remove: the warehouse column stays until an operator runs: {ddl}"
    )


def reload_schema(spec: str, previous: Schema | None) -> Schema:
    """The schema source read again, keeping every table ``previous`` had and the source dropped.

    For a schema folder, the tables of every earlier ``NNN.json`` are kept too: a writer lagging
    behind its parsers may never have read the file in which a table existed (created and dropped
    between two of its reads) while a parser decoded that table's mutations with it."""
    from cdcfast.commitlog import load_schema
    from cdcfast.commitlog.schema import load_schema_file, schema_files

    path = Path(str(spec))
    if not str(spec).startswith("cassandra://") and path.is_dir():
        history: Schema | None = previous
        for file in schema_files(path):
            history = retain_dropped(history, load_schema_file(file))
        assert history is not None
        return history
    return retain_dropped(previous, load_schema(spec))
