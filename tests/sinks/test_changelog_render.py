"""The compiled change-log rendering (cdcfast/sinks/_changelog.pyx) against the generic change log.

The reference is :func:`cdcfast.sinks.changelog.change_row`: the documented change-log JSON built
from the generic decoder and ``json_value`` (no per-table encoders), and :func:`poison.screen` for
what is a dead letter and why."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

import msgspec
import pytest
from conftest import CORPUS_ROOT, Corpus
from support.replay import cdc_events

from cdcfast.commitlog import load_schema
from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import TableDef
from cdcfast.events import CLEAR, SET, TOMBSTONE, Cell, ChangeEvent
from cdcfast.sinks import encode
from cdcfast.sinks._pgcopy import change_row_copy
from cdcfast.sinks.changelog import ChangeRow, change_row
from cdcfast.sinks.encode import TableCodec, replace_frozen
from cdcfast.sinks.poison import screen
from cdcfast.transform.typemap import ClickHouseFeatures, TargetType, load_mappings

MAPPINGS = load_mappings()


def codec_of(table: TableDef, target: Callable[[CqlType], TargetType] = MAPPINGS.postgres) -> TableCodec:
    columns = table.partition_key + table.clustering + list(table.columns.values())
    return TableCodec(table, {c.name: target(replace_frozen(c.type)) for c in columns})


def assert_rows_equal_the_generic_change_log(
    table: TableDef, events: list[ChangeEvent], target: Callable[[CqlType], TargetType] = MAPPINGS.postgres
) -> int:
    """Screens ``events`` and compares: kept events' rows equal ``change_row`` (JSON byte for byte),
    dead letters equal the generic screen's (same events, same reasons). Gives the rows compared."""
    codec = codec_of(table, target)
    good, rows, dead, _ = codec.screen(events, "node1")
    generic_good, generic_dead = screen(table, events, codec._convert, "node1")
    assert [e.event_id for e in good] == [e.event_id for e in generic_good]
    assert [(d.event.event_id, d.reason) for d in dead] == [(d.event.event_id, d.reason) for d in generic_dead]
    for event, row in zip(good, rows):
        want = change_row(table, event, "node1")
        assert isinstance(row, ChangeRow)
        assert row[:6] == want[:6] and row.deletion_ts == want.deletion_ts
        for got, expected in ((row.key, want.key), (row.cells, want.cells), (row.range, want.range)):
            assert got == (None if expected is None else expected.encode()), (table.qualified_name, event)
    return len(rows)


def test_rows_equal_the_generic_change_log_on_every_corpus_event(corpus: Corpus) -> None:
    schema, events = cdc_events(corpus)
    compared = 0
    for table in schema.cdc_tables():
        mine = [e for e in events if (e.keyspace, e.table) == (table.keyspace, table.name)]
        compared += assert_rows_equal_the_generic_change_log(table, mine)
    assert compared == len(events)


def test_postgres_copy_rows_carry_the_same_json() -> None:
    """The PostgreSQL writer's record (binary COPY) gets the same JSON as the default record."""
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "readings")
    events = [reading(i) for i in range(5)]
    codec = codec_of(table)
    copied = codec.screen(events, "node1", change_row_copy)[1]
    plain = codec.screen(events, "node1")[1]
    assert copied == [change_row_copy(*row) for row in plain]


