"""The per-table encoders give exactly what the generic functions give, on every value of every corpus."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from conftest import Corpus
from support.replay import cdc_events

from cdcfast.commitlog.cqltypes import CqlType, parse_cql_type
from cdcfast.commitlog.schema import ColumnDef, TableDef
from cdcfast.events import SET, ChangeEvent
from cdcfast.sinks.changelog import change_row
from cdcfast.sinks.encode import ColumnCodec, TableCodec, fast_decoder, fast_target, raw_json, replace_frozen
from cdcfast.sinks.poison import screen
from cdcfast.sinks.state import frozen_bytes
from cdcfast.transform.typemap import ClickHouseFeatures, convert_cell, json_value, load_mappings
from cdcfast.values import decode

MAPPINGS = load_mappings()
TARGETS = {
    "postgres": lambda ctype: MAPPINGS.postgres(ctype),
    "clickhouse": lambda ctype: MAPPINGS.clickhouse(ctype, ClickHouseFeatures.from_version("18.16")),
    "clickhouse-24": lambda ctype: MAPPINGS.clickhouse(ctype, ClickHouseFeatures.from_version("24.8")),
}


def same(a: Any, b: Any) -> bool:
    """Equal, of the same type, NaN equal to NaN, decimals with the same digits and exponent."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def outcome(function: Any, *args: Any) -> Any:
    try:
        return ("ok", function(*args))
    except Exception as exc:  # noqa: BLE001 - the error is part of the outcome
        return ("error", type(exc).__name__, str(exc))


def agree(mine: Any, generic: Any) -> bool:
    if mine[0] != generic[0]:
        return False
    return mine[1:] == generic[1:] if mine[0] == "error" else same(mine[1], generic[1])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_encoders_equal_the_generic_functions_on_every_corpus_value(corpus: Corpus, target: str) -> None:
    schema, events = cdc_events(corpus)
    checked = 0
    for table in schema.cdc_tables():
        columns = table.partition_key + table.clustering + list(table.columns.values())
        targets = {c.name: TARGETS[target](replace_frozen(c.type)) for c in columns}
        codec = TableCodec(table, targets)
        mine = [e for e in events if (e.keyspace, e.table) == (table.keyspace, table.name)]
        for event in mine:
            generic = change_row(table, event, "node1")
            row = codec.change_row(event, "node1")
            assert row[:6] == generic[:6] and row[8] == generic[8]
            for got, want in ((row.key, generic.key), (row.cells, generic.cells), (row.range, generic.range)):
                assert got == (None if want is None else want.encode()), (table.qualified_name, event)
            keys = zip(table.partition_key + table.clustering, event.partition_key + event.clustering)
            values = [(c, raw) for c, raw in keys if raw is not None]
            for cell in event.cells:
                c = table.columns.get(cell.column)
                if c is None or cell.value is None or cell.kind != SET:
                    continue
                raw = frozen_bytes(c.type, [(cell.path or b"", cell.value)]) if c.type.is_complex else cell.value
                values.append((c, raw))
            for c, raw in values:
                column = codec.columns[c.name]
                want = outcome(convert_cell, targets[c.name], table.keyspace, table.name, c.name, raw)
                assert agree(outcome(column.to_target, raw), want), (table.qualified_name, c.name, raw)
                storage = replace_frozen(c.type)
                assert agree(outcome(fast_decoder(storage), raw), outcome(decode, storage, raw)), (c.name, raw)
                checked += 1
    assert checked > 100_000


EDGE_VALUES = [
    b"",
    b"\x00",
    b"\x80\x00\x00\x00",
    b"\xff" * 8,
    b"\x00" * 16,
    b"\xc3\x28",  # not UTF-8
    b"abc",
    b"\x00\x00\x00\x02\x05",
]
EDGE_TYPES = [
    "int",
    "bigint",
    "smallint",
    "tinyint",
    "timestamp",
    "time",
    "date",
    "float",
    "double",
    "boolean",
    "text",
    "ascii",
    "blob",
    "uuid",
    "timeuuid",
    "varint",
    "decimal",
    "frozen<list<int>>",
    "frozen<set<text>>",
    "frozen<map<text, int>>",
    "frozen<tuple<int, text>>",
    "frozen<map<int, frozen<list<double>>>>",
    "frozen<list<frozen<tuple<text, int, decimal>>>>",
]


