"""Value codecs against real Cassandra data (``../shared/corpus``).

The reference decoding gives the serialized bytes of every cell with the column's CQL type; the
workload log (``ops.jsonl.gz``) gives the values that were bound when the cells were written. Every
expected value below comes from ``ops.jsonl.gz`` (read at test time, or copied from it by hand
where a literal is written out), never from the codecs under test.

``ops.jsonl.gz`` tags the values JSON cannot carry: ``{"blob": hex}``, ``{"decimal": "text"}``,
``{"duration": [months, days, nanos]}``, ``{"date_days": n}``, ``{"time_ns": n}``,
``{"timestamp_ms": n}``, ``{"uuid": "text"}`` (uuid and timeuuid), ``{"set": [...]}``,
``{"map": [[k, v], ...]}``, ``{"udt": {field: value}}``; tuples and lists are JSON arrays, inet a
string, varint a JSON integer of any size, doubles may be ``Infinity``/``-Infinity``/``-0.0``. A line
``{"seq": n, "rejected": "..."}`` marks statement ``n`` as refused by the server.
"""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import ipaddress
import json
import re
import struct
import uuid
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS_ROOT  # noqa: E402 (the shared corpora, wherever CI lays them)

from cdcfast.commitlog.cqltypes import CqlType, parse_cql_type
from cdcfast.values import (
    CounterContext,
    Duration,
    decode,
    decode_cell_path,
    decode_cell_value,
    encode,
)

CORPORA = (
    sorted(p.parent.name for p in CORPUS_ROOT.glob("*/reference-decoding.jsonl.gz")) if CORPUS_ROOT.is_dir() else []
)
USER_KEYSPACES = ("shop", "clinic", "telemetry", "types")


def corpus_path(name: str) -> Path:
    path = CORPUS_ROOT / name
    if not (path / "reference-decoding.jsonl.gz").exists():
        pytest.skip(f"corpus {name} is not available")
    return path


# -- corpus readers -------------------------------------------------------------------------------


@cache
def final_schema(name: str) -> dict[str, Any]:
    files = sorted((corpus_path(name) / "schema").glob("*.json"), key=lambda p: int(p.stem))
    document: dict[str, Any] = json.loads(files[-1].read_text())
    return document


def udts_of(name: str, keyspace: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    return {
        row["type_name"]: (tuple(row["field_names"]), tuple(row["field_types"]))
        for row in final_schema(name)["types"]
        if row["keyspace_name"] == keyspace
    }


@cache
def parse_type(name: str, keyspace: str, text: str) -> CqlType:
    return parse_cql_type(text, udts_of(name, keyspace))


def key_types(name: str, keyspace: str, table: str) -> tuple[list[CqlType], list[CqlType]]:
    """Partition key and clustering column types, in key order."""
    rows = [c for c in final_schema(name)["columns"] if c["keyspace_name"] == keyspace and c["table_name"] == table]

    def of(kind: str) -> list[CqlType]:
        chosen = sorted((c for c in rows if c["kind"] == kind), key=lambda c: c["position"])
        return [parse_type(name, keyspace, c["type"]) for c in chosen]

    return of("partition_key"), of("clustering")


def reference(name: str, keyspace: str | None = None, table: str | None = None) -> Iterator[dict[str, Any]]:
    """The reference decoding's partition updates, optionally of one keyspace / table."""
    with gzip.open(corpus_path(name) / "reference-decoding.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            if keyspace is not None and f'"keyspace":"{keyspace}"' not in line:
                continue
            update = json.loads(line)
            if keyspace is not None and update["keyspace"] != keyspace:
                continue
            if table is not None and update["table"] != table:
                continue
            yield update


def rows_of(update: dict[str, Any]) -> Iterator[tuple[bool, dict[str, Any]]]:
    if "static" in update:
        yield True, update["static"]
    for row in update["rows"]:
        if row["kind"] == "row":
            yield False, row


def ops(name: str) -> list[dict[str, Any]]:
    """Executed statements, in order, without the ones the server rejected."""
    with gzip.open(corpus_path(name) / "ops.jsonl.gz", "rt", encoding="utf-8") as lines:
        entries = [json.loads(line) for line in lines]
    rejected = {e["seq"] for e in entries if "rejected" in e}
    return [e for e in entries if "cql" in e and e["seq"] not in rejected]


def split_partition_key(types: list[CqlType], raw: bytes) -> list[bytes]:
    """Partition key components (format reference §4.3.1): composite keys are u16 len, bytes, 0x00."""
    if len(types) == 1:
        return [raw]
    parts, offset = [], 0
    for _ in types:
        length = int.from_bytes(raw[offset : offset + 2], "big")
        parts.append(raw[offset + 2 : offset + 2 + length])
        assert raw[offset + 2 + length] == 0
        offset += 3 + length
    assert offset == len(raw)
    return parts


def contains_udt(ctype: CqlType) -> bool:
    return ctype.kind == "udt" or any(contains_udt(p) for p in ctype.params)


def canon(value: Any) -> Any:
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))
    if isinstance(value, Decimal):
        return ("decimal", value.as_tuple())
    if isinstance(value, bool | int):
        return (type(value).__name__, value)
    if isinstance(value, list):
        return ["list", *(canon(v) for v in value)]
    if isinstance(value, tuple):
        return ("tuple", *(canon(v) for v in value))
    if isinstance(value, dict):
        return ("dict", [(k, canon(v)) for k, v in value.items()])
    return value