def reading(i: int, **values: bytes | None) -> ChangeEvent:
    """A telemetry.readings insert (sensor_id text, day date | ts timestamp | quality tinyint, unit
    text, value double), with some serialized values replaced."""
    raw: dict[str, bytes | None] = {
        "sensor_id": f"sensor-{i % 3}".encode(),
        "day": (2**31 + 19_000 + i).to_bytes(4, "big"),
        "ts": (1_700_000_000_000 + i).to_bytes(8, "big", signed=True),
        "quality": bytes([i % 100]),
        "unit": b"celsius",
        "value": struct.pack(">d", 20.5 + i),
    }
    raw.update(values)
    ts = 1_700_000_000_000_000 + i
    cells = [Cell(name, SET, ts, raw[name]) for name in ("quality", "unit", "value")]
    if i % 4 == 1:
        cells.append(Cell("unit", SET, ts, b"kelvin", ttl=60, expires_at=1_700_000_060))
    if i % 4 == 2:
        cells.append(Cell("dropped_column", SET, ts, b"\x00\x01"))  # a column the schema does not know
    if i % 4 == 3:
        cells.append(Cell("value", TOMBSTONE, ts))
    event = ChangeEvent(
        event_id=b"",
        keyspace="telemetry",
        table="readings",
        op="insert",
        partition_key=[raw["sensor_id"], raw["day"]],  # type: ignore[list-item]
        clustering=[raw["ts"]],
        ts=ts,
        cells=cells,
        segment_id=1,
        position=100 + i,
    )
    return event.with_content_id()


ODD_TEXT = [
    b"",
    b'quote " inside',
    b"back\\slash",
    b"new\nline\ttab\r\x01\x1f",
    b"del \x7f and / slash",
    "non-ASCII: é ü 中文 \U0001f600".encode(),
    "\u2028 line separator".encode(),
    b"\xc3\x28 not UTF-8",
    b"\xed\xa0\x80 a surrogate",
    b"nul\x00inside",
]
ODD_DOUBLES = [
    0.0,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e16,
    1e-7,
    123456789.123,
    5e-324,
    1.7976931348623157e308,
]
ODD_TIMESTAMPS = [0, -1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)]


def test_odd_values_render_as_the_generic_change_log() -> None:
    """Escapes, non-ASCII and invalid text, NaN/infinities/-0.0 and extreme doubles, integers beyond
    JSON's safe range, wrong lengths, empty values, unknown columns and TTLs: each as the generic
    change log renders it, or the same dead letter."""
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "readings")
    events: list[ChangeEvent] = []
    for text in ODD_TEXT:
        events.append(reading(len(events), unit=text))
        events.append(reading(len(events), sensor_id=text))
    for number in ODD_DOUBLES:
        events.append(reading(len(events), value=struct.pack(">d", number)))
    for millis in ODD_TIMESTAMPS:
        events.append(reading(len(events), ts=millis.to_bytes(8, "big", signed=True)))
    for odd in (b"", b"\x01", b"\x00\x00\x00\x00\x00\x00\x00\x00\x00", b"\xff\xff"):
        events += [reading(len(events), ts=odd), reading(len(events) + 1, quality=odd)]
        events += [reading(len(events) + 2, value=odd), reading(len(events) + 3, day=odd)]
    events += [reading(len(events), day=b"\xff\xff\xff\xff"), reading(len(events) + 1, day=b"\x00\x00\x00\x00")]
    events += [reading(len(events), quality=b"\x80"), reading(len(events) + 1, quality=b"\x7f")]
    events.append(msgspec.structs.replace(reading(len(events)), clustering=[None]).with_content_id())
    events.append(msgspec.structs.replace(reading(len(events)), clustering=[]).with_content_id())  # static row
    assert assert_rows_equal_the_generic_change_log(table, events) > len(events) // 2


