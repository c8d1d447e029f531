"""Type mapping (``cdcfast.transform``): the YAML, every corpus type on every target, the converters'
exactness, every real ``types.all_types`` value, and a round trip through the real servers.

Targets are PostgreSQL, TimescaleDB (the same types) and ClickHouse twice: as Debian's 18.16 (no
DateTime64, Map, Int128/256, IPv6, Date32, Bool) and as a new server (24.8, all of them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import json
import math
import os
import struct
import uuid
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcfast.commitlog.cqltypes import CqlType, parse_cql_type
from cdcfast.errors import CdcfastError, ConfigError
from cdcfast.transform import (
    PACKAGE_MAPPINGS,
    ClickHouseFeatures,
    TargetType,
    TypeMappings,
    ValueMappingError,
    convert_cell,
    counter_shards,
    load_mappings,
)
from cdcfast.values import EMPTY, CounterContext, CounterShard, Duration, decode, encode
from cdcfast.values.temporal import date_to_days, datetime_to_millis

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CDCFAST_SHARED", REPO.parent / "shared"))
CORPUS_ROOT = SHARED / "corpus"
REAL_VALUES_CORPUS = "c50-v7-plain"

OLD = ClickHouseFeatures.from_version("18.16.1")
NEW = ClickHouseFeatures.from_version("24.8")
TARGETS: list[tuple[str, ClickHouseFeatures | None]] = [
    ("postgres", None),
    ("timescaledb", None),
    ("clickhouse", OLD),
    ("clickhouse", NEW),
]
TARGET_IDS = ["postgres", "timescaledb", "clickhouse-18.16", "clickhouse-24.8"]
POSTGRES_LIKE = ("postgres", "timescaledb")

I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
JSON_SAFE = 2**53
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def mappings() -> TypeMappings:
    return load_mappings()


def t(text: str) -> CqlType:
    return parse_cql_type(text, {"addr": (("street", "city", "zip"), ("text", "text", "int"))})


def mapped(mappings: TypeMappings, target: str, features: ClickHouseFeatures | None, type_text: str) -> TargetType:
    ctype = t(type_text)
    if target == "postgres":
        return mappings.postgres(ctype)
    if target == "timescaledb":
        return mappings.timescaledb(ctype)
    assert features is not None
    return mappings.clickhouse(ctype, features)


# -- the YAML ------------------------------------------------------------------------------------


def test_config_copy_is_identical_to_the_package_copy() -> None:
    assert (REPO / "config" / "schema-mappings.yaml").read_bytes() == PACKAGE_MAPPINGS.read_bytes()


def test_default_mappings_are_the_package_copy(mappings: TypeMappings) -> None:
    assert mappings.path == PACKAGE_MAPPINGS
    assert load_mappings(REPO / "config" / "schema-mappings.yaml").postgres(t("int")).sql == "integer"


def _write_variant(tmp_path: Path, change: Any) -> Path:
    document = yaml.safe_load(PACKAGE_MAPPINGS.read_text())
    # the package file shares the postgres section with timescaledb through a YAML anchor: unshare it
    document["timescaledb"] = json.loads(json.dumps(document["timescaledb"]))
    change(document)
    path = tmp_path / "mappings.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _drop(section: str, family: str) -> Any:
    return lambda d: d[section].pop(family)


def _set(section: str, family: str, rule: Any) -> Any:
    def change(d: dict[str, Any]) -> None:
        d[section][family] = rule

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_drop("clickhouse", "varint"), "clickhouse.varint"),
        (_drop("postgres", "duration"), "postgres.duration"),
        (_drop("timescaledb", "udt"), "timescaledb.udt"),
        (lambda d: d.pop("clickhouse"), "clickhouse"),
        (_set("postgres", "int", {"sql": "integer", "convert": "nope", "lossless": True}), "postgres.int.convert"),
        (_set("postgres", "int", {"convert": "integer", "lossless": True}), "postgres.int.sql"),
        (_set("postgres", "int", {"sql": "integer", "convert": "integer", "lossless": "yes"}), "postgres.int.lossless"),
        (
            _set("postgres", "int", {"sql": "integer", "convert": "integer", "lossless": True, "colour": 1}),
            "postgres.int.colour",
        ),
        (
            _set("postgres", "int", [{"sql": "x", "convert": "json", "lossless": True, "requires": ["map_type"]}]),
            "postgres.int[0].requires",
        ),
        (_set("postgres", "int", {"sql": "integer", "convert": "array", "lossless": True}), "postgres.int.convert"),
        (_set("postgres", "int", {"sql": "text", "convert": "integer", "lossless": True}), "postgres.int"),
        (_set("postgres", "list", {"sql": "{key}[]", "convert": "array", "lossless": True}), "postgres.list.sql"),
        (
            _set(
                "clickhouse", "date", [{"sql": "Date32", "convert": "date", "lossless": True, "requires": ["date32"]}]
            ),
            "clickhouse.date",
        ),
        (
            _set(
                "clickhouse", "date", [{"sql": "Int32", "convert": "integer", "lossless": True, "requires": ["warp"]}]
            ),
            "clickhouse.date[0].requires",
        ),
        (_set("clickhouse", "blobs", {"sql": "String", "convert": "bytes", "lossless": True}), "clickhouse.blobs"),
    ],
)
def test_invalid_mappings_name_the_file_and_the_key(tmp_path: Path, change: Any, expected: str) -> None:
    path = _write_variant(tmp_path, change)
    with pytest.raises(ConfigError) as info:
        load_mappings(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_unreadable_mappings_name_the_file(tmp_path: Path) -> None:
    for text in ("postgres: [unclosed", "- just a list", ""):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=str(path)):
            load_mappings(path)
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_mappings(tmp_path / "missing.yaml")


# -- ClickHouse feature detection ----------------------------------------------------------------


def test_clickhouse_18_16_has_only_the_old_types() -> None:
    assert OLD.version[:2] == (18, 16)
    for name in ("datetime64", "date32", "map_type", "big_integers", "ipv6", "low_cardinality", "bool_type"):
        assert getattr(OLD, name) is False, name
    assert OLD.nullable_in_array is True  # probed on the real 18.16: Array(Nullable(Int32)) works
    assert "datetime64" not in OLD.names()


def test_clickhouse_24_8_has_the_new_types() -> None:
    for name in ("datetime64", "date32", "extended_date_range", "map_type", "big_integers", "ipv6", "bool_type"):
        assert getattr(NEW, name) is True, name
    assert {"map_type", "datetime64"} <= NEW.names()


@pytest.mark.parametrize(
    ("version", "datetime64", "date32", "extended"),
    [("20.3.19.4", True, False, False), ("21.9.2", True, True, False), ("22.8.1.1-lts", True, True, True)],
)
def test_clickhouse_feature_thresholds(version: str, datetime64: bool, date32: bool, extended: bool) -> None:
    features = ClickHouseFeatures.from_version(version)
    assert (features.datetime64, features.date32, features.extended_date_range) == (datetime64, date32, extended)


@pytest.mark.parametrize("version", ["", "new", "18", "1.1.54394", "18.10.3"])
def test_unusable_clickhouse_versions_are_refused(version: str) -> None:
    with pytest.raises(ConfigError):
        ClickHouseFeatures.from_version(version)


# -- every type of the corpora maps everywhere ---------------------------------------------------


def final_schemas() -> list[Path]:
    return sorted(CORPUS_ROOT.glob("*/schema/021.json"))


def corpus_columns(path: Path) -> Iterator[tuple[str, str, str, CqlType]]:
    document = json.loads(path.read_text())
    udts: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {}
    for row in document["types"]:
        udts.setdefault(row["keyspace_name"], {})[row["type_name"]] = (
            tuple(row["field_names"]),
            tuple(row["field_types"]),
        )
    for column in document["columns"]:
        ks = column["keyspace_name"]
        yield ks, column["table_name"], column["column_name"], parse_cql_type(column["type"], udts.get(ks, {}))


# The decisions, as docs/type-mapping.md states them: CQL type -> (PostgreSQL, ClickHouse 18.16, ClickHouse 24.8)
EXPECTED_SQL: dict[str, tuple[str, str, str]] = {
    "ascii": ("text", "String", "String"),
    "bigint": ("bigint", "Int64", "Int64"),
    "blob": ("bytea", "String", "String"),
    "boolean": ("boolean", "UInt8", "Bool"),
    "counter": ("bigint", "Int64", "Int64"),
    "date": ("date", "Int32", "Date32"),
    "decimal": ("numeric", "String", "String"),
    "double": ("double precision", "Float64", "Float64"),
    "duration": ("jsonb", "String", "String"),
    "float": ("real", "Float32", "Float32"),
    "inet": ("inet", "String", "IPv6"),
    "int": ("integer", "Int32", "Int32"),
    "smallint": ("smallint", "Int16", "Int16"),
    "text": ("text", "String", "String"),
    "time": ("bigint", "Int64", "Int64"),
    "timestamp": ("timestamptz", "Int64", "DateTime64(3, 'UTC')"),
    "timeuuid": ("uuid", "UUID", "UUID"),
    "tinyint": ("smallint", "Int8", "Int8"),
    "uuid": ("uuid", "UUID", "UUID"),
    "varint": ("numeric", "Decimal(38, 0)", "Int256"),
    "frozen<list<text>>": ("text[]", "Array(String)", "Array(String)"),
    "frozen<set<int>>": ("integer[]", "Array(Int32)", "Array(Int32)"),
    "frozen<map<int, text>>": ("jsonb", "String", "Map(Int32, String)"),
    "frozen<map<text, frozen<list<int>>>>": ("jsonb", "String", "Map(String, Array(Int32))"),
    "frozen<tuple<int, text, double>>": ("jsonb", "String", "String"),
    "list<frozen<tuple<text, int, decimal>>>": (
        "jsonb",
        "Array(String)",  # 18.16 splits a table column Array(Tuple(...)) into subcolumns: tuples as JSON
        "Array(Tuple(Nullable(String), Nullable(Int32), Nullable(String)))",
    ),
    "list<int>": ("integer[]", "Array(Int32)", "Array(Int32)"),
    "list<text>": ("text[]", "Array(String)", "Array(String)"),
    "set<text>": ("text[]", "Array(String)", "Array(String)"),
    "map<text, double>": ("jsonb", "String", "Map(String, Float64)"),
    "map<text, int>": ("jsonb", "String", "Map(String, Int32)"),
    "map<text, text>": ("jsonb", "String", "Map(String, String)"),
    "vector<float, 3>": ("real[]", "Array(Float32)", "Array(Float32)"),
    "frozen<addr>": ("jsonb", "String", "String"),
    "addr": ("jsonb", "String", "String"),
    "frozen<address>": ("jsonb", "String", "String"),
    "contact": ("jsonb", "String", "String"),
}


@pytest.mark.parametrize("schema_path", final_schemas(), ids=lambda p: p.parent.parent.name)
def test_every_corpus_column_maps_on_every_target(mappings: TypeMappings, schema_path: Path) -> None:
    seen = set()
    for ks, table, column, ctype in corpus_columns(schema_path):
        seen.add(ctype.cql())
        for (target, features), target_id in zip(TARGETS, TARGET_IDS):
            mapping = mappings.for_target(target, ctype, features)
            assert isinstance(mapping, TargetType)
            assert mapping.sql and callable(mapping.to_target), (ks, table, column, target_id)
            assert isinstance(mapping.lossless, bool) and isinstance(mapping.note, str)
            expected = EXPECTED_SQL.get(ctype.cql())
            assert expected is not None, f"{ks}.{table}.{column}: add {ctype.cql()} to EXPECTED_SQL"
            want = {"postgres": expected[0], "timescaledb": expected[0]}.get(target) or (
                expected[1] if features is OLD else expected[2]
            )
            assert mapping.sql == want, (ks, table, column, target_id)
    assert len(seen) >= 30


def test_no_corpus_is_missing() -> None:
    assert final_schemas(), f"no corpus schemas under {CORPUS_ROOT}"


@pytest.mark.parametrize("type_text", ["empty", "'org.apache.cassandra.db.marshal.LexicalUUIDType'"])
def test_rare_types_map_too(mappings: TypeMappings, type_text: str) -> None:
    for target, features in TARGETS:
        assert mappings.for_target(target, t(type_text), features).sql


def test_clickhouse_nullable_columns(mappings: TypeMappings) -> None:
    assert mappings.clickhouse(t("int"), OLD).nullable_sql == "Nullable(Int32)"
    assert mappings.clickhouse(t("list<int>"), OLD).nullable_sql == "Array(Int32)"  # arrays cannot be NULL
    assert mappings.clickhouse(t("map<text, int>"), NEW).nullable_sql == "Map(String, Int32)"
    assert mappings.postgres(t("list<int>")).nullable_sql == "integer[]"


def test_type_mapping_doc_lists_every_type() -> None:
    doc = (REPO / "docs" / "type-mapping.md").read_text()
    for name in EXPECTED_SQL:
        if "<" not in name and name not in ("addr", "address", "contact"):
            assert f"| `{name}`" in doc, name


# -- converters: exact values for generated inputs -----------------------------------------------


def convert(
    mappings: TypeMappings, target: str, features: ClickHouseFeatures | None, type_text: str, value: Any
) -> Any:
    return mapped(mappings, target, features, type_text).to_target(encode(t(type_text), value))


def float_bits(x: float, width: int) -> bytes:
    return struct.pack(">f" if width == 32 else ">d", x)


target_params = pytest.mark.parametrize(("target", "features"), TARGETS, ids=TARGET_IDS)
few = settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


FIXED_BITS = {"tinyint": 8, "smallint": 16, "int": 32, "bigint": 64}


def fixed_integers() -> st.SearchStrategy[tuple[str, int]]:
    def of(name: str) -> st.SearchStrategy[tuple[str, int]]:
        half = 2 ** (FIXED_BITS[name] - 1)
        return st.tuples(st.just(name), st.integers(-half, half - 1))

    return st.sampled_from(sorted(FIXED_BITS)).flatmap(of)


@target_params
@few
@given(fixed_integers())
def test_fixed_integers_are_exact(mappings: TypeMappings, target: str, features: Any, case: tuple[str, int]) -> None:
    name, value = case
    result = convert(mappings, target, features, name, value)
    assert type(result) is int and result == value


@target_params
@few
@given(st.integers() | st.integers(-(10**100), 10**100) | st.sampled_from([10**38 - 1, -(10**38) + 1, 10**38, 2**255]))
def test_varint(mappings: TypeMappings, target: str, features: Any, value: int) -> None:
    mapping = mapped(mappings, target, features, "varint")
    data = encode(t("varint"), value)
    if target in POSTGRES_LIKE:
        result = mapping.to_target(data)
        assert isinstance(result, Decimal) and result.as_tuple().exponent == 0 and int(result) == value
    elif features is OLD:  # Decimal(38, 0)
        if abs(value) < 10**38:
            assert mapping.to_target(data) == value and type(mapping.to_target(data)) is int
        else:
            with pytest.raises(ValueMappingError, match="Decimal"):
                mapping.to_target(data)
    else:  # Int256
        if -(2**255) <= value < 2**255:
            assert mapping.to_target(data) == value
        else:
            with pytest.raises(ValueMappingError):
                mapping.to_target(data)


def decimals() -> st.SearchStrategy[Decimal]:
    def build(unscaled: int, scale: int) -> Decimal:
        return Decimal((1 if unscaled < 0 else 0, tuple(int(c) for c in str(abs(unscaled))), -scale))

    return st.builds(build, st.integers(-(10**60), 10**60) | st.integers(-5, 5), I32 | st.integers(-20, 40))


@target_params
@few
@given(decimals())
def test_decimal(mappings: TypeMappings, target: str, features: Any, value: Decimal) -> None:
    mapping = mapped(mappings, target, features, "decimal")
    data = encode(t("decimal"), value)
    if target not in POSTGRES_LIKE:  # String: the exact text, scale kept
        text = mapping.to_target(data)
        assert isinstance(text, str) and Decimal(text).as_tuple() == value.as_tuple()
        return
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    integer_digits = 0 if value.is_zero() else len(digits) + exponent
    if -exponent > 16383 or integer_digits > 131072:
        with pytest.raises(ValueMappingError, match="numeric"):
            mapping.to_target(data)
        return
    result = mapping.to_target(data)
    assert isinstance(result, Decimal)
    if exponent <= 0:
        assert result.as_tuple() == value.as_tuple()  # scale kept
    else:
        assert result == value and result.as_tuple().exponent >= 0  # numeric has no negative scale


@target_params
@few
@given(st.floats(width=32) | st.sampled_from([-0.0, math.inf, -math.inf, math.nan]))
def test_float(mappings: TypeMappings, target: str, features: Any, value: float) -> None:
    result = convert(mappings, target, features, "float", value)
    assert isinstance(result, float)
    assert math.isnan(result) if math.isnan(value) else float_bits(result, 32) == float_bits(value, 32)


@target_params
@few
@given(st.floats() | st.sampled_from([-0.0, math.inf, -math.inf, math.nan, 5e-324]))
def test_double(mappings: TypeMappings, target: str, features: Any, value: float) -> None:
    result = convert(mappings, target, features, "double", value)
    assert isinstance(result, float)
    assert math.isnan(result) if math.isnan(value) else float_bits(result, 64) == float_bits(value, 64)


@target_params
@few
@given(st.text(st.characters(codec="utf-8")) | st.sampled_from(["\U0001f600 non-BMP \U00010348", "a\x00b", ""]))
def test_text(mappings: TypeMappings, target: str, features: Any, value: str) -> None:
    mapping = mapped(mappings, target, features, "text")
    if target in POSTGRES_LIKE and "\x00" in value:
        with pytest.raises(ValueMappingError, match="U\\+0000"):
            mapping.to_target(value.encode())
    else:
        assert mapping.to_target(value.encode()) == value


@target_params
@few
@given(st.text(st.characters(max_codepoint=127)))
def test_ascii(mappings: TypeMappings, target: str, features: Any, value: str) -> None:
    mapping = mapped(mappings, target, features, "ascii")
    if target in POSTGRES_LIKE and "\x00" in value:
        with pytest.raises(ValueMappingError):
            mapping.to_target(value.encode())
    else:
        assert mapping.to_target(value.encode()) == value


@target_params
@few
@given(st.binary())
def test_blob(mappings: TypeMappings, target: str, features: Any, value: bytes) -> None:
    result = convert(mappings, target, features, "blob", value)
    assert type(result) is bytes and result == value


@target_params
def test_boolean(mappings: TypeMappings, target: str, features: Any) -> None:
    for value in (True, False):
        result = convert(mappings, target, features, "boolean", value)
        if target == "clickhouse" and features is OLD:
            assert type(result) is int and result == int(value)  # UInt8
        else:
            assert result is value
    # Cassandra reads any non-zero byte as true
    assert mapped(mappings, target, features, "boolean").to_target(b"\x07") in (True, 1)


PG_DAYS = (dt.date(1, 1, 2).toordinal() - 719163, dt.date(9999, 12, 30).toordinal() - 719163)
PG_MILLIS = (
    datetime_to_millis(dt.datetime(1, 1, 1, tzinfo=UTC)) + 1,
    datetime_to_millis(dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
)
CH_DAYS = (date_to_days(dt.date(1900, 1, 1)), date_to_days(dt.date(2299, 12, 31)))
CH_MILLIS = (
    datetime_to_millis(dt.datetime(1900, 1, 1, tzinfo=UTC)),
    datetime_to_millis(dt.datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
)


def around(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    return st.sampled_from([low - 1, low, low + 1, high - 1, high, high + 1]) | st.integers(low - 10, low + 10)


@target_params
@few
@given(I64 | around(PG_MILLIS) | around(CH_MILLIS) | st.integers(-(10**13), 10**13))
def test_timestamp(mappings: TypeMappings, target: str, features: Any, millis: int) -> None:
    mapping = mapped(mappings, target, features, "timestamp")
    data = encode(t("timestamp"), millis)
    if target in POSTGRES_LIKE or features is NEW:
        low, high = PG_MILLIS if target in POSTGRES_LIKE else CH_MILLIS
        if not low <= millis <= high:
            with pytest.raises(ValueMappingError, match="timestamp"):
                mapping.to_target(data)
            return
    result = mapping.to_target(data)
    if target in POSTGRES_LIKE:
        assert isinstance(result, dt.datetime) and result.tzinfo is not None and datetime_to_millis(result) == millis
    else:  # Int64 milliseconds, or DateTime64(3)'s raw ticks (milliseconds): exact either way
        assert type(result) is int and result == millis


@target_params
@few
@given(I32 | around(PG_DAYS) | around(CH_DAYS))
def test_date(mappings: TypeMappings, target: str, features: Any, days: int) -> None:
    mapping = mapped(mappings, target, features, "date")
    data = encode(t("date"), days)
    if target in POSTGRES_LIKE or features is NEW:
        low, high = PG_DAYS if target in POSTGRES_LIKE else CH_DAYS
        if not low <= days <= high:
            with pytest.raises(ValueMappingError, match="date"):
                mapping.to_target(data)
            return
        result = mapping.to_target(data)
        assert type(result) is dt.date and date_to_days(result) == days
    else:
        assert mapping.to_target(data) == days


@target_params
@few
@given(st.integers(0, 86_400 * 10**9 - 1) | I64)
def test_time_keeps_nanoseconds(mappings: TypeMappings, target: str, features: Any, nanos: int) -> None:
    result = convert(mappings, target, features, "time", nanos)
    assert type(result) is int and result == nanos


def json_int(text_or_int: Any) -> int:
    return int(text_or_int)


@target_params
@few
@given(st.builds(Duration, I32, I32, I64))
def test_duration_is_json(mappings: TypeMappings, target: str, features: Any, value: Duration) -> None:
    result = convert(mappings, target, features, "duration", value)
    document = json.loads(result)
    assert set(document) == {"months", "days", "nanoseconds"}
    assert (json_int(document["months"]), json_int(document["days"]), json_int(document["nanoseconds"])) == (
        value.months,
        value.days,
        value.nanoseconds,
    )
    assert isinstance(document["nanoseconds"], int) == (abs(value.nanoseconds) <= JSON_SAFE)


@target_params
@few
@given(st.uuids(), st.uuids(version=1))
def test_uuids(mappings: TypeMappings, target: str, features: Any, value: uuid.UUID, time_value: uuid.UUID) -> None:
    assert convert(mappings, target, features, "uuid", value) == value
    assert convert(mappings, target, features, "timeuuid", time_value) == time_value


@target_params
@few
@given(st.ip_addresses())
def test_inet(
    mappings: TypeMappings, target: str, features: Any, value: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> None:
    result = convert(mappings, target, features, "inet", value)
    if target in POSTGRES_LIKE:
        assert result == value and type(result) is type(value)
    elif features is OLD:  # String: the address's text, which keeps IPv4 and IPv6 apart
        assert isinstance(result, str) and ipaddress.ip_address(result) == value
    else:  # IPv6: IPv4 addresses become IPv4-mapped (documented as lossy)
        assert isinstance(result, ipaddress.IPv6Address)
        assert result == (value if value.version == 6 else ipaddress.IPv6Address(f"::ffff:{value}"))


def counters() -> st.SearchStrategy[CounterContext]:
    shard = st.builds(CounterShard, st.uuids(), I64, st.integers(-(2**40), 2**40))
    return st.lists(shard, max_size=4).map(
        lambda shards: CounterContext(shards=tuple(shards), header=tuple(i - 32768 for i in range(len(shards))))
    )


@target_params
@few
@given(counters())
def test_counter_is_the_total(mappings: TypeMappings, target: str, features: Any, context: CounterContext) -> None:
    data = encode(t("counter"), context)
    assert mapped(mappings, target, features, "counter").to_target(data) == context.total()
    assert counter_shards(data) == [(s.counter_id.bytes, s.clock, s.count) for s in context.shards]


def test_counter_total_beyond_int64_is_refused(mappings: TypeMappings) -> None:
    big = CounterContext(shards=(CounterShard(uuid.uuid4(), 1, 2**62), CounterShard(uuid.uuid4(), 1, 2**62)))
    for target, features in TARGETS:
        with pytest.raises(ValueMappingError):
            mappings.for_target(target, t("counter"), features).to_target(encode(t("counter"), big))


@pytest.mark.parametrize(
    "type_text", ["int", "bigint", "uuid", "timestamp", "date", "decimal", "varint", "double", "inet", "duration"]
)
@target_params
def test_empty_values_are_null(mappings: TypeMappings, target: str, features: Any, type_text: str) -> None:
    assert mapped(mappings, target, features, type_text).to_target(b"") is None


@target_params
def test_empty_text_is_a_value_not_null(mappings: TypeMappings, target: str, features: Any) -> None:
    assert mapped(mappings, target, features, "text").to_target(b"") == ""
    assert mapped(mappings, target, features, "blob").to_target(b"") == b""


# -- collections, tuples, UDTs -------------------------------------------------------------------


@target_params
@few
@given(st.lists(I32, max_size=6))
def test_list_of_int_is_an_array(mappings: TypeMappings, target: str, features: Any, value: list[int]) -> None:
    assert convert(mappings, target, features, "list<int>", value) == value
    assert convert(mappings, target, features, "frozen<set<int>>", sorted(set(value))) == sorted(set(value))


@target_params
@few
@given(st.lists(st.floats(width=32), min_size=3, max_size=3))
def test_vector_is_a_float_array(mappings: TypeMappings, target: str, features: Any, value: list[float]) -> None:
    result = convert(mappings, target, features, "vector<float, 3>", value)
    assert [float_bits(x, 32) for x in result] == [float_bits(x, 32) for x in value] or any(map(math.isnan, value))


@target_params
@few
@given(st.lists(st.tuples(st.text(), I32), max_size=5, unique_by=lambda kv: kv[0]))
def test_map_with_text_keys(mappings: TypeMappings, target: str, features: Any, pairs: list[tuple[str, int]]) -> None:
    pairs = sorted(pairs)
    mapping = mapped(mappings, target, features, "map<text, int>")
    data = encode(t("map<text, int>"), pairs)
    if target in POSTGRES_LIKE and any("\x00" in k for k, _ in pairs):
        with pytest.raises(ValueMappingError, match="U\\+0000"):
            mapping.to_target(data)
        return
    result = mapping.to_target(data)
    if target == "clickhouse" and features is NEW:
        assert result == dict(pairs)
    else:
        assert json.loads(result) == dict(pairs)


def test_map_with_nul_key_is_refused_by_postgres(mappings: TypeMappings) -> None:
    data = encode(t("map<text, int>"), [("a\x00", 1)])
    with pytest.raises(ValueMappingError, match="U\\+0000"):
        mappings.postgres(t("map<text, int>")).to_target(data)
    assert json.loads(mappings.clickhouse(t("map<text, int>"), OLD).to_target(data)) == {"a\x00": 1}


@target_params
def test_map_with_non_text_keys(mappings: TypeMappings, target: str, features: Any) -> None:
    pairs = [(-1, "minus one"), (7, "seven")]
    result = convert(mappings, target, features, "frozen<map<int, text>>", pairs)
    if target == "clickhouse" and features is NEW:
        assert result == {-1: "minus one", 7: "seven"}
    else:
        assert json.loads(result) == [[-1, "minus one"], [7, "seven"]]


def test_json_rendering_is_lossless(mappings: TypeMappings) -> None:
    ctype = t("tuple<bigint, double, double, double, decimal, blob, varint, timestamp, inet, frozen<addr>, uuid>")
    value = (
        2**60,
        -0.0,
        math.nan,
        -math.inf,
        Decimal("1.500"),
        b"\x00\xff",
        -(2**70),
        -1,
        ipaddress.ip_address("::ffff:1.2.3.4"),
        {"street": "Elm", "city": None, "zip": 7},
        uuid.UUID(int=1),
    )
    expected = [
        str(2**60),
        "-0.0",
        "NaN",
        "-Infinity",
        "1.500",
        "0x00ff",
        str(-(2**70)),
        -1,
        str(ipaddress.ip_address("::ffff:1.2.3.4")),  # Python's text for it changed in 3.13
        {"street": "Elm", "city": None, "zip": 7},
        "00000000-0000-0000-0000-000000000001",
    ]
    for target, features in TARGETS:
        assert json.loads(mappings.for_target(target, ctype, features).to_target(encode(ctype, value))) == expected


@target_params
@few
@given(
    st.lists(
        st.tuples(st.text() | st.none(), I32 | st.none(), st.sampled_from([Decimal("1.50"), Decimal(-3)]) | st.none()),
        max_size=4,
    )
)
def test_list_of_tuples(mappings: TypeMappings, target: str, features: Any, value: list[tuple[Any, ...]]) -> None:
    type_text = "list<frozen<tuple<text, int, decimal>>>"
    if target in POSTGRES_LIKE and any(v[0] is not None and "\x00" in v[0] for v in value):
        with pytest.raises(ValueMappingError):
            convert(mappings, target, features, type_text, value)
        return
    result = convert(mappings, target, features, type_text, value)
    expected = [[a, b, None if c is None else str(c)] for a, b, c in value]
    if target in POSTGRES_LIKE:
        assert json.loads(result) == expected
    elif not features.array_of_tuples:  # old ClickHouse: each tuple is JSON text inside the array
        assert [json.loads(item) for item in result] == expected
    else:
        assert result == [tuple(x) for x in expected]


def test_empty_element_in_a_clickhouse_array_is_refused(mappings: TypeMappings) -> None:
    data = (2).to_bytes(4, "big") + (4).to_bytes(4, "big") + (5).to_bytes(4, "big") + (0).to_bytes(4, "big")
    assert decode(t("list<int>"), data) == [5, EMPTY]
    assert mappings.postgres(t("list<int>")).to_target(data) == [5, None]
    with pytest.raises(ValueMappingError, match="element 1"):
        mappings.clickhouse(t("list<int>"), OLD).to_target(data)


# -- errors name the keyspace, the table and the column ------------------------------------------


def test_convert_cell_names_keyspace_table_and_column(mappings: TypeMappings) -> None:
    mapping = mappings.postgres(t("date"))
    with pytest.raises(ValueMappingError) as info:
        convert_cell(mapping, "types", "all_types", "a_date", encode(t("date"), -(2**31)))
    message = str(info.value)
    assert "types.all_types" in message and "a_date" in message and "date" in message
    assert (info.value.keyspace, info.value.table, info.value.column) == ("types", "all_types", "a_date")
    assert isinstance(info.value, CdcfastError)
    assert convert_cell(mapping, "types", "all_types", "a_date", None) is None
    assert convert_cell(mapping, "types", "all_types", "a_date", encode(t("date"), 0)) == dt.date(1970, 1, 1)


def test_convert_cell_reports_undecodable_bytes(mappings: TypeMappings) -> None:
    with pytest.raises(ValueMappingError, match="shop.users.*age"):
        convert_cell(mappings.postgres(t("int")), "shop", "users", "age", b"\x01\x02\x03")


# -- real values: every cell of types.all_types --------------------------------------------------


@cache
def all_types_schema(corpus: str) -> dict[str, CqlType]:
    path = CORPUS_ROOT / corpus / "schema" / "021.json"
    if not path.exists():
        pytest.skip(f"corpus {corpus} is not available")
    return {c: ctype for ks, table, c, ctype in corpus_columns(path) if (ks, table) == ("types", "all_types")}


def assemble(ctype: CqlType, cells: list[dict[str, Any]]) -> Any:
    """The value of a multi-cell column from its element cells (in stored order)."""
    live = [c for c in cells if "value" in c and not c.get("tombstone")]
    if ctype.kind == "list":
        return [decode(ctype.params[0], bytes.fromhex(c["value"])) for c in live]
    if ctype.kind == "set":
        return [decode(ctype.params[0], bytes.fromhex(c["path"][0])) for c in live]
    if ctype.kind == "map":
        return [
            (decode(ctype.params[0], bytes.fromhex(c["path"][0])), decode(ctype.params[1], bytes.fromhex(c["value"])))
            for c in live
        ]
    fields: dict[str, Any] = {name: None for name in ctype.field_names}
    for c in live:
        index = int(c["path"][0], 16)
        fields[ctype.field_names[index]] = decode(ctype.params[index], bytes.fromhex(c["value"]))
    return fields


def all_types_rows(corpus: str) -> Iterator[dict[str, bytes]]:
    """Every row (static rows included) of types.all_types in the reference decoding: column -> the
    serialized value (multi-cell columns assembled from their element cells and serialized whole)."""
    columns = all_types_schema(corpus)
    with gzip.open(CORPUS_ROOT / corpus / "reference-decoding.jsonl.gz", "rt") as handle:
        for line in handle:
            update = json.loads(line)
            if (update["keyspace"], update["table"]) != ("types", "all_types"):
                continue
            rows = ([update["static"]] if "static" in update else []) + update.get("rows", [])
            for row in rows:
                if row.get("kind") != "row":
                    continue
                simple: dict[str, bytes] = {}
                complex_cells: dict[str, list[dict[str, Any]]] = {}
                for cell in row.get("cells", []):
                    if "complex_deletion" in cell:
                        complex_cells.setdefault(cell["col"], [])
                    elif "path" in cell:
                        complex_cells.setdefault(cell["col"], []).append(cell)
                    elif "value" in cell and not cell.get("tombstone"):
                        simple[cell["col"]] = bytes.fromhex(cell["value"])
                for name, cells in complex_cells.items():
                    simple[name] = encode(columns[name], assemble(columns[name], cells))
                if simple:
                    yield simple


def documented_unmappable(target: str, features: ClickHouseFeatures | None, ctype: CqlType, value: Any) -> bool:
    """What docs/type-mapping.md lists as refused (ValueMappingError), decided independently here."""
    pg = target in POSTGRES_LIKE

    def walk(ct: CqlType, v: Any, nested: bool) -> bool:
        if v is None or v is EMPTY:
            return nested and not pg  # an EMPTY collection element: ClickHouse arrays and maps refuse it
        k = ct.kind
        if k in ("text", "ascii"):
            return pg and "\x00" in v
        # types.all_types holds dates, timestamps and varints as columns only, never inside collections
        if k == "date":
            low, high = PG_DAYS if pg else CH_DAYS
            return (pg or features is NEW) and not low <= v <= high
        if k == "timestamp":
            low, high = PG_MILLIS if pg else CH_MILLIS
            return (pg or features is NEW) and not low <= v <= high
        if k == "varint":
            return not pg and not (-(10**38) < v < 10**38 if features is OLD else -(2**255) <= v < 2**255)
        if k in ("list", "set", "vector"):
            return any(walk(ct.params[0], x, True) for x in v)
        if k == "map":
            return any(walk(ct.params[0], a, True) or walk(ct.params[1], b, True) for a, b in v)
        # null fields are fine everywhere: JSON null, or Nullable tuple fields
        if k == "tuple":
            return any(walk(p, x, True) for p, x in zip(ct.params, v) if x is not None and x is not EMPTY)
        if k == "udt":
            return any(walk(p, v[n], True) for p, n in zip(ct.params, ct.field_names) if v[n] not in (None, EMPTY))
        return False

    return walk(ctype, value, False)


@pytest.mark.parametrize(("target", "features"), TARGETS, ids=TARGET_IDS)
def test_every_all_types_value_converts(mappings: TypeMappings, target: str, features: Any) -> None:
    columns = all_types_schema(REAL_VALUES_CORPUS)
    converted = refused = 0
    for row in all_types_rows(REAL_VALUES_CORPUS):
        for name, data in row.items():
            ctype = columns[name]
            mapping = mappings.for_target(target, ctype, features)
            expect_refusal = documented_unmappable(target, features, ctype, decode(ctype, data))
            try:
                convert_cell(mapping, "types", "all_types", name, data)
            except ValueMappingError as exc:
                assert expect_refusal, f"{name} ({ctype}): {exc}"
                assert "types.all_types" in str(exc) and name in str(exc)
                refused += 1
                continue
            assert not expect_refusal, f"{name} ({ctype}) {decode(ctype, data)!r} should have been refused"
            converted += 1
    assert converted > 10_000
    if features is NEW:
        assert refused > 0  # dates before 1900: Date32 cannot hold them


# -- round trip through the real servers ---------------------------------------------------------


def _services() -> Any:
    module = pytest.importorskip("support.services")
    return module.ensure_services


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def canon(value: Any) -> Any:
    """Comparable form: floats by bits, decimals by value and exponent, JSON text parsed."""
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else struct.pack(">d", value))
    if isinstance(value, Decimal):
        return ("decimal", value.as_tuple())
    if isinstance(value, list | tuple):
        return [canon(v) for v in value]
    if isinstance(value, dict):
        return {canon(k): canon(v) for k, v in value.items()}
    return value


def rows_for(
    target: str, features: ClickHouseFeatures | None, mappings: TypeMappings
) -> tuple[list[str], list[TargetType], list[list[Any]]]:
    columns = all_types_schema(REAL_VALUES_CORPUS)
    names = sorted(columns)
    types = [mappings.for_target(target, columns[n], features) for n in names]
    rows: list[list[Any]] = []
    for row in all_types_rows(REAL_VALUES_CORPUS):
        record: list[Any] = [len(rows)]
        for name, mapping in zip(names, types):
            data = row.get(name)
            try:
                value = None if data is None else convert_cell(mapping, "types", "all_types", name, data)
            except ValueMappingError:
                value = None  # documented refusals (checked above) are left out
            if value is None and target == "clickhouse" and mapping.nullable_sql == mapping.sql:
                value = {} if mapping.sql.startswith("Map(") else []  # Array/Map columns cannot be NULL
            record.append(value)
        rows.append(record)
    return names, types, rows


@pytest.mark.parametrize("target", POSTGRES_LIKE)
def test_round_trip_through_postgres(mappings: TypeMappings, target: str) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    dsn = _services()([target])[target]
    names, types, rows = rows_for(target, None, mappings)
    table = "cdcfast_typemap_all_types"

    async def run() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            columns = ", ".join(f"{quote(n)} {m.sql}" for n, m in zip(names, types))
            await conn.execute(f"CREATE TABLE {table} (row_id integer PRIMARY KEY, {columns})")
            await conn.copy_records_to_table(table, records=rows, columns=["row_id", *names])
            return list(await conn.fetch(f"SELECT * FROM {table} ORDER BY row_id"))
        finally:
            await conn.close()

    back = asyncio.run(run())
    assert len(back) == len(rows) > 500
    for record, sent in zip(back, rows):
        for i, (name, mapping) in enumerate(zip(names, types), start=1):
            got, want = record[name], sent[i]
            if mapping.sql == "jsonb" and want is not None:
                got, want = json.loads(got), json.loads(want)
            elif mapping.sql == "jsonb[]" and want is not None:
                got, want = [json.loads(x) for x in got], [json.loads(x) for x in want]
            assert canon(got) == canon(want), (name, mapping.sql, got, want)


def test_round_trip_through_clickhouse(mappings: TypeMappings) -> None:
    clickhouse_driver = pytest.importorskip("clickhouse_driver")
    dsn = _services()(["clickhouse"])["clickhouse"]
    client = clickhouse_driver.Client.from_url(dsn)
    version = client.execute("SELECT version()")[0][0]
    features = ClickHouseFeatures.from_version(version)
    names, types, rows = rows_for("clickhouse", features, mappings)
    table = "cdcfast_typemap_all_types"
    client.execute(f"DROP TABLE IF EXISTS {table}")
    columns = ", ".join(f"{quote(n)} {m.nullable_sql}" for n, m in zip(names, types))
    client.execute(f"CREATE TABLE {table} (row_id Int32, {columns}) ENGINE = MergeTree ORDER BY row_id")
    columnar = [list(col) for col in zip(*rows)]
    client.execute(f"INSERT INTO {table} (row_id, {', '.join(map(quote, names))}) VALUES", columnar, columnar=True)
    back = client.execute(f"SELECT * FROM {table} ORDER BY row_id", settings={"strings_as_bytes": True})
    client.execute(f"DROP TABLE {table}")

    def as_sent(value: Any) -> Any:  # read with strings_as_bytes: every String comes back as bytes
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, list | tuple):
            return [as_sent(v) for v in value]
        if isinstance(value, dict):
            return {as_sent(k): as_sent(v) for k, v in value.items()}
        return value

    def as_read(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [as_read(v) for v in value]
        if isinstance(value, dict):
            return {as_read(k): as_read(v) for k, v in value.items()}
        return value

    assert len(back) == len(rows) > 500
    for record, sent in zip(back, rows):
        assert record[0] == sent[0]
        for i, (name, mapping) in enumerate(zip(names, types), start=1):
            got, want = as_read(record[i]), as_sent(sent[i])
            if mapping.sql.startswith("Decimal"):
                got, want = (None if got is None else int(got)), want
            assert canon(got) == canon(want), (name, mapping.sql, got, want)