def float32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


def from_ops(ctype: CqlType, param: Any) -> Any:
    """A bound value from ops.jsonl.gz, in the shape ``decode`` returns (the test's own converter)."""
    if param is None:
        return None
    k = ctype.kind
    if k in ("ascii", "text", "boolean", "int", "bigint", "smallint", "tinyint", "varint", "double"):
        return float(param) if k == "double" else param
    if k == "float":
        return float32(float(param))
    simple_tags = {"date": "date_days", "time": "time_ns", "timestamp": "timestamp_ms"}
    if k in simple_tags:
        return param[simple_tags[k]]
    if k == "blob":
        return bytes.fromhex(param["blob"])
    if k == "decimal":
        return Decimal(param["decimal"])
    if k == "duration":
        return Duration(*param["duration"])
    if k in ("uuid", "timeuuid"):
        return uuid.UUID(param["uuid"])
    if k == "inet":
        return ipaddress.ip_address(param)
    if k == "list":
        return [from_ops(ctype.params[0], v) for v in param]
    if k == "set":
        # stored sorted by the element comparator; for int and text that is Python's order
        return sorted(from_ops(ctype.params[0], v) for v in param["set"])
    if k == "map":
        key_type, value_type = ctype.params
        return sorted((from_ops(key_type, kk), from_ops(value_type, v)) for kk, v in param["map"])
    if k == "tuple":
        return tuple(from_ops(p, v) for p, v in zip(ctype.params, param))
    if k == "udt":
        fields = param["udt"]
        return {n: from_ops(p, fields.get(n)) for n, p in zip(ctype.field_names, ctype.params)}
    if k == "vector":
        return [from_ops(ctype.params[0], v) for v in param]
    raise AssertionError(f"no converter for {ctype}")


# -- every cell decodes -------------------------------------------------------------------------