@pytest.mark.parametrize(
    "column, values",
    [
        ("a_uuid", [uuid.UUID(int=0).bytes, uuid.uuid4().bytes, b"\xff" * 16, b"\x01" * 15, b""]),
        ("a_timeuuid", [uuid.uuid1().bytes, b"\x01" * 17]),
        ("a_blob", [b"", b"\x00\xff\x10", bytes(range(256))]),
        ("a_boolean", [b"\x00", b"\x01", b"\x02", b"", b"\x00\x00"]),
        ("a_float", [struct.pack(">f", x) for x in (0.0, -0.0, 1.5, 3.4e38, 1e-45, float("nan"))] + [b"\x00"]),
        ("a_int", [b"\x80\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01", b""]),
        ("a_smallint", [b"\x80\x00", b"\xff\xff", b"\x01"]),
        ("a_bigint", [b"\x80" + b"\x00" * 7, b"\x00" * 8, (2**53).to_bytes(8, "big"), b"\x01"]),
        ("a_time", [(86_399_999_999_999).to_bytes(8, "big"), b"\x00" * 8]),
        ("a_ascii", [b"plain", b"caf\xc3\xa9", b'a"b', b""]),
        ("a_text", [b"plain", "café".encode(), b"\xff"]),
        ("a_decimal", [b"\x00\x00\x00\x02\x04\xd2"]),
        ("a_varint", [b"\x01\x00", b""]),
    ],
)
def test_scalar_kinds_render_as_the_generic_change_log(column: str, values: list[bytes]) -> None:
    """Each scalar kind rendered from its bytes (types.all_types), in the key and in cells."""
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "all_types")
    events = []
    for i, value in enumerate(values):
        ts = 1_700_000_000_000_000 + i
        cells = [Cell(column, SET, ts, value), Cell("a_text", SET, ts, b"x", ttl=2**31 - 1, expires_at=2**40)]
        events.append(all_types_update(i, cells))
    assert_rows_equal_the_generic_change_log(table, events)


def all_types_update(i: int, cells: list[Cell]) -> ChangeEvent:
    """The ``i``-th types.all_types update, of ``cells`` (each its own row and partition)."""
    return ChangeEvent(
        event_id=b"",
        keyspace="types",
        table="all_types",
        op="update",
        partition_key=[i.to_bytes(4, "big")],
        clustering=[b"ck", (2**40 + i).to_bytes(8, "big")],
        ts=1_700_000_000_000_000 + i,
        cells=cells,
        segment_id=1,
        position=i,
    ).with_content_id()


# -- collections, UDTs and the generic kinds -------------------------------------------------------
TARGETS = {
    "postgresql": MAPPINGS.postgres,
    "clickhouse": lambda ctype: MAPPINGS.clickhouse(ctype, ClickHouseFeatures.from_version("18.16")),
    "clickhouse-24": lambda ctype: MAPPINGS.clickhouse(ctype, ClickHouseFeatures.from_version("24.8")),
}


def frozen(items: list[bytes | None]) -> bytes:
    """A frozen list or set value: the count, then each item with its length."""
    return len(items).to_bytes(4, "big") + b"".join(item_bytes(i) for i in items)


