"""One type mapping for every sink: CQL type -> column type and value converter, per target.

The mapping is data, in ``schema-mappings.yaml`` (:data:`PACKAGE_MAPPINGS`, the default; an identical
copy is ``config/schema-mappings.yaml``). :func:`load_mappings` reads and validates it into a
:class:`TypeMappings`, which answers, for a :class:`~cdcfast.commitlog.cqltypes.CqlType`:

* :meth:`TypeMappings.postgres` / :meth:`TypeMappings.timescaledb` (the same types), and
* :meth:`TypeMappings.clickhouse`, given the server's :class:`ClickHouseFeatures` (from its version:
  Debian's 18.16 has no DateTime64, Map, Int128/256, IPv6, Date32 or Bool, newer servers have them),

a :class:`TargetType`: the column's SQL type, ``to_target`` (the serialized Cassandra value -> the
Python value asyncpg's binary COPY resp. clickhouse-driver's native columnar insert takes for that
column), whether the mapping is lossless, and a note. Values a target cannot hold (a ``date`` before
year 1 for PostgreSQL, a 40-digit ``varint`` for ``Decimal(38, 0)``, U+0000 in PostgreSQL text, ...)
raise :class:`ValueMappingError`; :func:`convert_cell` adds the keyspace, table and column.

Every decision is explained in ``docs/type-mapping.md``. Conventions shared by all targets:

* ``EMPTY`` (Cassandra's zero-length value of a non-text type) and null become ``None`` (NULL).
* The JSON rendering (PostgreSQL ``jsonb``, ClickHouse ``String``) is lossless: integers beyond
  ±2^53 and decimals are strings with the exact digits, floats that JSON numbers cannot carry are
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, ``"-0.0"``, blobs are ``"0x..."`` hex, timestamps, dates
  and times are Cassandra's integers (milliseconds, days, nanoseconds), durations are objects
  ``{"months", "days", "nanoseconds"}``, maps with text keys are objects and other maps
  ``[[key, value], ...]``, tuples are arrays and UDTs objects.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
import yaml

from cdcfast.commitlog.cqltypes import SCALARS, CqlType
from cdcfast.errors import CdcfastError, ConfigError
from cdcfast.values import EMPTY, CounterContext, ValueDecodeError, decode
from cdcfast.values.codec import Buffer
from cdcfast.values.temporal import date_to_days, datetime_to_millis, days_to_date, millis_to_datetime

PACKAGE_MAPPINGS: Final = Path(__file__).with_name("schema-mappings.yaml")
TARGETS: Final = ("postgres", "timescaledb", "clickhouse")
POSTGRES_TARGETS: Final = frozenset({"postgres", "timescaledb"})
COMPOSITES: Final = frozenset({"list", "set", "map", "tuple", "udt", "vector"})
FAMILIES: Final = frozenset(SCALARS | COMPOSITES | {"custom"})

JSON_SAFE_INTEGER: Final = 2**53  # integers beyond this are JSON strings: a double cannot carry them

# ClickHouse: the (major, minor) from which each feature is used. Conservative: a type that was still
# experimental (behind an allow_experimental_* setting) in a version is not used there.
CLICKHOUSE_MINIMUM: Final = (18, 12)  # Decimal
CLICKHOUSE_FEATURES_SINCE: Final[dict[str, tuple[int, int]]] = {
    "nullable_in_array": (18, 12),  # Array(Nullable(T)), Array(Tuple(Nullable(T), ...)): probed on 18.16
    "low_cardinality": (19, 3),
    "ipv6": (19, 3),
    "datetime64": (20, 1),
    "big_integers": (21, 8),  # Int128, Int256, UInt128, UInt256
    "date32": (21, 9),
    "bool_type": (21, 12),
    "map_type": (22, 3),
    "extended_date_range": (22, 8),  # Date32 and DateTime64 from 1900 to 2299 (before: 1925 to 2283)
    # A table column Array(Tuple(...)) stays one column. 18.16 splits it into subcolumns `c.1`, `c.2`
    # that cannot be read back as `c` (seen here); the version it changed in is not probed: conservative.
    "array_of_tuples": (22, 3),
}
SHAPE_CONDITIONS: Final = {
    "postgres": frozenset({"scalar_elements", "nested"}),
    "clickhouse": frozenset({"scalar_elements", "nested", "nullable_fields", "map_key"}),
}
_PLACEHOLDERS: Final[dict[str, frozenset[str]]] = {
    "list": frozenset({"element"}),
    "set": frozenset({"element"}),
    "vector": frozenset({"element"}),
    "map": frozenset({"key", "value"}),
    "tuple": frozenset({"fields"}),
}
_RULE_KEYS: Final = frozenset({"sql", "convert", "lossless", "note", "requires"})


# -- errors -----------------------------------------------------------------------------------------


class ValueMappingError(CdcfastError):
    """A value the target column cannot hold (or bytes that are no value of the column's CQL type).

    ``str()`` reads ``ks.table, column c: <cql type> value for <target> <sql>: <reason>``; the parts
    are also attributes. :func:`convert_cell` fills in the keyspace, table and column.
    """

    def __init__(
        self,
        reason: str,
        *,
        cql_type: str = "",
        target: str = "",
        sql: str = "",
        keyspace: str | None = None,
        table: str | None = None,
        column: str | None = None,
    ) -> None:
        self.reason = reason
        self.cql_type = cql_type
        self.target = target
        self.sql = sql
        self.keyspace = keyspace
        self.table = table
        self.column = column
        where = f"{keyspace}.{table}, column {column}: " if column is not None else ""
        what = f"{cql_type} value for {target} {sql}: " if target else ""
        super().__init__(where + what + reason)

    def located(self, keyspace: str, table: str, column: str) -> ValueMappingError:
        """The same error, naming the keyspace, table and column."""
        return ValueMappingError(
            self.reason,
            cql_type=self.cql_type,
            target=self.target,
            sql=self.sql,
            keyspace=keyspace,
            table=table,
            column=column,
        )


class _Refused(Exception):
    """Raised inside converters; the outermost :class:`TargetType` turns it into a ValueMappingError."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BadRule(Exception):
    """A rule whose converter cannot work with its SQL type; becomes a ConfigError naming the key."""


# -- ClickHouse features ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClickHouseFeatures:
    """What a ClickHouse server has, from its version (see :data:`CLICKHOUSE_FEATURES_SINCE`)."""

    version: tuple[int, ...]
    nullable_in_array: bool = False
    low_cardinality: bool = False
    ipv6: bool = False
    datetime64: bool = False
    big_integers: bool = False
    date32: bool = False
    bool_type: bool = False
    map_type: bool = False
    extended_date_range: bool = False
    array_of_tuples: bool = False

    @classmethod
    def from_version(cls, text: str) -> ClickHouseFeatures:
        """From ``SELECT version()``: ``"18.16.1"``, ``"24.8"``, ``"22.8.1.1-lts"``.

        Raises :class:`~cdcfast.errors.ConfigError` for text that is no version and for servers older
        than 18.12 (no Decimal type).
        """
        match = re.fullmatch(r"\s*(\d+)\.(\d+)((?:\.\d+)*)(?:[-+ ].*)?\s*", text)
        if not match:
            raise ConfigError(f"ClickHouse version {text!r}: expected major.minor[.patch...], e.g. 18.16.1")
        version = (int(match.group(1)), int(match.group(2))) + tuple(
            int(part) for part in match.group(3).split(".")[1:]
        )
        if version[:2] < CLICKHOUSE_MINIMUM:
            raise ConfigError(
                f"ClickHouse {text.strip()} is older than {'.'.join(map(str, CLICKHOUSE_MINIMUM))}, "
                "the first version with the Decimal type cdcfast needs"
            )
        flags = {name: version[:2] >= since for name, since in CLICKHOUSE_FEATURES_SINCE.items()}
        return cls(version=version, **flags)

    def names(self) -> frozenset[str]:
        """The features this server has, by name (the words a mapping rule ``requires``)."""
        return frozenset(name for name in CLICKHOUSE_FEATURES_SINCE if getattr(self, name))


def clickhouse_nullable(sql: str) -> str | None:
    """``Nullable(sql)``, or ``None`` where ClickHouse cannot make the type nullable (Array, Map, Tuple)."""
    if sql.startswith("Nullable("):
        return sql
    if sql.startswith(("Array(", "Map(", "Tuple(", "Nested(")):
        return None
    if sql.startswith("LowCardinality(") and sql.endswith(")"):
        inner = sql[len("LowCardinality(") : -1]
        return sql if inner.startswith("Nullable(") else f"LowCardinality(Nullable({inner}))"
    return f"Nullable({sql})"


_MAP_KEY = re.compile(r"String|U?Int(8|16|32|64|128|256)|UUID|Date|Date32|DateTime|FixedString\(\d+\)")


# -- the mapped type --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TargetType:
    """How one CQL type is stored in one target.

    ``to_target(data)`` takes the serialized Cassandra value (a cell's bytes) and returns what the
    target's driver takes for a ``sql`` column; ``from_value(value)`` does the same from the decoded
    value (:func:`cdcfast.values.decode`'s shapes), for callers that assemble collections from
    element cells. Both give ``None`` for ``EMPTY`` and raise :class:`ValueMappingError`.

    ``nullable_sql`` is the column type that can also hold NULL: ``sql`` for PostgreSQL,
    ``Nullable(sql)`` for ClickHouse where it exists (not for Array, Map, Tuple: such columns hold
    ``[]``/``{}`` for a null).
    """

    sql: str
    to_target: Callable[[Buffer], Any] = field(repr=False)
    lossless: bool
    note: str
    from_value: Callable[[Any], Any] = field(repr=False)
    target: str
    cql_type: CqlType
    nullable_sql: str
    convert: Callable[[Any], Any] = field(repr=False)  # raises _Refused: for enclosing converters
    converter: str = ""  # the rule's converter (``convert:`` in the YAML): writers' compiled fast paths key on it


@dataclass(frozen=True)
class Rule:
    """One rule of the YAML: where it is (``clickhouse.varint[1]``) and what it says."""

    where: str
    sql: str
    convert: str
    lossless: bool
    note: str = ""
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Build:
    """What a converter factory knows: the target, the CQL type, the column type, the parameters."""

    target: str
    ctype: CqlType
    sql: str
    features: ClickHouseFeatures | None
    children: tuple[TargetType, ...] = ()

    @property
    def postgres(self) -> bool:
        return self.target in POSTGRES_TARGETS


ConverterFactory = Callable[[_Build], Callable[[Any], Any]]


@dataclass(frozen=True)
class Converter:
    kinds: frozenset[str]
    build: ConverterFactory
    doc: str


# -- value helpers ----------------------------------------------------------------------------------


def _short(number: int) -> str:
    text = str(number) if abs(number) < 10**60 else str(Decimal(number))
    return text if len(text) <= 24 else f"{text[:12]}...({len(text.lstrip('-'))} digits)"


def _about_millis(millis: int) -> str:
    when = millis_to_datetime(millis)
    if when is not None:
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"about year {1970 + millis / (365.2425 * 86_400_000):.0f}"


def _about_days(days: int) -> str:
    day = days_to_date(days)
    return day.isoformat() if day is not None else f"about year {1970 + days / 365.2425:.0f}"


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> int:
    return datetime_to_millis(dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.timezone.utc))


