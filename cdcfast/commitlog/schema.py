"""Table id -> keyspace, table and columns: the one schema representation cdcfast decodes with.

Two sources give the same :class:`Schema`:

* a corpus-style ``schema/NNN.json`` file (``SELECT JSON`` rows of ``system_schema``), or a folder
  of them (the highest number wins);
* a live cluster, ``cassandra://host:port``: the same ``system_schema`` rows read through
  cassandra-driver.

Dropped columns are kept with their drop time: cells written at or before it are ignored, as
Cassandra ignores them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType, parse_cql_type
from cdcfast.errors import SchemaError

SYSTEM_KEYSPACES = frozenset(
    {
        "system",
        "system_schema",
        "system_auth",
        "system_distributed",
        "system_traces",
        "system_views",
        "system_virtual_schema",
    }
)
SCHEMA_TABLES = ("keyspaces", "tables", "columns", "types", "dropped_columns")


@dataclass
class ColumnDef:
    name: str
    kind: str  # partition_key | clustering | regular | static
    position: int
    type: CqlType
    type_text: str  # Cassandra's spelling, as the reference decoding prints it
    reversed: bool = False
    dropped_at_us: int | None = None  # cells with a timestamp <= this are ignored


@dataclass
class TableDef:
    id: uuid.UUID
    keyspace: str
    name: str
    cdc: bool
    partition_key: list[ColumnDef]
    clustering: list[ColumnDef]
    columns: dict[str, ColumnDef]  # regular and static columns in use
    dropped: dict[str, ColumnDef] = field(default_factory=dict)  # dropped, not re-added
    durable_writes: bool = True  # its keyspace's durable_writes: False, its writes skip the commit log

    @property
    def qualified_name(self) -> str:
        return f"{self.keyspace}.{self.name}"

    def data_columns(self) -> list[ColumnDef]:
        """Regular and static columns, then dropped ones: the decoder's column numbering."""
        return list(self.columns.values()) + list(self.dropped.values())


@dataclass
class Schema:
    tables: dict[uuid.UUID, TableDef]
    durable_writes: dict[str, bool] = field(default_factory=dict)
    source: str = ""
    # Tables dropped in Cassandra kept from an earlier read of the schema, so that their mutations
    # written before the drop still decode (cdcfast.sinks.migrate.retain_dropped); never from a file.
    retired: set[uuid.UUID] = field(default_factory=set)

    def by_name(self, keyspace: str, table: str) -> TableDef:
        for t in self.tables.values():
            if t.keyspace == keyspace and t.name == table:
                return t
        raise SchemaError(f"{self.source}: no table {keyspace}.{table}")

    def cdc_tables(self) -> list[TableDef]:
        return [t for t in self.tables.values() if t.cdc]

    @functools.cached_property
    def ids_by_name(self) -> dict[tuple[str, str], str]:
        """(keyspace, table) -> table id, built once: a schema is never changed in place (a schema
        read again, or with dropped tables kept, is a new object)."""
        return {(t.keyspace, t.name): str(t.id) for t in self.tables.values()}