def item_bytes(item: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if item is None else len(item).to_bytes(4, "big", signed=True) + item


def frozen_map(pairs: list[tuple[bytes | None, bytes | None]]) -> bytes:
    return len(pairs).to_bytes(4, "big") + b"".join(item_bytes(k) + item_bytes(v) for k, v in pairs)


def fields(items: list[bytes | None]) -> bytes:
    """A tuple or UDT value: each field with its length, no count."""
    return b"".join(item_bytes(i) for i in items)


def int32(v: int) -> bytes:
    return v.to_bytes(4, "big", signed=True)


def f64(v: float) -> bytes:
    return struct.pack(">d", v)


def decimal_bytes(unscaled: int, scale: int, size: int | None = None) -> bytes:
    size = size or max(1, (unscaled.bit_length() + 8) // 8)
    return scale.to_bytes(4, "big", signed=True) + unscaled.to_bytes(size, "big", signed=True)


def all_types_events(cells: list[Cell], ttl_every: int = 5) -> list[ChangeEvent]:
    """One types.all_types update per cell (every ``ttl_every``-th with a TTL)."""
    events = []
    for i, cell in enumerate(cells):
        ts = 1_700_000_000_000_000 + i
        if i % ttl_every == ttl_every - 1:
            cell = msgspec.structs.replace(cell, ttl=3600, expires_at=1_700_003_600)
        events.append(all_types_update(i, [cell, Cell("a_int", SET, ts, int32(i))]))
    return events


def assert_as_generic_on_every_target(table_name: str, events: list[ChangeEvent]) -> None:
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == table_name)
    for target in TARGETS.values():
        assert_rows_equal_the_generic_change_log(table, events, target)


def cell(column: str, value: bytes | None, path: bytes | None = None, kind: int = SET) -> Cell:
    return Cell(column, kind, 1_700_000_000_000_000, value, path=path)


TIMEUUID = uuid.uuid1().bytes
ODD_INT32 = [int32(0), int32(-1), int32(2**31 - 1), int32(-(2**31)), b"", b"\x01", b"\x00" * 5]


def test_set_cells_render_as_the_generic_change_log() -> None:
    """set<text> and frozen<set<int>>: elements as paths (escapes, U+0000 for PostgreSQL's jsonb,
    bad UTF-8), a value where a set cell has none, a missing path, tombstones."""
    cells = [cell("s_text", b"", path=text) for text in ODD_TEXT]
    cells += [cell("s_text", b"x", path=b"a"), cell("s_text", b"", path=None), cell("s_text", None, path=b"a")]
    cells += [cell("s_text", None, path=text, kind=TOMBSTONE) for text in (b"gone", b"nul\x00")]
    cells += [cell("s_text", None, kind=CLEAR)]
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


def test_list_cells_render_as_the_generic_change_log() -> None:
    """list<int>: timeuuid paths (and wrong lengths), odd values."""
    cells = [cell("l_int", value, path=TIMEUUID) for value in ODD_INT32]
    cells += [cell("l_int", int32(7), path=TIMEUUID[:15]), cell("l_int", int32(7), path=b"")]
    cells += [cell("l_int", int32(7), path=None), cell("l_int", None, path=TIMEUUID, kind=TOMBSTONE)]
    cells += [cell("l_int", None, path=uuid.UUID(int=0).bytes, kind=TOMBSTONE)]
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


def test_map_cells_render_as_the_generic_change_log() -> None:
    """map<text, int>: odd text keys and odd int values."""
    cells = [cell("m_text_int", int32(5), path=text) for text in ODD_TEXT]
    cells += [cell("m_text_int", value, path=b"k") for value in ODD_INT32]
    cells += [cell("m_text_int", None, path=b"k", kind=TOMBSTONE), cell("m_text_int", int32(1), path=None)]
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


def test_udt_field_cells_render_as_the_generic_change_log() -> None:
    """A non-frozen UDT (addr: street, city, zip int...): field paths, irregular paths (short, long,
    beyond the fields, negative), odd field values."""
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "all_types")
    udt = table.columns["udt_nf"].type
    cells = []
    for index, field_type in enumerate(udt.params):
        path = index.to_bytes(2, "big")
        values = ODD_TEXT if field_type.kind == "text" else ODD_INT32
        cells += [cell("udt_nf", value, path=path) for value in values]
        cells.append(cell("udt_nf", None, path=path, kind=TOMBSTONE))
    for path in (b"", b"\x00", b"\x00\x00\x00", len(udt.params).to_bytes(2, "big"), b"\xff\xff", None):
        cells.append(cell("udt_nf", b"x", path=path))
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


def test_map_of_doubles_cells_render_as_the_generic_change_log() -> None:
    """clinic.patients.vitals map<text, double>: NaN, infinities, -0.0 as values; the contact UDT."""
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "patients")
    events = []
    values = [f64(x) for x in ODD_DOUBLES] + [b"", b"\x00" * 4]
    cells = [cell("vitals", v, path=b"bp") for v in values]
    cells += [cell("contact", text, path=b"\x00\x01") for text in ODD_TEXT]
    cells += [cell("diagnosis_codes", text, path=TIMEUUID) for text in ODD_TEXT]
    for i, c in enumerate(cells):
        event = ChangeEvent(
            event_id=b"",
            keyspace="clinic",
            table="patients",
            op="update",
            partition_key=[f"mrn-{i}".encode()],
            clustering=[],
            ts=c.ts,
            cells=[c],
            segment_id=1,
            position=i,
        )
        events.append(event.with_content_id())
    for target in TARGETS.values():
        assert_rows_equal_the_generic_change_log(table, events, target)


