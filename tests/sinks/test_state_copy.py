"""State rows rendered straight into PostgreSQL's binary COPY format (``state_row_copy`` in
cdcfast/sinks/_pgcopy.pyx) store exactly what asyncpg's ``copy_records_to_table`` stores from the
same Python values, on a real server; values it does not write are refused (the writer then lets
asyncpg encode the batch)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import math
import uuid
from decimal import Decimal

import asyncpg
import pytest
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.sinks._pgcopy import Unencodable, state_kinds, state_row_copy
from cdcfast.sinks.postgres import _jsonb, binary_copy

UTC = dt.timezone.utc
COLUMNS = {
    "t": "text",
    "s": "smallint",
    "i": "integer",
    "b": "bigint",
    "d": "double precision",
    "r": "real",
    "ok": "boolean",
    "u": "uuid",
    "raw": "bytea",
    "ts": "timestamp with time zone",
    "day": "date",
    "j": "jsonb",
}
ROWS = [
    ("plain", 1, 2, 3, 1.5, 2.5, True, uuid.UUID(int=1), b"\x00\x01", dt.datetime(2024, 2, 29, 12, 30, 1, 123000, UTC),
     dt.date(2024, 2, 29), '{"a":[1,2.5,"x"]}'),
    ("", -32768, -(2**31), -(2**63), -0.0, -0.0, False, uuid.uuid4(), b"", dt.datetime(1970, 1, 1, tzinfo=UTC),
     dt.date(1970, 1, 1), b'{"k":"\\u00e9"}'),
    ("caf\u00e9 \U0001f600 \"q\" \\", 32767, 2**31 - 1, 2**63 - 1, math.inf, -math.inf, True, uuid.UUID(int=2**128 - 1),
     bytes(range(256)), dt.datetime(1, 1, 1, 0, 0, 0, 1000, UTC), dt.date(1, 1, 2), "[]"),
    ("x", 0, 0, 0, math.nan, math.nan, False, uuid.UUID(int=0), b"x",
     dt.datetime(9999, 12, 31, 23, 59, 59, 999000, UTC), dt.date(9999, 12, 30), "null"),
    ("edges", 0, 0, 0, 5e-324, 1e-45, True, uuid.UUID(int=3), b"y", dt.datetime(9999, 12, 31, 23, 59, 59, 999999, UTC),
     dt.date.max, "{}"),  # asyncpg: infinity for both
    ("edges-", 0, 0, 0, 1.7976931348623157e308, 3.4e38, True, uuid.UUID(int=4), b"z",
     dt.datetime(1, 1, 1, tzinfo=UTC), dt.date.min, "1"),  # asyncpg: -infinity for both
    ("pre-2000", 1, 1, 1, 0.1, 0.1, False, uuid.UUID(int=5), b"w", dt.datetime(1999, 12, 31, 23, 59, 59, 999999, UTC),
     dt.date(1999, 12, 31), '"s"'),
    (None,) * 12,
]  # fmt: skip


NUMERIC_COLUMNS = {"num": "numeric", "t": "text", "a": "text[]"}
ARRAYS = [[], ["a"], ["", None, "caf\u00e9", '"q",{}\\'], [None]]
NUMERIC_ROWS = [
    (Decimal(text), text, ARRAYS[i % len(ARRAYS)])
    for i, text in enumerate((
        "0", "-0", "0E-5", "0E+5", "1.50", "-0.001", "1E+10", "-1E-10", "123.4E-20", "9999", "10000", "0.0001",
        "12345678901234567890.123456789", "-98765432109876543210987654321E+40", "1E-16383", "NaN", "Infinity",
        "-Infinity",
    ))
] + [(None, None, None)]  # fmt: skip


async def stored(dsn: str, columns_sql: dict[str, str] = COLUMNS, rows: list[tuple] = ROWS) -> tuple[list, list]:
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=_jsonb, decoder=lambda d: d, schema="pg_catalog", format="binary")
    columns = ", ".join(f"{name} {sql}" for name, sql in columns_sql.items())
    try:
        for table in ("by_asyncpg", "by_copy"):
            await conn.execute(f"CREATE TABLE {table} (n serial, {columns})")
        await conn.copy_records_to_table("by_asyncpg", records=rows, columns=list(columns_sql))
        types = dict(
            await conn.fetch(
                "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = 'by_copy'::regclass AND attnum > 0 AND NOT attisdropped"
            )
        )
        kinds = state_kinds([types[c] for c in columns_sql])
        assert kinds is not None
        encoded = [state_row_copy(kinds, row) for row in rows]
        await conn.copy_to_table("by_copy", source=binary_copy(encoded), columns=list(columns_sql), format="binary")
        # Text renderings compare everything (NaN, -0, infinities) the way PostgreSQL itself sees it.
        select = ", ".join(f"{c}::text" for c in columns_sql)
        mine = [tuple(r) for r in await conn.fetch(f"SELECT {select} FROM by_copy ORDER BY n")]
        theirs = [tuple(r) for r in await conn.fetch(f"SELECT {select} FROM by_asyncpg ORDER BY n")]
        return mine, theirs
    finally:
        await conn.close()


def test_state_rows_store_what_asyncpg_stores() -> None:
    dsn = ensure_services(["postgres"])["postgres"]
    mine, theirs = asyncio.run(stored(asyncio.run(fresh_database(dsn))))
    assert mine == theirs
    assert theirs[4][9] == "infinity" and theirs[4][10] == "infinity"  # asyncpg's reading of datetime/date max
    assert theirs[5][9] == "-infinity" and theirs[5][10] == "-infinity"
    assert theirs[3][4] == "NaN" and theirs[1][4] == "-0"


def test_numeric_and_text_array_state_values_store_what_asyncpg_stores() -> None:
    """Decimals of every shape (scales, exponents, zeros with scales, digit groups, NaN, infinities),
    text arrays (empty, NULL elements, quotes and braces)."""
    dsn = ensure_services(["postgres"])["postgres"]
    mine, theirs = asyncio.run(stored(asyncio.run(fresh_database(dsn)), NUMERIC_COLUMNS, NUMERIC_ROWS))
    assert mine == theirs
    assert theirs[4][0] == "1.50" and theirs[2][0] == "0.00000"  # the scale kept


@pytest.mark.parametrize(
    "sql, value",
    [
        ("text", b"bytes"),
        ("smallint", 32768),
        ("integer", True),
        ("bigint", 2**63),
        ("double precision", 1),
        ("real", 1e39),
        ("boolean", 1),
        ("uuid", "00000000-0000-0000-0000-000000000000"),
        ("bytea", bytearray(b"x")),
        ("timestamp with time zone", dt.datetime(2024, 1, 1)),  # naive: asyncpg reads it as local time
        ("timestamp with time zone", dt.date(2024, 1, 1)),
        ("date", dt.datetime(2024, 1, 1, tzinfo=UTC)),
        ("jsonb", {"a": 1}),
        ("numeric", 5),
        ("text[]", [["nested"]]),
        ("text[]", ("tuple",)),
        ("text[]", [1]),
        ("numeric", Decimal("1E-16384")),  # asyncpg refuses it
    ],
)
def test_values_it_does_not_write_are_refused(sql: str, value: object) -> None:
    kinds = state_kinds([sql])
    assert kinds is not None
    with pytest.raises(Unencodable):
        state_row_copy(kinds, [value])


ARRAY_COLUMNS = {
    "addr": "inet",
    "i": "integer[]",
    "s": "smallint[]",
    "b": "bigint[]",
    "r": "real[]",
    "d": "double precision[]",
    "ok": "boolean[]",
    "u": "uuid[]",
    "day": "date[]",
    "ts": "timestamp with time zone[]",
    "raw": "bytea[]",
    "t": "text[]",
    "addrs": "inet[]",
}
ARRAY_ROWS = [
    (ipaddress.ip_address("10.0.0.1"), [], [], [], [], [], [], [], [], [], [], [], []),
    (ipaddress.ip_address("::ffff:10.0.0.1"), [1, None, -(2**31), 2**31 - 1], [-32768, 32767], [2**63 - 1, -(2**63)],
     [1.5, math.nan, -0.0, math.inf, 3.4e38, 1e-45], [5e-324, -math.inf, None], [True, False, None],
     [uuid.UUID(int=1), None], [dt.date(2024, 2, 29), dt.date.max, dt.date.min],
     [dt.datetime(2024, 2, 29, 12, 30, 1, 123000, UTC), dt.datetime(1, 1, 1, tzinfo=UTC), None],
     [b"", b"\x00\xff", None], ["caf\u00e9", None, ""], [ipaddress.ip_address("::1"), None]),
    (ipaddress.ip_address("2001:db8::8a2e:370:7334"), [None], [None], [None], [None], [None], [None], [None], [None],
     [None], [None], [None], [ipaddress.ip_address("0.0.0.0")]),
    (None,) * 13,
]  # fmt: skip


def test_inet_and_array_state_values_store_what_asyncpg_stores() -> None:
    """Addresses (IPv4, IPv6, IPv4-mapped) and flat arrays of each element type it writes (empty,
    NULL elements, each type's edges)."""
    dsn = ensure_services(["postgres"])["postgres"]
    mine, theirs = asyncio.run(stored(asyncio.run(fresh_database(dsn)), ARRAY_COLUMNS, ARRAY_ROWS))
    assert mine == theirs
    assert theirs[1][0].startswith("::ffff:10.0.0.1") and theirs[1][1] == "{1,NULL,-2147483648,2147483647}"


@pytest.mark.parametrize(
    "sql, value",
    [
        ("inet", "10.0.0.1"),
        ("inet", ipaddress.ip_network("10.0.0.0/8")),
        ("inet", ipaddress.ip_interface("10.0.0.1/8")),
        ("integer[]", [2**31]),
        ("integer[]", [True]),
        ("integer[]", [[1]]),
        ("integer[]", (1,)),
        ("real[]", [1e39]),
        ("real[]", [1]),
        ("bigint[]", [1.0]),
        ("numeric[]", [Decimal(1)]),
    ],
)
def test_addresses_and_array_values_it_does_not_write_are_refused(sql: str, value: object) -> None:
    kinds = state_kinds([sql])
    if kinds is not None:
        with pytest.raises(Unencodable):
            state_row_copy(kinds, [value])


def test_column_types_it_does_not_write_have_no_encoders() -> None:
    assert state_kinds(["text", "cidr"]) is None
    assert state_kinds(["numeric[]"]) is None
    assert state_kinds(["jsonb[]"]) is None
    assert state_kinds(["timestamp without time zone"]) is None


# -- a batch's state rows in one pass (state_rows_copy) ----------------------------------------------
def _state_sqls(writer) -> list[str]:  # noqa: ANN001 (a postgres TableWriter)
    """The state table's column types as the writer's DDL makes them (TableWriter.state_columns)."""
    data = [writer.targets[c.name].sql for c in writer.key_columns + writer.data_columns]
    return data + ["bytea", "bytea", "jsonb", "timestamptz", "bytea"]


def test_state_rows_of_a_batch_equal_the_records_row_by_row(corpus) -> None:  # noqa: ANN001 (conftest.Corpus)
    """Every corpus table's planned visible rows: ``state_rows_copy`` gives, for each, the bytes
    ``state_row_copy`` gives for the writer's record (``TableWriter.state_record``), up to the first
    it refuses, and hands back the rest."""
    from support.replay import cdc_events

    from cdcfast.sinks._pgcopy import state_rows_copy
    from cdcfast.sinks._scalars import row_values
    from cdcfast.sinks.encode import Screening
    from cdcfast.sinks.merge import StoredPartition, plan
    from cdcfast.sinks.postgres import TableWriter
    from cdcfast.transform.typemap import load_mappings

    schema, events = cdc_events(corpus)
    mappings = load_mappings()
    compared = 0
    for table in schema.cdc_tables():
        writer = TableWriter(table, mappings, timescale=False)
        kinds = state_kinds(_state_sqls(writer))
        mine = [e for e in events if (e.keyspace, e.table) == (table.keyspace, table.name)]
        for start in range(0, len(mine), 997):
            screening = Screening(writer.codec, mine[start : start + 997], "t").finish()
            good, converted = screening.good, screening.converted
            stored = {tuple(e.partition_key): StoredPartition(None) for e in good}
            plans = plan(table, stored, good)
            records = [
                writer.state_record(row, key, p.pk_bytes, blob, converted)
                for p in plans
                for key, row, blob in p.visible
            ]
            if kinds is None:
                continue
            want: list[bytes] = []
            for r in records:
                try:
                    want.append(state_row_copy(kinds, r))
                except Unencodable:
                    break
            rest: list = []
            assert list(state_rows_copy(kinds, plans, row_values, writer.codec, converted.values, rest)) == want
            assert len(want) + len(rest) == len(records)
            compared += len(want)
    assert compared


def test_state_rows_stop_at_a_value_the_encoder_does_not_write() -> None:
    """Rows go out until one holds a value this encoder does not write; that row and every later one,
    of its partition and of the next ones, are handed back for asyncpg, in order."""
    from types import SimpleNamespace

    from cdcfast.sinks._pgcopy import state_rows_copy

    def row(value: object) -> SimpleNamespace:
        return SimpleNamespace(value=value, expires={}, row_expires=0)

    plans = [
        SimpleNamespace(pk_bytes=b"p1", visible=[(b"k1", row(1), b"s1"), (b"k2", row(2), b"s2")]),
        SimpleNamespace(
            pk_bytes=b"p2", visible=[(b"k3", row(3), b"s3"), (b"k4", row("4"), b"s4"), (b"k5", row(5), b"s5")]
        ),
        SimpleNamespace(pk_bytes=b"p3", visible=[(b"k6", row(6), b"s6")]),
    ]
    kinds = state_kinds(["integer", "bytea", "bytea", "jsonb", "timestamptz", "bytea"])
    assert kinds is not None

    def values(codec: object, r: SimpleNamespace, memo: dict) -> list:
        return [r.value]

    rest: list = []
    sent = list(state_rows_copy(kinds, plans, values, None, {}, rest))
    assert sent == [
        state_row_copy(kinds, [n, key, pk, None, None, blob])
        for n, key, pk, blob in [(1, b"k1", b"p1", b"s1"), (2, b"k2", b"p1", b"s2"), (3, b"k3", b"p2", b"s3")]
    ]
    assert [(pk, key, blob) for pk, key, _, blob in rest] == [
        (b"p2", b"k4", b"s4"),
        (b"p2", b"k5", b"s5"),
        (b"p3", b"k6", b"s6"),
    ]
    assert [r.value for _, _, r, _ in rest] == ["4", 5, 6]
