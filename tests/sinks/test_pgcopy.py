"""Change-log rows rendered straight into PostgreSQL's binary COPY format (cdcfast/sinks/_pgcopy.pyx)
store exactly what asyncpg stores from the writers' records (``change_record``), and write times
outside Python's ``datetime`` as well."""

from __future__ import annotations

import asyncio
import struct
import uuid

import asyncpg
import pytest
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.sinks._pgcopy import COPY_HEADER, COPY_TRAILER, change_row_copy
from cdcfast.sinks.postgres import CHANGE_COLUMNS, _jsonb, change_record

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
DATETIME_MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999 since 1970
DATETIME_MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00 since 1970
PG_MIN_US = -210_866_803_200_000_000  # 4714-11-24T00:00:00 BC (PostgreSQL's first timestamp) since 1970
TIMESCALE_MAX_US = 9_223_371_331_199_999_999  # 294247-01-01T23:59:59.999999, TimescaleDB's last, since 1970

CHANGE_LOG = (
    "(event_id uuid NOT NULL, op text NOT NULL, ts bigint NOT NULL, change_time timestamptz NOT NULL, "
    "segment_id bigint NOT NULL, position integer NOT NULL, source text NOT NULL, key jsonb NOT NULL, "
    "cells jsonb, deletion_ts bigint, range jsonb, PRIMARY KEY (event_id))"
)  # the columns of a change log (cdcfast.sinks.postgres.TableWriter.ddl)

ROWS = [
    (uuid.uuid4().bytes, "insert", 1_700_000_000_123_456, 1, 0, "node1", b'{"id":1}', b'[{"col":"a"}]', None, None),
    (uuid.uuid4().bytes, "delete", 0, 2**40, 2**31 - 1, "n\u00f6de", '{"k":"\u00e9"}'.encode(), None, 5, None),
    (uuid.uuid4().bytes, "range_delete", -1, 0, 7, "", b"{}", None, -(2**63), b'{"start":[1]}'),
    (uuid.uuid4().bytes, "update", DATETIME_MAX_US - 1, 3, 4, "s", b"{}", b"[]", 2**63 - 1, None),
    (uuid.uuid4().bytes, "update", DATETIME_MIN_US + 1, 3, 6, "s", b"{}", None, None, None),
    (uuid.uuid4().bytes, "truncate", 12, 9, 9, "s", b"{}", None, None, b'{"truncated_at":1}'),
]


def test_framing_is_postgres_binary_copy() -> None:
    """The format as PostgreSQL's COPY documentation defines it, packed independently here."""
    assert COPY_HEADER == b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    assert COPY_TRAILER == struct.pack(">h", -1)
    event_id = bytes(range(16))
    row = change_row_copy(event_id, "insert", 2_000_000, 5, 6, "n1", b'{"a":1}', None, None, b"[]")
    expected = (
        struct.pack(">h", 11)
        + struct.pack(">i", 16) + event_id
        + struct.pack(">i", 6) + b"insert"
        + struct.pack(">iq", 8, 2_000_000)
        + struct.pack(">iq", 8, 2_000_000 - PG_EPOCH_US)
        + struct.pack(">iq", 8, 5)
        + struct.pack(">ii", 4, 6)
        + struct.pack(">i", 2) + b"n1"
        + struct.pack(">i", 8) + b'\x01{"a":1}'
        + struct.pack(">i", -1)
        + struct.pack(">i", -1)
        + struct.pack(">i", 3) + b"\x01[]"
    )  # fmt: skip
    assert row == expected


def test_a_timestamp_beyond_64_bits_is_refused() -> None:
    with pytest.raises(OverflowError):
        change_row_copy(uuid.uuid4().bytes, "insert", 2**70, 1, 1, "s", b"{}", None, None, None)


def test_event_id_must_be_16_bytes() -> None:
    with pytest.raises(ValueError):
        change_row_copy(b"short", "insert", 1, 1, 1, "s", b"{}", None, None, None)