FROZEN_VALUES = {
    "f_set": [
        frozen([]),
        frozen([int32(1), int32(-5)]),
        frozen([None, b"", int32(3)]),
        frozen([b"\x01"]),
        b"\xff\xff\xff\xff",  # a negative count
        b"\x00\x00\x00\x02" + item_bytes(int32(1)),  # short
        frozen([int32(1)]) + b"\x00",  # long
        b"\x00\x00\x00\x01" + b"\x00\x00\x00\x09" + int32(1),  # an item beyond the end
        b"",
        b"\x00\x00",
    ],
    "f_list": [frozen([text]) for text in ODD_TEXT] + [frozen([None, b"a", b""]), frozen([b"a"])[:-1]],
    "f_map": [
        frozen_map([(int32(1), b"one"), (int32(-2), b'two "2"')]),
        frozen_map([(None, b"x"), (int32(1), None)]),
        frozen_map([(b"", b"empty key")]),
        frozen_map([(int32(1), b"nul\x00")]),
        frozen_map([(int32(1), b"\xff")]),
        frozen_map([(int32(1), b"a")])[:-1],
    ],
    "nested": [
        frozen_map([(b"a", frozen([int32(1), int32(2)])), (b"b\nc", frozen([]))]),
        frozen_map([(b"a", None)]),
        frozen_map([(b"a", frozen([])), (b"a", frozen([int32(9)]))]),  # a repeated key
        frozen_map([(b"\xff", frozen([]))]),
        frozen_map([(b"nul\x00", frozen([int32(1)]))]),
        frozen_map([(b"a", frozen([int32(1)])[:-1])]),
    ],
    "tup": [
        fields([int32(1), b"text", f64(2.5)]),
        fields([int32(1), b"text"]),  # a field missing at the end
        fields([None, None, None]),
        fields([b"", b"", b""]),
        fields([int32(1), b'"q"\\', f64(float("nan"))]),
        fields([int32(1), b"x", f64(-0.0)]),
        fields([int32(1), b"x", f64(1.0)]) + b"\x00",
        fields([int32(1), b"x", f64(1.0)])[:-1],
        b"",
    ],
    "a_vector": [
        struct.pack(">3f", 1.5, -2.0, 3.25),
        struct.pack(">3f", 0.0, -0.0, float("nan")),
        struct.pack(">3f", float("inf"), 1e-45, 3.4e38),
        struct.pack(">2f", 1.0, 2.0),
        b"",
    ],
}


@pytest.mark.parametrize("column", sorted(FROZEN_VALUES))
def test_frozen_values_render_as_the_generic_change_log(column: str) -> None:
    """Frozen collections, tuples and vectors (regular, null and empty items, a repeated map key, a
    non-text map key, escapes and U+0000 inside, wrong counts and lengths), in cells."""
    cells = [cell(column, value) for value in FROZEN_VALUES[column]]
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


def test_frozen_udt_values_render_as_the_generic_change_log() -> None:
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "all_types")
    udt = table.columns["udt_f"].type
    regular = [b"street" if p.kind == "text" else int32(7) for p in udt.params]
    values = [fields(regular), fields(regular[:1]), fields([None] * len(regular)), b""]
    values += [fields([b"\x00\n\xff"] + regular[1:]), fields(regular) + b"\x00\x00", fields(regular)[:-1]]
    values += [fields(regular + [b"extra"])]
    cells = [cell("udt_f", value) for value in values]
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


DECIMALS = [
    (0, 0),
    (0, 3),
    (0, -3),
    (1, 0),
    (-1, 0),
    (12345, 2),
    (-12345, 2),
    (5, 7),
    (5, 6),
    (123, 8),
    (1, -1),
    (123456789, -5),
    (-(2**63), 4),
    (2**63 - 1, 0),
    (2**63, 3),
    (2**100, 10),
    (7, 2**20),
    (7, -(2**20)),
    (10**17, 17),
    (1, 6),
    (1, 7),
    (100, 8),
    (99, 1),
]