# asyncpg writes datetime.min / date.min / date.max as -infinity / infinity: those ends are refused.
PG_MILLIS: Final = (_utc(1, 1, 1) + 1, _utc(9999, 12, 31, 23, 59, 59, 999_000))
PG_DAYS: Final = (date_to_days(dt.date(1, 1, 2)), date_to_days(dt.date(9999, 12, 30)))
PG_NUMERIC_INTEGER_DIGITS: Final = 131_072
PG_NUMERIC_SCALE: Final = 16_383
CH_DAYS: Final = {
    True: (date_to_days(dt.date(1900, 1, 1)), date_to_days(dt.date(2299, 12, 31))),
    False: (date_to_days(dt.date(1925, 1, 1)), date_to_days(dt.date(2283, 11, 11))),
}
CH_MILLIS: Final = {
    True: (_utc(1900, 1, 1), _utc(2299, 12, 31, 23, 59, 59, 999_000)),
    False: (_utc(1925, 1, 1), _utc(2283, 11, 11, 23, 59, 59, 999_000)),
}


def _json_int(value: int) -> int | str:
    if -JSON_SAFE_INTEGER <= value <= JSON_SAFE_INTEGER:
        return value
    return str(Decimal(value))  # str(int) refuses more than 4300 digits


def _json_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0 and math.copysign(1.0, value) < 0:
        return "-0.0"
    return value