async def copy_rows(conn: asyncpg.Connection, table: str, rows: list[bytes]) -> None:
    """``rows`` (binary COPY form) into ``table``, framed here (not by the writers' ``binary_copy``)."""

    async def chunks():  # noqa: ANN202 - an async generator
        yield COPY_HEADER
        yield b"".join(rows)
        yield COPY_TRAILER

    await conn.copy_to_table(table, source=chunks(), columns=CHANGE_COLUMNS, format="binary")


@pytest.mark.services
def test_copied_rows_equal_what_asyncpg_stores_from_change_records() -> None:
    dsn = ensure_services(["postgres"])["postgres"]

    async def run() -> tuple[list, list]:
        conn = await asyncpg.connect(await fresh_database(dsn))
        await conn.set_type_codec("jsonb", encoder=_jsonb, decoder=bytes, schema="pg_catalog", format="binary")
        for name in ("by_asyncpg", "by_pgcopy"):
            await conn.execute(f"CREATE TABLE {name} {CHANGE_LOG}")
        records = [change_record(*r) for r in ROWS]
        await conn.copy_records_to_table("by_asyncpg", records=records, columns=CHANGE_COLUMNS)
        await copy_rows(conn, "by_pgcopy", [change_row_copy(*r) for r in ROWS])
        query = "SELECT event_id, op, ts, change_time::text, segment_id, position, source, key::text, cells::text, "
        query += "deletion_ts, range::text FROM {} ORDER BY event_id"
        a, b = await conn.fetch(query.format("by_asyncpg")), await conn.fetch(query.format("by_pgcopy"))
        await conn.close()
        return [tuple(r) for r in a], [tuple(r) for r in b]

    by_asyncpg, by_pgcopy = asyncio.run(run())
    assert len(by_pgcopy) == len(ROWS)
    assert by_pgcopy == by_asyncpg
    times = {r[2]: r[3] for r in by_pgcopy}
    assert times[DATETIME_MAX_US - 1] == "9999-12-31 23:59:59.999998+00"
    assert times[DATETIME_MIN_US + 1] == "0001-01-01 00:00:00.000001+00"


def microseconds(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


@pytest.mark.services
def test_change_time_is_the_write_time_over_postgres_whole_range() -> None:
    """Python's datetime (what asyncpg takes) covers years 1 to 9999, Cassandra any 64-bit timestamp:
    ``change_time`` is the write time exactly from PostgreSQL's first moment (4714-11-24 BC) to
    TimescaleDB's last (294247-01-01, a week before the last 64-bit microsecond), the nearer end
    outside."""
    dsn = ensure_services(["postgres"])["postgres"]
    stamps = [DATETIME_MAX_US, DATETIME_MAX_US + 1, 2**62, TIMESCALE_MAX_US, TIMESCALE_MAX_US + 1, 2**63 - 1,
              DATETIME_MIN_US - 1, PG_MIN_US, PG_MIN_US - 1, -(2**63)]  # fmt: skip

    async def run() -> tuple[dict, dict]:
        conn = await asyncpg.connect(await fresh_database(dsn))
        rows = [change_row_copy(uuid.uuid4().bytes, "insert", ts, 1, 1, "s", b"{}", None, None, None) for ts in stamps]
        await conn.execute(f"CREATE TABLE c {CHANGE_LOG}")
        await copy_rows(conn, "c", rows)
        shown = dict(await conn.fetch("SELECT ts, change_time::text FROM c"))
        await conn.set_type_codec(  # the stored value itself: microseconds since 2000
            "timestamptz", schema="pg_catalog", format="binary", encoder=bytes, decoder=microseconds
        )
        stored = dict(await conn.fetch("SELECT ts, change_time FROM c"))
        await conn.close()
        return shown, stored

    shown, stored = asyncio.run(run())
    assert sorted(stored) == sorted(stamps)
    for ts in stamps:
        assert stored[ts] == min(max(ts, PG_MIN_US), TIMESCALE_MAX_US) - PG_EPOCH_US
    assert shown[2**62] == "148108-07-06 14:00:27.387904+00"
    assert shown[2**63 - 1] == "294247-01-01 23:59:59.999999+00"
    assert shown[-(2**63)] == "4714-11-24 00:00:00+00 BC"