def test_generic_scalars_render_as_the_generic_change_log() -> None:
    """decimal (plain and scientific notation, extreme scales, big coefficients, odd lengths),
    varint (every width around the JSON-safe range), inet, duration, timestamp, in the key and in cells."""
    import random

    rng = random.Random(7)
    values: list[tuple[str, bytes]] = [("a_decimal", decimal_bytes(u, s)) for u, s in DECIMALS]
    values += [("a_decimal", decimal_bytes(5, 2, size)) for size in (1, 2, 8, 9, 16, 17)]
    values += [("a_decimal", raw) for raw in (b"", b"\x00\x00\x00\x02", b"\x00\x00\x00")]
    for _ in range(200):
        digits = rng.choice([1, 3, 9, 15, 18, 19, 25])
        unscaled = rng.randrange(-(10**digits), 10**digits)
        values.append(("a_decimal", decimal_bytes(unscaled, rng.randrange(-30, 30))))
    for size in range(1, 12):
        for _ in range(8):
            values.append(("a_varint", rng.randbytes(size)))
    values += [("a_varint", v.to_bytes(8, "big", signed=True)) for v in (2**53, 2**53 + 1, -(2**53), -(2**53) - 1)]
    values += [("a_varint", b"\x00" * 9), ("a_varint", b"")]
    values += [("a_inet", raw) for raw in (bytes([1, 2, 3, 4]), bytes(4), b"\xff" * 4, bytes(16), b"\x01" * 5, b"")]
    values += [("a_inet", bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])), ("a_inet", rng.randbytes(16))]
    values += [("a_timestamp", raw) for raw in (b"\x00" * 8, b"\x80" + b"\x00" * 7, b"\x01")]
    values += [("a_duration", raw) for raw in (b"\x02\x04\x06", b"\x00\x00\x00", b"\x02")]
    cells = [cell(column, raw) for column, raw in values]
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


def test_repeated_elements_are_screened_in_every_event() -> None:
    """The same written elements in many events of a batch, storable or not (U+0000 in a text[]
    element or a jsonb key, an EMPTY element, a text that only looks like an escaped U+0000):
    each event is kept or made a dead letter as the generic screen decides, every time."""
    elements = [b"plain", b"nul\x00", b"\\u0000 looks escaped", b"\x00"]
    cells = []
    for _ in range(3):
        cells += [cell("s_text", b"", path=text) for text in elements]
        cells += [cell("m_text_int", int32(1), path=text) for text in elements]
        cells += [cell("udt_nf", text, path=b"\x00\x00") for text in elements]
        cells += [cell("l_int", value, path=TIMEUUID) for value in (int32(1), b"", int32(1))]
        cells += [cell("l_int", int32(2), path=uuid.uuid1().bytes)]
    assert_as_generic_on_every_target("all_types", all_types_events(cells, ttl_every=7))


def test_durations_and_wide_integers_render_as_the_generic_change_log() -> None:
    """duration (every vint width, non-minimal encodings, parts beyond their ranges, truncated or
    trailing bytes) and 8-byte integers beyond JSON's safe range (rendered as strings), in cells
    and inside a frozen tuple."""
    import random

    from cdcfast.values.vint import encode_svint, encode_uvint

    rng = random.Random(11)
    parts = [0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)]
    durations = [
        encode_svint(m) + encode_svint(d) + encode_svint(n) for m in parts[:7] for d in parts[:3] for n in parts
    ]
    for _ in range(100):
        m, d = rng.randrange(-(2**31), 2**31), rng.randrange(-(2**31), 2**31)
        durations.append(encode_svint(m) + encode_svint(d) + encode_svint(rng.randrange(-(2**63), 2**63)))
    durations += [encode_svint(2**31) + encode_svint(0) + encode_svint(0)]  # months beyond int
    durations += [encode_svint(0) + encode_svint(-(2**31) - 1) + encode_svint(0)]  # days beyond int
    durations += [b"\x80\x02" + b"\x00\x00", b"\xff" + b"\x00" * 7 + b"\x02" + b"\x00\x00"]  # non-minimal vints
    durations += [encode_uvint(2**64 - 1) + b"\x00\x00", b"\x00\x00", b"\x00\x00\x00\x00", b"\x00\x00\xc0\x01", b"\xff"]
    values = [("a_duration", raw) for raw in durations]
    for v in (2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 2**60):
        values += [("a_bigint", v.to_bytes(8, "big", signed=True)), ("a_timestamp", v.to_bytes(8, "big", signed=True))]
        values += [("a_varint", v.to_bytes(8, "big", signed=True)), ("a_time", v.to_bytes(8, "big", signed=True))]
    cells = [cell(column, raw) for column, raw in values]
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