@pytest.mark.parametrize("type_text", EDGE_TYPES)
def test_encoders_equal_the_generic_functions_on_odd_bytes(type_text: str) -> None:
    ctype = parse_cql_type(type_text)
    composite = [
        b"\x00\x00\x00\x01\x00\x00\x00\x04\x00\x00\x00\x07",
        b"\x00\x00\x00\x01\xff\xff\xff\xff",
        b"\x00\x00\x00\x01\x00\x00\x00\x09\x00\x00\x00\x07",
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x04\x00\x00\x00\x07\x00\x00\x00\x01a",
        b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x04\x00\x00\x00\x07\x00",
        b"\x7f\xff\xff\xff\x00\x00\x00\x00",  # a count no value this short can hold
    ]
    for raw in EDGE_VALUES + composite:
        assert agree(outcome(fast_decoder(ctype), raw), outcome(decode, ctype, raw)), raw
        generic_json = outcome(lambda r: json_value(ctype, decode(ctype, r)), raw)
        assert agree(outcome(raw_json(ctype), raw), generic_json), raw
        for name, target in TARGETS.items():
            mapping = target(ctype)
            assert agree(outcome(fast_target(mapping, ctype), raw), outcome(mapping.to_target, raw)), (name, raw)


SCALAR_EDGES = [
    b"nul\x00inside",
    b"\x00",
    "caf\u00e9".encode(),
    b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
    b"\x7f\xff\xff\xff\xff\xff\xff\xff",
    b"\x80\x00\x00\x01",
    b"\xff\xc4\x6f\x36\x4c\x9a\x40\x00",  # timestamp year -9000: outside timestamptz through asyncpg
    (253_402_300_799_999).to_bytes(8, "big"),  # 9999-12-31T23:59:59.999
    (253_402_300_800_000).to_bytes(8, "big"),
    (-62_135_596_800_000).to_bytes(8, "big", signed=True),  # 0001-01-01T00:00:00.000
    (-62_135_596_799_999).to_bytes(8, "big", signed=True),
    (2**31 - 719_162).to_bytes(4, "big"),  # date 0001-01-01, refused (PostgreSQL's range here starts a day later)
    (2**31 - 719_161).to_bytes(4, "big"),
    (2**31 + 2_932_896).to_bytes(4, "big"),  # 9999-12-30
    (2**31 + 2_932_897).to_bytes(4, "big"),
    b"\x7f\xf8\x00\x00\x00\x00\x00\x01",  # a NaN with a payload
    b"\x80\x00\x00\x00\x00\x00\x00\x00",  # -0.0
    b"\x7f\xc0\x00\x01",
]


COMPOSITE_EDGES = [
    b"\x00\x00\x00\x01\x00\x00\x00\x03a\x00b",  # one element: a text holding U+0000 (or 3 bytes)
    b"\x00\x00\x00\x01\x00\x00\x00\x07a\\u0000",  # a text holding a backslash and "u0000"
    b"\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x04\x00\x00\x00\x07",  # a map key "\x00" -> 7
    b"\x00\x00\x00\x02\x00\x00\x00\x08\x7f\xf8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08" + b"\x80" + b"\x00" * 7,
    b"\x00\x00\x00\x00",
]


@pytest.mark.parametrize(
    "type_text", EDGE_TYPES + ["frozen<list<double>>", "frozen<map<text, text>>", "frozen<tuple<text, double>>"]
)
def test_column_targets_equal_the_generic_conversion_on_odd_bytes(type_text: str) -> None:
    """A column's ``to_target`` (compiled for the default PostgreSQL scalar rules; jsonb rendered
    per type) gives what ``convert_cell`` gives, or the same error, for PostgreSQL and ClickHouse
    targets."""
    ctype = parse_cql_type(type_text)
    column = ColumnDef("c", "partition_key", 0, ctype, type_text)
    table = TableDef(uuid.uuid4(), "ks", "t", True, partition_key=[column], clustering=[], columns={})
    for name, target in TARGETS.items():
        mapping = target(ctype)
        codec = ColumnCodec(table, column, mapping)
        for raw in EDGE_VALUES + SCALAR_EDGES + COMPOSITE_EDGES:
            want = outcome(convert_cell, mapping, "ks", "t", "c", raw)
            assert agree(outcome(codec.to_target, raw), want), (name, type_text, raw)