def _no_nul(text: str, what: str) -> str:
    position = text.find("\x00")
    if position >= 0:
        raise _Refused(f"U+0000 at character {position} of a string: PostgreSQL {what} cannot hold it")
    return text


_JSON_INTEGERS = frozenset({"tinyint", "smallint", "int", "bigint", "varint", "timestamp", "date", "time"})


def null_text_key(ctype: CqlType) -> ValueDecodeError:
    """A text-keyed map with a null key has no JSON object form; Cassandra never stores one, so
    only damaged bytes hold it."""
    return ValueDecodeError(ctype.cql(), None, "a null map key (Cassandra stores none): no JSON object holds it")


def json_value(ctype: CqlType, value: Any, postgres: bool = False) -> Any:
    """The JSON-ready form of a decoded value (see the module docstring); ``postgres`` refuses U+0000."""
    if value is None or value is EMPTY:
        return None
    kind = ctype.kind
    if kind in ("text", "ascii"):
        return _no_nul(value, "jsonb") if postgres else value
    if kind == "boolean":
        return value
    if kind in _JSON_INTEGERS:
        return _json_int(value)
    if kind in ("float", "double"):
        return _json_float(value)
    if kind == "decimal":
        return str(value)
    if kind in ("blob", "custom"):
        return "0x" + bytes(value).hex()
    if kind in ("uuid", "timeuuid", "inet"):
        return str(value)
    if kind == "duration":
        return {"months": value.months, "days": value.days, "nanoseconds": _json_int(value.nanoseconds)}
    if kind == "counter":
        return _json_int(value.total())
    if kind in ("list", "set", "vector"):
        return [json_value(ctype.params[0], item, postgres) for item in value]
    if kind == "map":
        key_type, value_type = ctype.params
        if key_type.kind in ("text", "ascii"):
            if any(k is None for k, _ in value):
                raise null_text_key(ctype)
            return {(_no_nul(k, "jsonb") if postgres else k): json_value(value_type, v, postgres) for k, v in value}
        return [[json_value(key_type, k, postgres), json_value(value_type, v, postgres)] for k, v in value]
    if kind == "tuple":
        return [json_value(p, item, postgres) for p, item in zip(ctype.params, value)]
    if kind == "udt":
        return {name: json_value(p, value.get(name), postgres) for name, p in zip(ctype.field_names, ctype.params)}
    if kind == "empty":
        return None
    raise _Refused(f"no JSON rendering for CQL type kind {kind!r}")