def test_range_deletions_render_as_the_generic_change_log() -> None:
    """Range deletions of types.all_types (ck1 text, ck2 bigint): open and closed bounds, prefixes,
    null and odd clustering values (escapes, bad UTF-8, wide and short integers)."""
    bounds: list[list[bytes | None] | None] = [None, [], [b"a"], [b"a", int32(0) * 2], [b'q"\\\n', None]]
    bounds += [[b"\xff", b"\x01"], [b"nul\x00", (2**60).to_bytes(8, "big")], [b"x", b""], [b"x", b"\x00" * 8, b"extra"]]
    events = []
    for i, (start, end) in enumerate((s, e) for s in bounds for e in bounds):
        event = ChangeEvent(
            event_id=b"",
            keyspace="types",
            table="all_types",
            op="range_delete",
            partition_key=[int32(i)],
            clustering=[],
            ts=1_700_000_000_000_000 + i,
            deletion_ts=1_700_000_000_000_000 + i,
            range_start=start,
            range_start_inclusive=i % 2 == 0,
            range_end=end,
            range_end_inclusive=i % 3 == 0,
            segment_id=1,
            position=i,
        )
        events.append(event.with_content_id())
    assert_as_generic_on_every_target("all_types", events)


def test_ipv6_addresses_render_as_the_generic_change_log() -> None:
    """IPv6 text: the longest run of zero groups compressed (the first of equal runs; never a single
    group), IPv4-mapped addresses, random addresses."""
    import random

    rng = random.Random(5)
    groups = [[0] * 8, [0] * 7 + [1], [1] + [0] * 7, [1, 0, 2, 0, 3, 0, 4, 0], [1, 0, 0, 2, 0, 0, 3, 4]]
    groups += [[1, 0, 0, 2, 0, 0, 0, 3], [0, 0, 1, 0, 0, 0, 2, 3], [1, 2, 3, 4, 5, 6, 7, 0], [0xFFFF] * 8]
    groups += [[0, 0, 0, 0, 0, 0xFFFF, 0x0102, 0x0304], [0, 0, 0, 0, 0, 0, 0x0102, 0x0304], [0xABCD, 0x10] + [0] * 6]
    addresses = [b"".join(g.to_bytes(2, "big") for g in gs) for gs in groups]
    for _ in range(200):
        gs = [rng.choice([0, 0, 0, 1, 0xFF, 0x1000, rng.randrange(65536)]) for _ in range(8)]
        addresses.append(b"".join(g.to_bytes(2, "big") for g in gs))
    addresses += [rng.randbytes(16) for _ in range(50)]
    cells = [cell("a_inet", raw) for raw in addresses]
    assert_as_generic_on_every_target("all_types", all_types_events(cells))


