"""State-row columns encoded by cdcfast (:func:`cdcfast.sinks._chnative.encode_column`) against
clickhouse-driver's own encoding of the same values.

The writer sends a state insert's columns in Native format it encodes itself where it knows the
column's type, and lets the driver encode the others. Whatever it encodes must be byte for byte what
the driver would have sent; a value it cannot encode must be refused with an error the writer takes
as "let the driver encode this insert" (OverflowError, TypeError, ValueError), never encoded
differently.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from clickhouse_driver import Client
from clickhouse_driver.bufferedwriter import BufferedSocketWriter
from clickhouse_driver.columns.service import write_column
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clickhouse_tables import ThrowawayTables
from support.schemas import text_insert

from cdcfast.events import Cell, ChangeEvent
from cdcfast.sinks import clickhouse_native
from cdcfast.sinks._chnative import encode_column
from cdcfast.sinks.clickhouse_native import NativeClient, NativeColumns

FALLBACK = (OverflowError, TypeError, ValueError)  # what makes the writer hand the insert to the driver
CONTEXT = Client("localhost").connection.context  # the driver's settings, as a writer's client has them


class _Collected:
    """A socket stand-in for the driver's writer: keeps what it is sent."""

    def __init__(self) -> None:
        self.data = bytearray()

    def sendall(self, data: bytes) -> None:
        self.data += data


def driver_bytes(type_: str, values: list[Any]) -> bytes:
    out = _Collected()
    writer = BufferedSocketWriter(out, 1 << 16)
    write_column(CONTEXT, "c", type_, list(values), writer, types_check=False)
    writer.flush()
    return bytes(out.data)


INT_RANGES = {
    "Int8": (-(2**7), 2**7 - 1), "Int16": (-(2**15), 2**15 - 1), "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1), "UInt8": (0, 2**8 - 1), "UInt16": (0, 2**16 - 1), "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
}  # fmt: skip

WELL_TYPED: dict[str, st.SearchStrategy[Any]] = {
    **{name: st.integers(low, high) for name, (low, high) in INT_RANGES.items()},
    "Float32": st.floats(width=32) | st.integers(-(2**24), 2**24),
    "Float64": st.floats() | st.integers(-(2**53), 2**53),
    "String": st.text() | st.binary(),
    "UUID": st.uuids(),
}

# Values of every kind in every column: the wrong type, out of range, NULL where none is allowed.
ANY_VALUE = (
    st.integers(-(2**70), 2**70)
    | st.booleans()
    | st.floats()
    | st.floats(min_value=3.5e38, max_value=1e300)  # beyond Float32
    | st.text()
    | st.just("\ud800")  # a lone surrogate: no UTF-8 for it
    | st.binary()
    | st.uuids()
    | st.none()
    | st.lists(st.integers(0, 9), max_size=2)
)

SUPPORTED = sorted(WELL_TYPED)


@st.composite
def typed_columns(draw: st.DrawFn) -> tuple[str, list[Any]]:
    inner = draw(st.sampled_from(SUPPORTED))
    form = draw(st.sampled_from(["plain", "nullable", "array"]))
    values = WELL_TYPED[inner]
    if form == "nullable":
        return f"Nullable({inner})", draw(st.lists(values | st.none(), max_size=20))
    if form == "array":
        return f"Array({inner})", draw(st.lists(st.lists(values, max_size=5) | st.tuples(values), max_size=10))
    return inner, draw(st.lists(values, max_size=20))


@settings(max_examples=600, deadline=None)
@given(typed_columns())
def test_well_typed_values_are_encoded_as_the_driver_encodes_them(column: tuple[str, list[Any]]) -> None:
    type_, values = column
    assert encode_column(type_, values) == driver_bytes(type_, values)


@st.composite
def any_columns(draw: st.DrawFn) -> tuple[str, list[Any]]:
    inner = draw(st.sampled_from(SUPPORTED))
    type_ = draw(st.sampled_from([inner, f"Nullable({inner})", f"Array({inner})"]))
    if type_.startswith("Array"):
        return type_, draw(st.lists(st.lists(ANY_VALUE, max_size=3) | ANY_VALUE, max_size=6))
    return type_, draw(st.lists(ANY_VALUE, max_size=6))


@settings(max_examples=1500, deadline=None)
@given(any_columns())
def test_any_value_is_encoded_as_the_driver_encodes_it_or_handed_to_the_driver(column: tuple[str, list[Any]]) -> None:
    type_, values = column
    try:
        expected: bytes | None = driver_bytes(type_, values)
    except Exception:  # the driver refuses it (any error of its own): the encoder must not take it
        expected = None
    try:
        encoded = encode_column(type_, values)
    except FALLBACK:
        return  # handed to the driver: its own outcome, whatever it is
    assert expected is not None, f"{type_}: encoded values the driver refuses: {values!r}"
    assert encoded == expected


@pytest.mark.parametrize(
    ("type_", "values"),
    [
        ("Float32", [math.nan, -0.0, math.inf, -math.inf, 1e-45, 3.4028234663852886e38]),
        ("Float64", [math.nan, -0.0, math.inf, 5e-324]),
        ("Nullable(Float32)", [None, 1.5, None]),
        ("Int64", [-(2**63), 2**63 - 1, True, False]),
        ("UInt64", [0, 2**64 - 1]),
        ("Nullable(UUID)", [None, uuid.UUID(int=2**128 - 1), uuid.UUID(int=1)]),
        ("Array(String)", [[], ["é€😀", b"\x00\xff"], ("x",)]),
        ("Nullable(String)", [None, "", b""]),
        ("Array(UInt32)", [[], [0, 2**32 - 1], []]),
    ],
)
def test_edges_are_encoded_as_the_driver_encodes_them(type_: str, values: list[Any]) -> None:
    assert encode_column(type_, values) == driver_bytes(type_, values)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("Float32", 3.5e38),  # finite, beyond Float32
        ("Int8", 128),
        ("UInt8", -1),
        ("UInt64", 2**64),
        ("Int64", 1.5),
        ("String", None),
        ("String", 7),
        ("String", "\ud800"),
        ("UUID", "00000000-0000-0000-0000-000000000001"),  # the driver parses text; cdcfast takes UUIDs only
        ("Array(String)", "ab"),  # the driver would store the characters
        ("Array(UInt32)", None),
    ],
)
def test_values_the_encoder_does_not_take_are_handed_to_the_driver(type_: str, value: Any) -> None:
    with pytest.raises(FALLBACK):
        encode_column(type_, [value])