def to_json(ctype: CqlType, value: Any, postgres: bool = False) -> str:
    """The JSON text of a decoded value, as stored in ``jsonb`` / ``String`` columns."""
    return orjson.dumps(json_value(ctype, value, postgres)).decode()


# -- converters -------------------------------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


def _same(build: _Build) -> Callable[[Any], Any]:
    return _identity


def _text(build: _Build) -> Callable[[Any], Any]:
    if not build.postgres:
        return _identity
    return lambda value: _no_nul(value, "text")


def _boolean_uint8(build: _Build) -> Callable[[Any], Any]:
    return lambda value: 1 if value else 0


_PG_INTEGER_BITS = {"smallint": 16, "int2": 16, "integer": 32, "int": 32, "int4": 32, "bigint": 64, "int8": 64}


def _integer_bounds(build: _Build) -> tuple[int, int]:
    sql = build.sql.strip()
    if build.postgres:
        bits = _PG_INTEGER_BITS.get(sql.lower())
        if bits is None:
            raise _BadRule(f"sql {sql!r} is not a PostgreSQL integer type (smallint, integer, bigint)")
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    match = re.fullmatch(r"(U?)Int(8|16|32|64|128|256)", sql)
    if match:
        bits = int(match.group(2))
        return (0, 2**bits - 1) if match.group(1) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    match = re.fullmatch(r"Decimal\(\s*(\d+)\s*,\s*0\s*\)", sql)
    if match and 1 <= int(match.group(1)) <= 76:
        limit = 10 ** int(match.group(1)) - 1
        return -limit, limit
    raise _BadRule(f"sql {sql!r} is not a ClickHouse integer type (Int8 .. Int256, UInt8 .. UInt256, Decimal(P, 0))")


def _integer(build: _Build) -> Callable[[Any], Any]:
    low, high = _integer_bounds(build)
    sql = build.sql

    def convert(value: int) -> int:
        if low <= value <= high:
            return value
        raise _Refused(f"{_short(value)} is outside {sql}'s range {_short(low)} .. {_short(high)}")

    return convert


def _numeric(build: _Build) -> Callable[[Any], Any]:
    def convert(value: int | Decimal) -> Decimal:
        number = Decimal(value) if isinstance(value, int) else value
        _sign, digits, exponent = number.as_tuple()
        assert isinstance(exponent, int)  # CQL decimals are finite
        if -exponent > PG_NUMERIC_SCALE:
            raise _Refused(f"{-exponent} digits after the point: numeric holds at most {PG_NUMERIC_SCALE}")
        integer_digits = 0 if number.is_zero() else len(digits) + exponent
        if integer_digits > PG_NUMERIC_INTEGER_DIGITS:
            raise _Refused(
                f"{integer_digits} digits before the point: numeric holds at most {PG_NUMERIC_INTEGER_DIGITS}"
            )
        return number

    return convert


def _decimal_text(build: _Build) -> Callable[[Any], Any]:
    return lambda value: str(Decimal(value) if isinstance(value, int) else value)


def _timestamptz(build: _Build) -> Callable[[Any], Any]:
    low, high = PG_MILLIS

    def convert(millis: int) -> dt.datetime:
        when = millis_to_datetime(millis) if low <= millis <= high else None
        if when is None:
            raise _Refused(
                f"{millis} ms since the epoch ({_about_millis(millis)}) is outside what timestamptz takes "
                f"through asyncpg: {_about_millis(low)} .. {_about_millis(high)}"
            )
        return when

    return convert