def test_text_of_every_utf8_shape_renders_as_the_generic_change_log() -> None:
    """Text around every boundary of well-formed UTF-8 (overlong forms, surrogates, beyond U+10FFFF,
    truncated and stray continuation bytes) and random bytes, in a text and an ascii column and as
    a key value."""
    import random

    rng = random.Random(3)
    leads = [0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4]
    leads += [0xF5, 0xF8, 0xFF]
    follows = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0]
    texts = [
        bytes([lead, a, b, c]) for lead in leads for a in follows for b in (0x80, 0xBF, 0x41) for c in (0x80, 0x41)
    ]
    texts += [bytes([lead]) for lead in leads] + [bytes([lead, a]) for lead in leads for a in follows]
    texts += ["ok \u00e9 \u0800 \ud7ff \ue000 \uffff \U00010000 \U0010ffff".encode()]
    texts += [rng.randbytes(rng.randrange(1, 12)) for _ in range(300)]
    # a written cell's value is also converted, which refuses bad UTF-8 on its own; a tombstone's
    # value and a range deletion's bounds are only rendered
    columns = [("a_text", SET), ("a_ascii", SET), ("a_text", TOMBSTONE), ("a_ascii", TOMBSTONE)]
    cells = [cell(column, b"x " + text, kind=kind) for text in texts for column, kind in columns]
    events = all_types_events(cells)
    events = [msgspec.structs.replace(e, clustering=[b"k " + e.cells[0].value, e.clustering[1]]) for e in events]
    events += [
        msgspec.structs.replace(e, op="range_delete", clustering=[], cells=[], range_start=e.clustering[:1])
        for e in events
    ]
    assert_as_generic_on_every_target("all_types", [e.with_content_id() for e in events])


def test_regular_collection_cells_and_values_take_the_compiled_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled pass renders regular collection and UDT cells, frozen values, decimals,
    durations and inets itself: neither ``_complex_entry`` nor a column's Python renderer is called
    (a slower fallback would still pass the tests above)."""
    from cdcfast.values.vint import encode_svint

    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "all_types")
    cells = [
        cell("s_text", b"", path=b"element"),
        cell("l_int", int32(3), path=TIMEUUID),
        cell("m_text_int", int32(3), path=b"key"),
        cell("udt_nf", b"street", path=b"\x00\x00"),
        cell("f_map", frozen_map([(int32(1), b"one")])),
        cell("nested", frozen_map([(b"a", frozen([int32(1)]))])),
        cell("tup", fields([int32(1), b"t", f64(2.5)])),
        cell("a_vector", struct.pack(">3f", 1.5, 2.0, 3.0)),
        cell("a_decimal", decimal_bytes(12345, 2)),
        cell("a_duration", encode_svint(1) + encode_svint(2) + encode_svint(3)),
        cell("a_inet", bytes([10, 0, 0, 1])),
        cell("a_inet", bytes([0x20, 1, 0xD, 0xB8]) + bytes(11) + b"\x01"),
    ]

    def refuse(*args: object) -> None:
        raise AssertionError(args)

    monkeypatch.setattr(encode, "raw_json", lambda ctype: refuse)
    codec = codec_of(table)
    codec._complex_entry = refuse  # type: ignore[method-assign]
    good, rows, dead, _ = codec.screen(all_types_events(cells), "node1")
    assert len(rows) == len(cells) and not dead


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_null_key_in_a_text_keyed_frozen_map_is_a_dead_letter(target: str) -> None:
    """Cassandra refuses null map keys, so only damaged bytes hold one: the change is a dead letter
    saying so and naming the column, never a TypeError that stops the sink."""
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "all_types")
    events = all_types_events([cell("nested", frozen_map([(None, frozen([int32(1)]))]))], ttl_every=9)

    good, _, dead, _ = codec_of(table, TARGETS[target]).screen(events, "node1")

    assert good == [] and [d.event for d in dead] == events
    assert dead[0].reason.startswith("types.all_types, column nested: ") and "a null map key" in dead[0].reason
    assert_rows_equal_the_generic_change_log(table, events, TARGETS[target])


def test_bytes_the_change_log_cannot_render_make_a_dead_letter_naming_the_column() -> None:
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if t.name == "all_types")
    events = all_types_events([cell("a_text", b"bad \xff utf-8")], ttl_every=9)
    key = msgspec.structs.replace(events[0], partition_key=[b"\x00\x01"]).with_content_id()  # an int of 2 bytes

    good, _, dead, _ = codec_of(table).screen([*events, key], "node1")

    assert good == []
    where = [d.reason.split(": ", 1)[0] for d in dead]
    assert where == ["types.all_types, column a_text", "types.all_types, column id"], [d.reason for d in dead]
    assert_rows_equal_the_generic_change_log(table, [*events, key])