@pytest.mark.parametrize(
    "type_",
    [
        "Decimal(38, 0)", "Date32", "DateTime64(3, 'UTC')", "IPv6", "Bool", "FixedString(4)", "Int256",
        "Array(Nullable(String))", "Array(Array(Int8))", "Map(String, String)", "Tuple(Int8, String)",
        "LowCardinality(String)", "Nullable(Decimal(38, 0))", "Array(Decimal(38, 0))",
    ],
)  # fmt: skip
def test_other_types_are_left_to_the_driver(type_: str) -> None:
    assert encode_column(type_, [None]) is None


# -- through a real server: the state insert of a ClickHouse writer -----------------------------------

TS = 1_700_000_000_000_000


class DriverEncodings:
    """What clickhouse-driver encoded during a write: whole inserts (their tables' column names) and
    single columns of an insert cdcfast encoded otherwise (their types)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inserts: list[list[str]] = []
        self.columns: list[str] = []
        send_data, write_one = Client.send_data, clickhouse_native.write_column

        def whole(client: Client, sample_block: Any, data: Any, *args: Any, **kwargs: Any) -> int:
            self.inserts.append([name for name, _ in sample_block.columns_with_types])
            return send_data(client, sample_block, data, *args, **kwargs)

        def column(context: Any, name: str, type_: str, *args: Any, **kwargs: Any) -> None:
            self.columns.append(type_)
            write_one(context, name, type_, *args, **kwargs)

        monkeypatch.setattr(Client, "send_data", whole)
        monkeypatch.setattr(clickhouse_native, "write_column", column)

    def state_inserts(self) -> list[list[str]]:
        return [names for names in self.inserts if "_basis" in names]


class StateTable(ThrowawayTables):
    """``one_table_schema``'s table, written by a ClickHouseSink."""

    def __init__(self) -> None:
        super().__init__("nc_")

    def write_texts(self, texts: list[str], before_writing: Callable[[], Any] | None = None) -> None:
        events = [text_insert(self.keyspace, "t", 1, seq, 100 + seq, TS + seq) for seq in range(len(texts))]
        self.write([replace_text(e, text) for e, text in zip(events, texts)], "n1", (1, 1000), before_writing)

    def alter(self, column: str, type_: str) -> None:
        self.client.execute(f"ALTER TABLE `{self.keyspace}`.t__rows MODIFY COLUMN {column} {type_}")

    def rows(self) -> list[tuple]:
        return self.client.execute(f"SELECT id, seq, a, b, c FROM `{self.keyspace}`.t ORDER BY seq")


def replace_text(event: ChangeEvent, text: str) -> ChangeEvent:
    cell = event.cells[0]
    return msgspec.structs.replace(
        event, cells=[Cell(cell.column, cell.kind, cell.ts, text.encode())], event_id=b""
    ).with_content_id()


@pytest.mark.services
def test_state_rows_are_stored_from_cdcfast_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    table = StateTable()
    driver = DriverEncodings(monkeypatch)
    table.write_texts(["é€😀", "", "x" * 300])
    assert table.rows() == [(1, 0, "é€😀", None, None), (1, 1, "", None, None), (1, 2, "x" * 300, None, None)]
    assert driver.state_inserts() == [] and driver.columns == []  # every state column encoded by cdcfast


@pytest.mark.services
def test_a_state_column_of_a_type_cdcfast_does_not_encode_is_written_by_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = StateTable()
    driver = DriverEncodings(monkeypatch)
    table.write_texts(["one", "two"], before_writing=lambda: table.alter("b", "Nullable(FixedString(8))"))
    assert table.rows() == [(1, 0, "one", None, None), (1, 1, "two", None, None)]
    assert driver.state_inserts() == [] and driver.columns == ["Nullable(FixedString(8))"]


@pytest.mark.services
def test_a_value_cdcfast_does_not_take_hands_the_insert_to_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text into a UUID column (a table made by hand): the driver parses it, cdcfast's encoding does not."""
    table = StateTable()
    driver = DriverEncodings(monkeypatch)
    client = NativeClient.from_url(table.dsn)
    client.execute(f"CREATE DATABASE `{table.keyspace}`")
    client.execute(f"CREATE TABLE `{table.keyspace}`.u (n Int64, id UUID, name String) ENGINE = Memory")
    first = "00000000-0000-0000-0000-000000000001"
    columns = NativeColumns([[1, 2], [first, uuid.UUID(int=2)], ["one", "two"]])
    assert client.execute(f"INSERT INTO `{table.keyspace}`.u (n, id, name) VALUES", columns, columnar=True) == 2
    assert client.execute(f"SELECT n, id, name FROM `{table.keyspace}`.u ORDER BY n") == [
        (1, uuid.UUID(first), "one"),
        (2, uuid.UUID(int=2), "two"),
    ]
    assert driver.inserts == [["n", "id", "name"]]  # the whole insert, by the driver