def _date(build: _Build) -> Callable[[Any], Any]:
    if build.postgres:
        low, high = PG_DAYS
        what = "PostgreSQL date through asyncpg"
    else:
        if build.sql.strip() != "Date32":
            raise _BadRule(f"the date converter writes Date32 columns, not {build.sql!r}")
        extended = build.features is None or build.features.extended_date_range
        low, high = CH_DAYS[extended]
        what = "ClickHouse Date32" + ("" if extended else " before 22.8")

    def convert(days: int) -> dt.date:
        day = days_to_date(days) if low <= days <= high else None
        if day is None:
            raise _Refused(
                f"{days} days since 1970-01-01 ({_about_days(days)}) is outside {what}: "
                f"{_about_days(low)} .. {_about_days(high)}"
            )
        return day

    return convert


def _datetime64(build: _Build) -> Callable[[Any], Any]:
    match = re.fullmatch(r"DateTime64\(\s*(\d)\s*(?:,\s*'[^']*'\s*)?\)", build.sql.strip())
    if not match:
        raise _BadRule(f"the datetime64 converter writes DateTime64(P[, 'tz']) columns, not {build.sql!r}")
    precision = int(match.group(1))
    if precision < 3:
        raise _BadRule(f"{build.sql} keeps fewer digits than a timestamp's milliseconds")
    factor = 10 ** (precision - 3)
    extended = build.features is None or build.features.extended_date_range
    low, high = CH_MILLIS[extended]

    def convert(millis: int) -> int:
        if not low <= millis <= high:
            raise _Refused(
                f"{millis} ms since the epoch ({_about_millis(millis)}) is outside DateTime64's range "
                f"{_about_millis(low)} .. {_about_millis(high)}"
            )
        return millis * factor  # clickhouse-driver writes ints as raw ticks: exact, no float on the way

    return convert


def _counter_total(build: _Build) -> Callable[[Any], Any]:
    check = _integer(build)
    return lambda context: check(context.total())


def _inet_text(build: _Build) -> Callable[[Any], Any]:
    return str


def _inet_ipv6(build: _Build) -> Callable[[Any], Any]:
    def convert(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
        if isinstance(address, ipaddress.IPv6Address):
            return address
        return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + address.packed)

    return convert


def _json(build: _Build) -> Callable[[Any], Any]:
    ctype, postgres = build.ctype, build.postgres
    return lambda value: to_json(ctype, value, postgres)


def _element_error(what: str, items: Any, convert: Callable[[Any], Any]) -> _Refused:
    """The first failing element's error, found again (the fast path has no per-element try)."""
    for i, item in enumerate(items):
        try:
            convert(item)
        except _Refused as exc:
            return _Refused(f"{what} {i}: {exc.reason}")
    return _Refused(f"a {what} could not be converted")


def _array(build: _Build) -> Callable[[Any], Any]:
    convert_element = build.children[0].convert

    def convert(items: list[Any]) -> list[Any]:
        try:
            return [convert_element(item) for item in items]
        except _Refused:
            raise _element_error("element", items, convert_element) from None

    return convert