def decode_every_cell(
    name: str, keyspace: str | None, table: str | None
) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Decode every key, clustering value, cell path and cell value.

    Returns cells per CQL type of regular rows, and of static rows.
    """
    per_type: collections.Counter[str] = collections.Counter()
    static_per_type: collections.Counter[str] = collections.Counter()
    for update in reference(name, keyspace, table):
        ks = update["keyspace"]
        pk_types, ck_types = key_types(name, ks, update["table"])
        if pk_types:  # system tables are not in the user schema
            raw_pk = bytes.fromhex(update["pk"])
            for ptype, part in zip(pk_types, split_partition_key(pk_types, raw_pk)):
                decode(ptype, part)
        for is_static, row in rows_of(update):
            if not is_static and ck_types:
                for ctype, hex_value in zip(ck_types, row["clustering"]):
                    if hex_value is not None:
                        decode(ctype, bytes.fromhex(hex_value))
            for cell in row["cells"]:
                if "type" not in cell:  # complex deletion
                    continue
                ctype = parse_type(name, ks, cell["type"])
                raw = bytes.fromhex(cell["value"])
                where = f"{ks}.{update['table']}.{cell['col']} ({cell['type']}) value {cell['value']}"
                if cell.get("tombstone"):
                    assert raw == b"", where
                elif "path" in cell:
                    (path_hex,) = cell["path"]
                    path = bytes.fromhex(path_hex)
                    key = decode_cell_path(ctype, path)
                    value = decode_cell_value(ctype, raw, path=path)
                    if ctype.kind == "list":
                        assert isinstance(key, uuid.UUID) and key.version == 1, where
                    if ctype.kind == "set":
                        assert value is None, where
                    if ctype.kind in ("set", "map"):
                        assert encode(ctype.params[0], key) == path, where
                    if ctype.kind in ("list", "map"):
                        assert encode(ctype.params[-1], value) == raw, where
                elif cell.get("counter"):
                    value = decode(ctype, raw)
                    assert isinstance(value, CounterContext), where
                    assert encode(ctype, value) == raw, where
                else:
                    value = decode(ctype, raw)
                    again = encode(ctype, value)
                    if contains_udt(ctype):
                        # values written before ALTER TYPE ADD lack the new trailing fields
                        assert canon(decode(ctype, again)) == canon(value), where
                    else:
                        assert again == raw, where
                (static_per_type if is_static else per_type)[cell["type"]] += 1
    return per_type, static_per_type


@pytest.mark.parametrize("name", CORPORA)
def test_every_all_types_cell_decodes(name: str) -> None:
    per_type, static_per_type = decode_every_cell(name, "types", "all_types")
    columns = [
        c for c in final_schema(name)["columns"] if c["keyspace_name"] == "types" and c["table_name"] == "all_types"
    ]
    data_types = {parse_type(name, "types", c["type"]).cql() for c in columns if c["kind"] in ("regular", "static")}
    assert set(per_type) | set(static_per_type) == data_types  # every column type of the table was met
    # reference-summary.json counts the cells of regular rows only (static cells are left out)
    summary = json.loads((corpus_path(name) / "reference-summary.json").read_text())
    assert sum(per_type.values()) == summary["tables"]["types.all_types"]["cells"]
    assert static_per_type["text"] > 0


@pytest.mark.parametrize("name", CORPORA)
def test_every_cell_of_every_keyspace_decodes(name: str) -> None:
    per_type, static_per_type = decode_every_cell(name, None, None)
    # reference-counts.txt counts every cell, static ones included
    counts = (corpus_path(name) / "reference-counts.txt").read_text()
    assert f" cells={sum(per_type.values()) + sum(static_per_type.values())} " in f" {counts} "


# -- known values from ops.jsonl.gz ----------------------------------------------------------------


def statement_params(statement: dict[str, Any]) -> dict[str, Any]:
    """``INSERT INTO t (a, b, ...) VALUES (%s, ...) USING TIMESTAMP %s`` -> {column: bound value}."""
    cql = statement["cql"]
    names = [c.strip() for c in cql[cql.index("(") + 1 : cql.index(")")].split(",")]
    assert len(statement["params"]) == len(names) + 1
    return dict(zip(names, statement["params"]))


def first_all_types_insert(name: str) -> dict[str, Any]:
    for statement in ops(name):
        if statement["cql"].startswith("INSERT INTO types.all_types ("):
            return statement
    raise AssertionError("no INSERT into types.all_types")


def test_first_all_types_row_matches_ops() -> None:
    name = "c50-v7-plain"
    statement = first_all_types_insert(name)
    bound = statement_params(statement)
    ts = statement["ts"]
    assert statement["params"][-1] == ts  # USING TIMESTAMP %s
    update = next(reference(name, "types", "all_types"))
    row = update["rows"][0]
    cells = {c["col"]: c for c in row["cells"] if "type" in c and "path" not in c and c["ts"] == ts}

    def cell_value(column: str) -> Any:
        cell = cells[column]
        return decode(parse_type(name, "types", cell["type"]), bytes.fromhex(cell["value"]))

    int_type, text_type, bigint_type = CqlType("int"), CqlType("text"), CqlType("bigint")
    assert decode(int_type, bytes.fromhex(update["pk"])) == bound["id"]
    assert decode(text_type, bytes.fromhex(row["clustering"][0])) == bound["ck1"]
    assert decode(bigint_type, bytes.fromhex(row["clustering"][1])) == bound["ck2"]

    decimal = cell_value("a_decimal")
    assert decimal == Decimal(bound["a_decimal"]["decimal"])
    assert decimal.as_tuple() == Decimal(bound["a_decimal"]["decimal"]).as_tuple()  # same scale too
    assert cell_value("a_varint") == bound["a_varint"]
    assert cell_value("a_duration") == Duration(*bound["a_duration"]["duration"])
    assert cell_value("a_date") == bound["a_date"]["date_days"]
    assert cell_value("a_time") == bound["a_time"]["time_ns"]
    assert cell_value("a_timestamp") == bound["a_timestamp"]["timestamp_ms"]
    assert cell_value("a_inet") == ipaddress.ip_address(bound["a_inet"])
    assert struct.pack(">d", cell_value("a_double")) == struct.pack(">d", bound["a_double"])
    assert cell_value("a_float") == float32(bound["a_float"])
    assert cell_value("a_uuid") == uuid.UUID(bound["a_uuid"]["uuid"])
    assert cell_value("a_timeuuid") == uuid.UUID(bound["a_timeuuid"]["uuid"])
    assert cell_value("a_blob") == bytes.fromhex(bound["a_blob"]["blob"])
    for column in ("a_ascii", "a_bigint", "a_boolean", "a_int", "a_smallint", "a_text", "a_tinyint", "a_varchar"):
        assert cell_value(column) == bound[column], column


# Copied by hand from the first INSERT into types.all_types of c50-v7-plain/ops.jsonl.gz (seq 14315)
# and the matching cells of reference-decoding.jsonl.gz: fixed vectors that need no corpus reader.
PINNED = [
    ("decimal", "0000000aff2381929106f91c79", Decimal("-1588825685.8801496967")),
    ("varint", "010000000000000007", 18446744073709551623),
    ("duration", "2076fb6f0a6d4134", Duration(16, 59, 1887725592730)),
    ("date", "7fff6fa3", -36957),
    ("time", "0000289252b2af0a", 44608917778186),
    ("timestamp", "000001ec0e054a9e", 2113359137438),
    ("inet", "00000000000000000000000000000001", ipaddress.IPv6Address("::1")),
    ("double", "fff0000000000000", float("-inf")),
    ("float", "40500000", 3.25),
    ("smallint", "bf93", -16493),
    ("tinyint", "20", 32),
    ("bigint", "220d62967456e101", 2453725770323255553),
    ("timeuuid", "d5b661d0e6a411f08f43486fd01f65b1", uuid.UUID("d5b661d0-e6a4-11f0-8f43-486fd01f65b1")),
    ("text", "", ""),
    ("frozen<list<text>>", "00000001000000044f736c6f", ["Oslo"]),
    ("frozen<set<int>>", "000000010000000400000024", [36]),
    (
        "frozen<map<int, text>>",
        "000000030000000400000000000000054c61676f730000000400000004000000044f736c6f0000000400000007000000064c6973626f6e",
        [(0, "Lagos"), (4, "Oslo"), (7, "Lisbon")],
    ),
    (
        "frozen<map<text, frozen<list<int>>>>",
        "00000002000000026b300000000c000000010000000400000003000000026b31000000140000000200000004000000080000000400000009",
        [("k0", [3]), ("k1", [8, 9])],
    ),
    (
        "frozen<tuple<int, text, double>>",
        "00000004000000030000000170000000083fe8f5e0701df4a4",
        (3, "p", 0.7800142469201501),
    ),
    ("frozen<addr>", "000000034f616b000000054f73616b61ffffffff", {"street": "Oak", "city": "Osaka", "zip": None}),
]


@pytest.mark.parametrize(("type_text", "hex_bytes", "expected"), PINNED)
def test_pinned_values_from_the_corpus(type_text: str, hex_bytes: str, expected: Any) -> None:
    ctype = parse_cql_type(type_text, {"addr": (("street", "city", "zip"), ("text", "text", "int"))})
    raw = bytes.fromhex(hex_bytes)
    assert canon(decode(ctype, raw)) == canon(expected)
    assert encode(ctype, expected) == raw


# -- every all_types statement against its cells -------------------------------------------------

RowKey = tuple[Any, Any, Any]
VECTOR_RE = re.compile(
    r"UPDATE types\.all_types USING TIMESTAMP (\d+) SET a_vector = \[([^\]]*)\] "
    r"WHERE id = (-?\d+) AND ck1 = '((?:[^']|'')*)' AND ck2 = (-?\d+)$"
)
ELEMENT_UPDATE = (
    "UPDATE types.all_types USING TIMESTAMP %s SET udt_nf.city = %s, m_text_int[%s] = %s, l_int = l_int + %s "
    "WHERE id = %s AND ck1 = %s AND ck2 = %s"
)
STATIC_UPDATE = "UPDATE types.all_types USING TIMESTAMP %s SET st = %s WHERE id = %s"


def index_all_types(name: str) -> dict[tuple[RowKey, str, int], list[tuple[Any, Any, bool]]]:
    """(row key, column, write timestamp) -> [(decoded path or None, decoded value, tombstone)]."""
    pk_types, ck_types = key_types(name, "types", "all_types")
    index: dict[tuple[RowKey, str, int], list[tuple[Any, Any, bool]]] = collections.defaultdict(list)
    for update in reference(name, "types", "all_types"):
        pk = decode(pk_types[0], bytes.fromhex(update["pk"]))
        for is_static, row in rows_of(update):
            key: RowKey = (
                (pk, None, None)
                if is_static
                else (pk, *(decode(t, bytes.fromhex(v)) for t, v in zip(ck_types, row["clustering"])))
            )
            for cell in row["cells"]:
                if "type" not in cell:
                    continue
                ctype = parse_type(name, "types", cell["type"])
                raw = bytes.fromhex(cell["value"])
                tombstone = bool(cell.get("tombstone"))
                if "path" in cell:
                    path = bytes.fromhex(cell["path"][0])
                    entry = (
                        decode_cell_path(ctype, path),
                        None if tombstone else decode_cell_value(ctype, raw, path=path),
                    )
                else:
                    entry = (None, None if tombstone else decode(ctype, raw))
                index[(key, cell["col"], cell["ts"])].append((*entry, tombstone))
    return index


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def logged_millis(millis: int) -> int:
    """How the workload logged a bound ``datetime`` in ops.jsonl.gz: ``int(d.timestamp() * 1000)``.

    The float product truncates, so for about 1% of values the log is 1 ms short of the datetime
    the driver sent (the driver's own conversion is exact). Every ``timestamp_ms`` mismatch in
    the corpora is of exactly this kind.
    """
    return int((EPOCH + dt.timedelta(milliseconds=millis)).timestamp() * 1000)


def check_column(
    index: dict[tuple[RowKey, str, int], list[tuple[Any, Any, bool]]],
    row: RowKey,
    column: str,
    ts: int,
    ctype: CqlType,
    param: Any,
    artefacts: collections.Counter[str],
) -> None:
    cells = index.get((row, column, ts), [])
    where = f"{row} {column} @{ts}: {param!r}"
    expected = from_ops(ctype, param)
    if not ctype.is_complex:
        assert len(cells) == 1, where
        (_, value, tombstone) = cells[0]
        assert not tombstone, where
        if ctype.kind == "timestamp" and value != expected and logged_millis(value) == expected:
            artefacts[column] += 1
            return
        assert canon(value) == canon(expected), where
        return
    live = [(path, value) for path, value, tombstone in cells if not tombstone]
    if ctype.kind == "list":
        assert [v for _, v in live] == expected, where
    elif ctype.kind == "set":
        assert [p for p, _ in live] == expected, where
    elif ctype.kind == "map":
        assert live == expected, where
    else:  # non-frozen UDT: one cell per non-null field
        assert dict(live) == {k: v for k, v in expected.items() if v is not None}, where


def column_types(name: str) -> dict[str, CqlType]:
    return {
        c["column_name"]: parse_type(name, "types", c["type"])
        for c in final_schema(name)["columns"]
        if c["keyspace_name"] == "types" and c["table_name"] == "all_types"
    }


@pytest.mark.parametrize("name", CORPORA)
def test_all_types_statements_match_their_cells(name: str) -> None:
    index = index_all_types(name)
    types = column_types(name)
    checked: collections.Counter[str] = collections.Counter()
    artefacts: collections.Counter[str] = collections.Counter()
    statements = ops(name)
    for statement in statements:
        cql = statement["cql"]
        if cql.startswith("INSERT INTO types.all_types ("):
            bound = statement_params(statement)
            ts = statement["params"][-1]
            row = (bound.pop("id"), bound.pop("ck1"), bound.pop("ck2"))
            for column, param in bound.items():
                target = (row[0], None, None) if column == "st" else row
                check_column(index, target, column, ts, types[column], param, artefacts)
                checked[column] += 1
        elif cql == ELEMENT_UPDATE:
            ts, city, map_key, map_value, appended, *key = statement["params"]
            row = tuple(key)
            assert [(p, v) for p, v, _ in index[(row, "udt_nf", ts)]] == [("city", city)]
            assert [(p, v) for p, v, _ in index[(row, "m_text_int", ts)]] == [(map_key, map_value)]
            assert [v for _, v, _ in index[(row, "l_int", ts)]] == appended
            checked["element update"] += 1
        elif cql == STATIC_UPDATE:
            ts, value, pk = statement["params"]
            check_column(index, (pk, None, None), "st", ts, types["st"], value, artefacts)
            checked["static update"] += 1
        elif match := VECTOR_RE.match(cql):
            ts_text, literal, pk, ck1, ck2 = match.groups()
            expected = [float32(float(x)) for x in literal.split(",")]
            row = (int(pk), ck1.replace("''", "'"), int(ck2))
            check_column(index, row, "a_vector", int(ts_text), types["a_vector"], expected, artefacts)
            checked["a_vector"] += 1
        elif "all_types" in cql:
            assert cql.startswith(("CREATE TABLE", "DELETE FROM")), cql
    inserts = sum(1 for s in statements if s["cql"].startswith("INSERT INTO types.all_types ("))
    assert checked["a_ascii"] > inserts // 2
    for column in types.keys() - {"id", "ck1", "ck2"}:
        assert checked[column] > 0, column
    assert set(artefacts) <= {"a_timestamp"}
    assert artefacts["a_timestamp"] <= checked["a_timestamp"] // 50


# -- counters -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORPORA)
def test_counter_cells_hold_the_running_totals_of_ops(name: str) -> None:
    """Each logged counter cell is the leader's cumulative shard (reference §6.5): on one node, the
    running sum of the deltas bound in ops.jsonl.gz."""
    expected: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    totals: collections.Counter[tuple[str, str]] = collections.Counter()
    pattern = re.compile(r"UPDATE shop\.page_views SET (.*) WHERE page = %s$")
    for statement in ops(name):
        match = pattern.match(statement["cql"])
        if not match:
            assert not statement["cql"].startswith("UPDATE shop.page_views"), statement["cql"]
            continue
        columns = [part.split("=")[0].strip() for part in match.group(1).split(",")]
        *deltas, page = statement["params"]
        for column, delta in zip(columns, deltas):
            totals[(page, column)] += delta
            expected[(page, column)].append(totals[(page, column)])
    got: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for update in reference(name, "shop", "page_views"):
        page = decode(CqlType("text"), bytes.fromhex(update["pk"]))
        for _, row in rows_of(update):
            for cell in row["cells"]:
                context = decode(CqlType("counter"), bytes.fromhex(cell["value"]))
                assert len(context.shards) == 1 and context.global_indexes == {0}
                got[(page, cell["col"])].append(context.total())
    assert got == expected