def test_decimals_keep_scale_and_sign() -> None:
    ctype = CqlType("decimal")
    for scale in (-7, -1, 0, 1, 3, 30):
        for unscaled in (0, 1, -1, 5, -12345, 10**30, -(10**19)):
            magnitude = unscaled if unscaled >= 0 else ~unscaled
            raw = scale.to_bytes(4, "big", signed=True) + unscaled.to_bytes(
                magnitude.bit_length() // 8 + 1, "big", signed=True
            )
            assert same(fast_decoder(ctype)(raw), decode(ctype, raw)), (scale, unscaled)


def test_screen_equals_the_generic_screen(corpus: Corpus) -> None:
    """Poisoned values are dead letters with the generic screen's reasons; the rest are kept."""
    schema, events = cdc_events(corpus)
    table = next(t for t in schema.cdc_tables() if t.name == "all_types")
    mine = [e for e in events if e.table == "all_types"][:400]
    poisoned: list[ChangeEvent] = []
    bad = {"a_date": b"\x00\x00\x00\x05", "a_text": b"nul\x00inside", "a_int": b"\x01", "l_int": b"\x02"}
    for i, event in enumerate(mine):
        column = list(bad)[i % len(bad)]
        cells = [msgspec.structs.replace(c, value=bad[column]) if c.column == column else c for c in event.cells]
        poisoned.append(msgspec.structs.replace(event, cells=cells).with_content_id())
    columns = table.partition_key + table.clustering + list(table.columns.values())
    targets = {c.name: MAPPINGS.postgres(replace_frozen(c.type)) for c in columns}
    codec = TableCodec(table, targets)
    good, rows, dead, _ = codec.screen(poisoned, "node1")
    generic_good, generic_dead = screen(table, poisoned, codec._convert, "node1")
    assert [e.event_id for e in good] == [e.event_id for e in generic_good]
    assert [(d.event.event_id, d.reason) for d in dead] == [(d.event.event_id, d.reason) for d in generic_dead]
    assert dead and good and len(rows) == len(good)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_element_values_equal_the_frozen_conversion_on_every_corpus_value(corpus: Corpus, target: str) -> None:
    """A non-frozen column's elements convert as their frozen value (``frozen_bytes``) converts, single
    elements (screening) and every element a row accumulates (state rows), odd elements included."""
    schema, events = cdc_events(corpus)
    checked = 0
    for table in schema.cdc_tables():
        complex_columns = [c for c in table.columns.values() if c.type.is_complex]
        if not complex_columns:
            continue
        columns = table.partition_key + table.clustering + list(table.columns.values())
        targets = {c.name: TARGETS[target](replace_frozen(c.type)) for c in columns}
        codec = TableCodec(table, targets)
        accumulated: dict[tuple, dict[bytes, bytes]] = {}
        for event in events:
            if (event.keyspace, event.table) != (table.keyspace, table.name):
                continue
            for cell in event.cells:
                c = table.columns.get(cell.column)
                if c is None or not c.type.is_complex or cell.kind != SET or cell.value is None:
                    continue
                element = (cell.path or b"", cell.value)
                row = accumulated.setdefault((tuple(event.partition_key), tuple(event.clustering), c.name), {})
                row[element[0]] = element[1]
        lists = [(name, list(elements.items())) for (_, _, name), elements in accumulated.items()]
        for c in complex_columns:  # odd elements: bad values and paths
            odd = [(b"\x00\x01", b"\x02"), (b"\x01", b"\xc3\x28"), (b"", b""), (b"\x7f\xff", b"\x00\x00\x00\x01")]
            lists += [(c.name, [element]) for element in odd] + [(c.name, odd)]
        for name, elements in lists:
            c = table.columns[name]
            frozen = outcome(frozen_bytes, c.type, elements)  # odd paths may not even sort
            if frozen[0] == "ok":
                want = outcome(convert_cell, targets[name], table.keyspace, table.name, name, frozen[1])
            else:
                want = frozen
            assert agree(outcome(codec.columns[name].elements_target, elements), want), (name, elements)
            checked += 1
    assert checked > 1_000