_TIMESTAMP = re.compile(
    r"([+-]?\d+)-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?\s*(Z|[+-]\d{2}:?\d{2})?"
)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar, for any year (datetime stops at
    9999; Cassandra's timestamps do not)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_dropped_time(value: Any) -> int:
    """``dropped_time`` as Cassandra stores it (milliseconds) -> microseconds, as it compares it."""
    if isinstance(value, (int, float)):
        return int(value) * 1000
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return int(round(when.timestamp() * 1000)) * 1000
    match = _TIMESTAMP.fullmatch(str(value).strip())
    if not match:
        raise SchemaError(f"cannot read dropped_time {value!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    seconds = _days_from_civil(int(year), int(month), int(day)) * 86400 + int(hour) * 3600 + int(minute) * 60
    seconds += int(second or 0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    millis = seconds * 1000 + int(((fraction or "") + "000")[:3])
    return millis * 1000


def _udt_definitions(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, tuple]]:
    per_keyspace: dict[str, dict[str, tuple]] = {}
    for row in rows:
        per_keyspace.setdefault(row["keyspace_name"], {})[row["type_name"]] = (
            tuple(row["field_names"]),
            tuple(row["field_types"]),
        )
    return per_keyspace


def _column(
    row: Mapping[str, Any], kind: str, udts: Mapping[str, tuple], where: str, dropped_at: int | None = None
) -> ColumnDef:
    try:
        ctype = parse_cql_type(row["type"], udts)
    except SchemaError as exc:
        raise SchemaError(f"{where}, column {row['column_name']}: {exc}") from exc
    position = row.get("position")
    return ColumnDef(
        name=row["column_name"],
        kind=kind,
        position=int(position) if position is not None else -1,
        type=ctype,
        type_text=ctype.cql(),
        reversed=row.get("clustering_order") == "desc",
        dropped_at_us=dropped_at,
    )


def schema_from_rows(tables: Mapping[str, list[Mapping[str, Any]]], source: str = "") -> Schema:
    """Build a :class:`Schema` from ``system_schema`` rows keyed by table name."""
    udts = _udt_definitions(tables.get("types", []))
    durable = {k["keyspace_name"]: bool(k.get("durable_writes", True)) for k in tables.get("keyspaces", [])}
    columns_by_table: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in tables.get("columns", []):
        columns_by_table.setdefault((c["keyspace_name"], c["table_name"]), []).append(c)
    dropped_by_table: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for d in tables.get("dropped_columns", []):
        dropped_by_table.setdefault((d["keyspace_name"], d["table_name"]), []).append(d)

    result: dict[uuid.UUID, TableDef] = {}
    for t in tables.get("tables", []):
        ks, name = t["keyspace_name"], t["table_name"]
        where = f"{source}: {ks}.{name}"
        ks_udts = udts.get(ks, {})

        dropped_rows = dropped_by_table.get((ks, name), [])
        dropped_at = {d["column_name"]: parse_dropped_time(d["dropped_time"]) for d in dropped_rows}
        pk, ck, cols = [], [], {}
        for row in columns_by_table.get((ks, name), []):
            kind = row["kind"]
            if kind == "partition_key":
                pk.append(_column(row, kind, ks_udts, where))
            elif kind == "clustering":
                ck.append(_column(row, kind, ks_udts, where))
            elif kind in ("regular", "static"):
                cols[row["column_name"]] = _column(row, kind, ks_udts, where, dropped_at.get(row["column_name"]))
            else:
                raise SchemaError(f"{where}: column {row['column_name']} has unknown kind {kind!r}")
        pk.sort(key=lambda c: c.position)
        ck.sort(key=lambda c: c.position)
        dropped = {}
        for d in dropped_rows:
            if d["column_name"] not in cols:
                dropped[d["column_name"]] = _column(
                    d, d.get("kind", "regular"), ks_udts, where, dropped_at[d["column_name"]]
                )
        table_id = uuid.UUID(str(t["id"]))
        result[table_id] = TableDef(
            id=table_id,
            keyspace=ks,
            name=name,
            cdc=bool(t.get("cdc")),
            partition_key=pk,
            clustering=ck,
            columns=dict(sorted(cols.items())),
            dropped=dropped,
            durable_writes=durable.get(ks, True),
        )
    return Schema(tables=result, durable_writes=durable, source=source)


def non_durable_cdc_tables(schema: Schema) -> list[TableDef]:
    """CDC tables whose keyspace has ``durable_writes = false``, by name: Cassandra never writes their
    changes to the commit log, so no CDC segment ever holds them."""
    return sorted((t for t in schema.cdc_tables() if not t.durable_writes), key=lambda t: (t.keyspace, t.name))


def durable_writes_warnings(schema: Schema) -> list[tuple[TableDef, str]]:
    """A warning per :func:`non_durable_cdc_tables` table, for the log at start-up."""
    return [
        (
            t,
            f"CDC table {t.keyspace}.{t.name} is in keyspace {t.keyspace} WITH durable_writes = false: its writes "
            "never reach the commit log, so cdcfast cannot see or replicate them "
            f"(ALTER KEYSPACE {t.keyspace} WITH durable_writes = true to capture them)",
        )
        for t in non_durable_cdc_tables(schema)
    ]


def load_schema_file(path: Path) -> Schema:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path}: cannot read schema JSON: {exc}") from exc
    if not isinstance(document, dict) or "tables" not in document or "columns" not in document:
        raise SchemaError(f"{path}: not a schema file (expected system_schema rows under 'tables', 'columns', ...)")
    return schema_from_rows(document, source=str(path))


def schema_files(folder: Path) -> list[Path]:
    """The ``NNN.json`` files of a schema folder, oldest first."""
    return sorted((p for p in folder.glob("*.json") if p.stem.isdigit()), key=lambda p: int(p.stem))


def load_schema_cluster(uri: str) -> Schema:
    """Read ``system_schema`` of a live cluster (``cassandra://host:port``) through cassandra-driver."""
    from cassandra.cluster import Cluster  # imported here: only the live source needs the driver

    match = re.fullmatch(r"cassandra://([^:/]+)(?::(\d+))?/?", uri)
    if not match:
        raise SchemaError(f"{uri}: expected cassandra://host:port")
    host, port = match.group(1), int(match.group(2) or 9042)
    cluster = Cluster([host], port=port, connect_timeout=10)
    try:
        session = cluster.connect()
        rows = {
            name: [json.loads(r[0]) for r in session.execute(f"SELECT JSON * FROM system_schema.{name}")]
            for name in SCHEMA_TABLES
        }
    except Exception as exc:  # the driver raises many types; all mean "cannot read the schema"
        raise SchemaError(f"{uri}: cannot read system_schema: {exc}") from exc
    finally:
        cluster.shutdown()
    return schema_from_rows(rows, source=uri)


def load_schema(spec: str | Path) -> Schema:
    """A schema file, a schema folder (highest ``NNN.json``) or ``cassandra://host:port``."""
    text = str(spec)
    if text.startswith("cassandra://"):
        return load_schema_cluster(text)
    path = Path(text)
    if path.is_dir():
        files = schema_files(path)
        if not files:
            raise SchemaError(f"{path}: no NNN.json schema files in this folder")
        return load_schema_file(files[-1])
    if path.is_file():
        return load_schema_file(path)
    raise SchemaError(f"{path}: no such schema file or folder")