def _map(build: _Build) -> Callable[[Any], Any]:
    convert_key, convert_value = build.children[0].convert, build.children[1].convert

    def convert(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        try:
            return {convert_key(k): convert_value(v) for k, v in pairs}
        except _Refused:
            raise _element_error("entry", pairs, lambda kv: (convert_key(kv[0]), convert_value(kv[1]))) from None

    return convert


def _tuple(build: _Build) -> Callable[[Any], Any]:
    converters = [child.convert for child in build.children]
    names = build.ctype.field_names

    def convert(value: Any) -> tuple[Any, ...]:
        items = [value.get(name) for name in names] if isinstance(value, Mapping) else list(value)
        out: list[Any] = []
        for i, (item, convert_field) in enumerate(zip(items, converters)):
            if item is None or item is EMPTY:
                out.append(None)  # the fields are Nullable
                continue
            try:
                out.append(convert_field(item))
            except _Refused as exc:
                raise _Refused(f"field {names[i] if names else i}: {exc.reason}") from None
        return tuple(out)

    return convert


def _null(build: _Build) -> Callable[[Any], Any]:
    return lambda value: None


_NUMBERS = frozenset({"tinyint", "smallint", "int", "bigint", "varint", "time", "timestamp", "date"})
CONVERTERS: Final[dict[str, Converter]] = {
    "same": Converter(
        frozenset({"boolean", "float", "double", "uuid", "timeuuid", "blob", "custom", "inet"}),
        _same,
        "the decoded value as it is (bool, float, uuid.UUID, bytes, ipaddress)",
    ),
    "text": Converter(frozenset({"text", "ascii"}), _text, "str; PostgreSQL refuses U+0000"),
    "bytes": Converter(frozenset({"blob", "custom"}), _same, "bytes"),
    "boolean_uint8": Converter(frozenset({"boolean"}), _boolean_uint8, "0 or 1"),
    "integer": Converter(_NUMBERS, _integer, "int, refused outside the SQL type's range"),
    "numeric": Converter(frozenset({"varint", "decimal"}), _numeric, "decimal.Decimal within numeric's limits"),
    "decimal_text": Converter(frozenset({"varint", "decimal"}), _decimal_text, "the exact decimal text"),
    "timestamptz": Converter(frozenset({"timestamp"}), _timestamptz, "aware UTC datetime"),
    "date": Converter(frozenset({"date"}), _date, "datetime.date (PostgreSQL date, ClickHouse Date32)"),
    "datetime64": Converter(frozenset({"timestamp"}), _datetime64, "int ticks of DateTime64(P >= 3)"),
    "counter_total": Converter(frozenset({"counter"}), _counter_total, "the counter context's total, as int"),
    "inet_text": Converter(frozenset({"inet"}), _inet_text, "the address's text"),
    "inet_ipv6": Converter(frozenset({"inet"}), _inet_ipv6, "IPv6Address (IPv4 as IPv4-mapped)"),
    "json": Converter(FAMILIES, _json, "JSON text (lossless rendering, see the module docstring)"),
    "array": Converter(frozenset({"list", "set", "vector"}), _array, "list of converted elements"),
    "map": Converter(frozenset({"map"}), _map, "dict of converted keys and values (ClickHouse Map)"),
    "tuple": Converter(frozenset({"tuple", "udt"}), _tuple, "tuple of converted fields, None for null"),
    "null": Converter(frozenset({"empty"}), _null, "always None"),
}


# -- the mappings -----------------------------------------------------------------------------------


class TypeMappings:
    """The loaded ``schema-mappings.yaml``: :meth:`postgres`, :meth:`timescaledb`, :meth:`clickhouse`.

    Answers are cached per (target, type, features); a :class:`TargetType` is immutable and can be
    shared by every column of that type.
    """

    def __init__(self, path: Path, rules: Mapping[str, Mapping[str, tuple[Rule, ...]]]) -> None:
        self.path = path
        self.rules = rules
        self._cache: dict[tuple[str, CqlType, ClickHouseFeatures | None, bool], TargetType] = {}

    def postgres(self, ctype: CqlType) -> TargetType:
        return self.for_target("postgres", ctype)

    def timescaledb(self, ctype: CqlType) -> TargetType:
        return self.for_target("timescaledb", ctype)

    def clickhouse(self, ctype: CqlType, features: ClickHouseFeatures) -> TargetType:
        return self.for_target("clickhouse", ctype, features)

    def for_target(self, target: str, ctype: CqlType, features: ClickHouseFeatures | None = None) -> TargetType:
        if target not in TARGETS:
            raise ConfigError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
        if target == "clickhouse" and features is None:
            raise ConfigError("a ClickHouse mapping depends on the server: pass ClickHouseFeatures.from_version(...)")
        return self._resolve(target, ctype, features if target == "clickhouse" else None, nested=False)

    # -- resolution ------------------------------------------------------------------------------

    def _resolve(self, target: str, ctype: CqlType, features: ClickHouseFeatures | None, nested: bool) -> TargetType:
        key = (target, ctype, features, nested)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        children = tuple(self._resolve(target, p, features, nested=True) for p in ctype.params)
        rule = self._choose(target, ctype, features, nested, children)
        sql = self._sql(target, rule, children)
        build = _Build(target, ctype, sql, features, children)
        try:
            inner = CONVERTERS[rule.convert].build(build)
        except _BadRule as exc:
            raise ConfigError(f"{self.path}: {rule.where}: {exc}") from None
        postgres = target in POSTGRES_TARGETS
        nullable = sql if postgres else clickhouse_nullable(sql)
        null_ok = postgres or (not nested and nullable is not None)
        result = _target_type(target, ctype, sql, nullable or sql, rule, inner, null_ok)
        self._cache[key] = result
        return result

    def _choose(
        self,
        target: str,
        ctype: CqlType,
        features: ClickHouseFeatures | None,
        nested: bool,
        children: tuple[TargetType, ...],
    ) -> Rule:
        rules = self.rules[target]["custom" if ctype.kind == "custom" else ctype.kind]
        present = features.names() if features is not None else frozenset()
        for rule in rules:
            if all(_holds(c, ctype, present, nested, children) for c in rule.requires):
                return rule
        raise AssertionError("validated: the last rule has no conditions")

    @staticmethod
    def _sql(target: str, rule: Rule, children: tuple[TargetType, ...]) -> str:
        if "{" not in rule.sql:
            return rule.sql
        names = [c.sql for c in children]
        if target == "clickhouse":
            fields = [clickhouse_nullable(c.sql) or c.sql for c in children]
        else:
            fields = names
        return rule.sql.format(
            element=names[0] if names else "",
            key=names[0] if names else "",
            value=names[1] if len(names) > 1 else "",
            fields=", ".join(fields),
        )


def _holds(
    condition: str, ctype: CqlType, features: frozenset[str], nested: bool, children: tuple[TargetType, ...]
) -> bool:
    if condition == "nested":
        return nested
    if condition == "scalar_elements":
        return all(p.kind in SCALARS or p.kind == "custom" for p in ctype.params)
    if condition == "nullable_fields":
        return all(clickhouse_nullable(c.sql) is not None for c in children)
    if condition == "map_key":
        return bool(children) and _MAP_KEY.fullmatch(children[0].sql) is not None
    return condition in features


def _target_type(
    target: str,
    ctype: CqlType,
    sql: str,
    nullable_sql: str,
    rule: Rule,
    inner: Callable[[Any], Any],
    null_ok: bool,
) -> TargetType:
    """Wrap a converter: NULL handling, then errors -> ValueMappingError with the type named."""
    cql = ctype.cql()

    def convert(value: Any) -> Any:
        if value is None or value is EMPTY:
            if null_ok:
                return None
            raise _Refused(f"{'EMPTY' if value is EMPTY else 'a null'} value, and {sql} here cannot be NULL")
        return inner(value)

    def fail(reason: str) -> ValueMappingError:
        return ValueMappingError(reason, cql_type=cql, target=target, sql=sql)

    def from_value(value: Any) -> Any:
        try:
            return convert(value)
        except _Refused as exc:
            raise fail(exc.reason) from None

    def to_target(data: Buffer) -> Any:
        try:
            value = decode(ctype, data)
        except ValueDecodeError as exc:
            raise fail(f"the bytes are not a {cql} value: {exc}") from exc
        try:
            return convert(value)
        except _Refused as exc:
            raise fail(exc.reason) from None

    return TargetType(
        sql=sql,
        to_target=to_target,
        lossless=rule.lossless,
        note=rule.note,
        from_value=from_value,
        target=target,
        cql_type=ctype,
        nullable_sql=nullable_sql,
        convert=convert,
        converter=rule.convert,
    )


# -- cells ------------------------------------------------------------------------------------------


def convert_cell(mapping: TargetType, keyspace: str, table: str, column: str, data: Buffer | None) -> Any:
    """``mapping.to_target(data)``, with errors naming ``keyspace.table`` and ``column``; ``None`` stays ``None``."""
    if data is None:
        return None
    try:
        return mapping.to_target(data)
    except ValueMappingError as exc:
        raise exc.located(keyspace, table, column) from exc


def bind(mapping: TargetType, keyspace: str, table: str, column: str) -> Callable[[Buffer | None], Any]:
    """A one-argument :func:`convert_cell` for one column."""
    return lambda data: convert_cell(mapping, keyspace, table, column, data)


_COUNTER = CqlType("counter")


def counter_shards(data: Buffer) -> list[tuple[bytes, int, int]]:
    """The shards of a serialized counter context: ``(counter id bytes, clock, count)`` each.

    ``count`` is the shard's running total for its counter id (not a delta); the sinks keep the
    newest clock per id and sum over ids. :meth:`TargetType.to_target` of a counter column gives that
    sum for this one context.
    """
    context = decode(_COUNTER, data)
    if not isinstance(context, CounterContext):
        return []  # EMPTY
    return [(shard.counter_id.bytes, shard.clock, shard.count) for shard in context.shards]


# -- loading ----------------------------------------------------------------------------------------


def load_mappings(path: Path | str | None = None) -> TypeMappings:
    """Read and validate a mappings file (default: :data:`PACKAGE_MAPPINGS`).

    Raises :class:`~cdcfast.errors.ConfigError` naming the file and the key (``clickhouse.varint[1].sql``)
    when a file cannot be read, a target or a CQL type family is missing, or a rule is wrong.
    """
    source = PACKAGE_MAPPINGS if path is None else Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the type mappings: {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    rules = _parse(source, document)
    mappings = TypeMappings(source, rules)
    _check_scalar_rules(source, rules)
    return mappings


def _parse(source: Path, document: Any) -> dict[str, dict[str, tuple[Rule, ...]]]:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"{source}: {message}")

    if not isinstance(document, dict):
        raise fail("expected a mapping with the keys version, " + ", ".join(TARGETS))
    unknown = sorted(set(map(str, document)) - {"version", *TARGETS})
    if unknown:
        raise fail(f"{unknown[0]}: unknown key (expected version, {', '.join(TARGETS)})")
    if document.get("version", 1) != 1:
        raise fail(f"version: {document['version']!r} is not a version this cdcfast reads (1)")
    result: dict[str, dict[str, tuple[Rule, ...]]] = {}
    for target in TARGETS:
        section = document.get(target)
        if section is None:
            raise fail(f"{target}: missing: every target needs a mapping for every CQL type family")
        if not isinstance(section, dict):
            raise fail(f"{target}: expected a mapping CQL type family -> rule(s)")
        for family in section:
            if family not in FAMILIES:
                raise fail(f"{target}.{family}: unknown CQL type family (known: {', '.join(sorted(FAMILIES))})")
        missing = sorted(FAMILIES - set(section))
        if missing:
            raise fail("no mapping for " + ", ".join(f"{target}.{family}" for family in missing))
        result[target] = {family: _parse_rules(source, target, family, section[family]) for family in sorted(FAMILIES)}
    return result


def _parse_rules(source: Path, target: str, family: str, value: Any) -> tuple[Rule, ...]:
    where = f"{target}.{family}"
    rules: tuple[Rule, ...]
    if isinstance(value, dict):
        rules = (_parse_rule(source, target, family, where, value),)
    elif isinstance(value, list) and value:
        rules = tuple(_parse_rule(source, target, family, f"{where}[{i}]", item) for i, item in enumerate(value))
    else:
        raise ConfigError(f"{source}: {where}: expected a rule (a mapping) or a non-empty list of rules")
    if rules[-1].requires:
        raise ConfigError(
            f"{source}: {where}: the last rule must have no 'requires', so that every server gets a mapping"
        )
    return rules


def _parse_rule(source: Path, target: str, family: str, where: str, value: Any) -> Rule:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {where}{'.' + key if key else ''}: {message}")

    if not isinstance(value, dict):
        raise fail("", "expected a mapping with sql, convert, lossless (and optionally note, requires)")
    for key in value:
        if key not in _RULE_KEYS:
            raise fail(str(key), f"unknown key (known: {', '.join(sorted(_RULE_KEYS))})")
    sql = value.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise fail("sql", "expected the column type, a non-empty string")
    allowed = _PLACEHOLDERS.get(family, frozenset())
    try:
        placeholders = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(sql) if name is not None]
    except ValueError as exc:
        raise fail("sql", f"{sql!r}: {exc}") from None
    for name, spec, conversion in placeholders:
        if name not in allowed or spec or conversion:
            usable = ", ".join("{" + p + "}" for p in sorted(allowed)) or "none"
            raise fail("sql", f"placeholder {{{name}}} does not apply to {family} (usable: {usable})")
    convert = value.get("convert")
    if convert not in CONVERTERS:
        raise fail("convert", f"unknown converter {convert!r} (known: {', '.join(sorted(CONVERTERS))})")
    if family not in CONVERTERS[convert].kinds:
        kinds = ", ".join(sorted(CONVERTERS[convert].kinds))
        raise fail("convert", f"{convert!r} does not convert {family} values (it converts {kinds})")
    lossless = value.get("lossless")
    if not isinstance(lossless, bool):
        raise fail("lossless", "expected true or false")
    note = value.get("note", "")
    if not isinstance(note, str):
        raise fail("note", "expected a string")
    requires = value.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(c, str) for c in requires):
        raise fail("requires", "expected a list of condition names")
    known = SHAPE_CONDITIONS["clickhouse" if target == "clickhouse" else "postgres"]
    if target == "clickhouse":
        known = known | frozenset(CLICKHOUSE_FEATURES_SINCE)
    for condition in requires:
        if condition not in known:
            raise fail("requires", f"unknown condition {condition!r} for {target} (known: {', '.join(sorted(known))})")
    return Rule(where, sql.strip(), convert, lossless, " ".join(note.split()), tuple(requires))


_NEWEST = ClickHouseFeatures.from_version("99.1")
_OLDEST = ClickHouseFeatures.from_version(".".join(map(str, CLICKHOUSE_MINIMUM)))


def _check_scalar_rules(source: Path, rules: Mapping[str, Mapping[str, tuple[Rule, ...]]]) -> None:
    """Build every scalar rule's converter once, so that a converter that cannot write its SQL type
    (``integer`` for ``text``) is reported when the file is loaded, not at the first value."""
    for target, families in rules.items():
        for family, family_rules in families.items():
            if family in COMPOSITES:
                continue
            ctype = CqlType("custom", name="'custom'") if family == "custom" else CqlType(family)
            for rule in family_rules:
                for features in (_NEWEST, _OLDEST) if target == "clickhouse" else (None,):
                    try:
                        CONVERTERS[rule.convert].build(_Build(target, ctype, rule.sql, features))
                    except _BadRule as exc:
                        raise ConfigError(f"{source}: {rule.where}: {exc}") from None
