"""The compiled change-log rendering (cdcfast/sinks/_changelog.pyx) against the generic change log.

The reference is :func:`cdcfast.sinks.changelog.change_row`: the documented change-log JSON built
from the generic decoder and ``json_value`` (no per-table encoders), and :func:`poison.screen` for
what is a dead letter and why."""

from __future__ import annotations

import struct
import uuid

import msgspec
import pytest
from conftest import CORPUS_ROOT, Corpus
from support.replay import cdc_events

from cdcfast.commitlog import load_schema
from cdcfast.commitlog.schema import TableDef
from cdcfast.events import SET, TOMBSTONE, Cell, ChangeEvent
from cdcfast.sinks._pgcopy import change_row_copy
from cdcfast.sinks.changelog import ChangeRow, change_row
from cdcfast.sinks.encode import TableCodec, replace_frozen
from cdcfast.sinks.poison import screen
from cdcfast.transform.typemap import load_mappings

MAPPINGS = load_mappings()


def codec_of(table: TableDef) -> TableCodec:
    columns = table.partition_key + table.clustering + list(table.columns.values())
    return TableCodec(table, {c.name: MAPPINGS.postgres(replace_frozen(c.type)) for c in columns})


def assert_rows_equal_the_generic_change_log(table: TableDef, events: list[ChangeEvent]) -> int:
    """Screens ``events`` and compares: kept events' rows equal ``change_row`` (JSON byte for byte),
    dead letters equal the generic screen's (same events, same reasons). Gives the rows compared."""
    codec = codec_of(table)
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
        event = ChangeEvent(
            event_id=b"",
            keyspace="types",
            table="all_types",
            op="update",
            partition_key=[i.to_bytes(4, "big")],
            clustering=[b"ck", (2**40 + i).to_bytes(8, "big")],
            ts=ts,
            cells=[Cell(column, SET, ts, value), Cell("a_text", SET, ts, b"x", ttl=2**31 - 1, expires_at=2**40)],
            segment_id=1,
            position=i,
        )
        events.append(event.with_content_id())
    assert_rows_equal_the_generic_change_log(table, events)
