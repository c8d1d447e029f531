"""ClickHouse change logs as the server stores them (a real 18.16 server).

The writer sends each batch's change-log rows as a Native-format block it encodes itself
(:mod:`cdcfast.sinks._chnative`); what the server stores must be each change's fields, exactly,
whatever the table's column types turn out to be (a table altered by hand gets the driver's
encoding instead).
"""

from __future__ import annotations

import json
import uuid

import msgspec
import pytest
from support.clickhouse_tables import ThrowawayTables

from cdcfast.events import DELETE, INSERT, PARTITION_DELETE, RANGE_DELETE, UPDATE, Cell, ChangeEvent
from cdcfast.sinks import clickhouse

pytestmark = pytest.mark.services
TS = 1_700_000_000_123_456  # µs: 2023-11-14T22:13:20.123456Z


def int32(value: int) -> bytes:
    return value.to_bytes(4, "big", signed=True)


def change(op: str, seq: int | None, ts: int = TS, **fields) -> ChangeEvent:
    clustering = [] if seq is None else [int32(seq)]
    return ChangeEvent(
        b"", keyspace="", table="t", op=op, partition_key=[int32(7)], clustering=clustering, ts=ts, **fields
    )


EVENTS = [
    change(INSERT, 1, cells=[Cell("a", 0, TS, "é€😀".encode()), Cell("b", 0, TS, b"")], liveness_ts=TS),
    change(UPDATE, 2, ts=TS + 1, cells=[Cell("c", 1, TS + 1)], segment_id=2**40, position=2**31 - 1),
    change(DELETE, 1, ts=TS + 2, deletion_ts=TS + 2, deletion_time=1_700_000_000),
    change(
        RANGE_DELETE,
        None,
        ts=TS + 3,
        deletion_ts=TS + 3,
        deletion_time=1_700_000_000,
        range_start=[int32(3)],
        range_start_inclusive=False,
        range_end=[int32(9)],
    ),  # fmt: skip
    change(PARTITION_DELETE, None, ts=-5, deletion_ts=-5, deletion_time=1_700_000_000),  # before 1970
    change(UPDATE, 3, ts=(2**32 - 1) * 1_000_000 + 999_999, cells=[Cell("a", 0, TS, b"last")]),  # DateTime's end
]


class ChangeLog(ThrowawayTables):
    def __init__(self) -> None:
        super().__init__("cl_")
        self.events = [
            e.__class__(
                **{**{f: getattr(e, f) for f in e.__struct_fields__}, "keyspace": self.keyspace}
            ).with_content_id()  # fmt: skip
            for e in EVENTS
        ]

    def apply(self, source: str, before_writing=None) -> None:
        self.write(self.events, source, (1, 1), before_writing)

    def rows(self) -> list[tuple]:
        return self.client.execute(
            "SELECT event_id, op, ts, toUInt32(change_time), segment_id, position, source, key, cells, "
            f"deletion_ts, range FROM `{self.keyspace}`.t_changes ORDER BY ts"
        )


def expected_row(event: ChangeEvent, source: str) -> tuple:
    seconds = min(max(0, event.ts // 1_000_000), 2**32 - 1)  # DateTime holds 1970 to 2106
    return (uuid.UUID(bytes=event.event_id), event.op, event.ts, seconds, event.segment_id, event.position, source)


def check(log: ChangeLog, source: str) -> None:
    rows = log.rows()
    by_ts = sorted(log.events, key=lambda e: e.ts)
    assert [r[:7] for r in rows] == [expected_row(e, source) for e in by_ts]
    keys = [json.loads(r[7]) for r in rows]
    assert keys == [
        {"id": 7},
        {"id": 7, "seq": 1},
        {"id": 7, "seq": 2},
        {"id": 7, "seq": 1},
        {"id": 7},
        {"id": 7, "seq": 3},
    ]
    cells = [None if r[8] is None else [(c["col"], c.get("value")) for c in json.loads(r[8])] for r in rows]
    assert cells == [None, [("a", "é€😀"), ("b", "")], [("c", None)], None, None, [("a", "last")]]
    assert [r[9] for r in rows] == [-5, None, None, TS + 2, TS + 3, None]
    assert [None if r[10] is None else json.loads(r[10]) for r in rows] == [
        None, None, None, None,
        {"start": [3], "start_inclusive": False, "end": [9], "end_inclusive": True},
        None,
    ]  # fmt: skip


@pytest.fixture
def driver_encodings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows the driver encoded (instead of cdcfast's own encoding), per insert."""
    calls: list[int] = []
    columnar = clickhouse._change_log_columnar

    def counted(rows: list[tuple]) -> list[list]:
        calls.append(len(rows))
        return columnar(rows)

    monkeypatch.setattr(clickhouse, "_change_log_columnar", counted)
    return calls


def test_change_log_rows_are_stored_field_for_field(driver_encodings: list[int]) -> None:
    log = ChangeLog()
    log.apply("nœud-1")
    check(log, "nœud-1")
    assert driver_encodings == []  # all sent in cdcfast's own encoding


def test_a_change_log_table_altered_by_hand_gets_the_same_rows(driver_encodings: list[int]) -> None:
    log = ChangeLog()
    # A column type the writer's own encoding does not write: the driver encodes the batch instead.
    log.apply("n2", lambda: log.client.execute(f"ALTER TABLE `{log.keyspace}`.t_changes MODIFY COLUMN position Int64"))
    check(log, "n2")
    assert driver_encodings == [len(EVENTS)]


def test_a_compressing_connection_stores_the_same_rows(driver_encodings: list[int]) -> None:
    log = ChangeLog()
    log.dsn += ("&" if "?" in log.dsn else "?") + "compression=lz4"
    log.apply("n3")
    check(log, "n3")
    assert driver_encodings == []


def test_write_timestamps_past_2106_are_stored_and_their_rows_show() -> None:
    """Cassandra takes any 64-bit write timestamp (``USING TIMESTAMP`` in nanoseconds by mistake): the
    change log keeps it exactly in ``ts`` and as ``change_time`` at ``DateTime``'s last second (2106),
    and the state shows the write, as Cassandra's ``SELECT`` does."""
    log = ChangeLog()
    stamps = [2**62, 2**63 - 1, 2**32 * 1_000_000]  # year ~146 000, the last microsecond, one second past 2106
    log.events = [
        change(INSERT, n, ts=ts, cells=[Cell("a", 0, ts, f"far {n}".encode())], liveness_ts=ts).with_content_id()
        for n, ts in enumerate(stamps)
    ]
    log.events = [msgspec.structs.replace(e, keyspace=log.keyspace).with_content_id() for e in log.events]
    log.apply("n4")
    stored = log.client.execute(f"SELECT ts, toUInt32(change_time) FROM `{log.keyspace}`.t_changes ORDER BY ts")
    assert stored == [(ts, 2**32 - 1) for ts in sorted(stamps)]
    state = log.client.execute(f"SELECT seq, a FROM `{log.keyspace}`.t ORDER BY seq")
    assert state == [(n, f"far {n}") for n in range(len(stamps))]
    assert log.client.execute(f"SELECT count() FROM cdcfast.dead_letters WHERE event LIKE '%{log.keyspace}%'") == [(0,)]
