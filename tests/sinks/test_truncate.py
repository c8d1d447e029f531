"""TRUNCATE applied by every sink (docs/truncate.md, "What a sink does with it"), on real servers,
with events built by hand.

The stream (one node, ``node1``, segment 100): rows of ``tr.items`` and ``tr.kept``; the node
flushes ``tr.items`` at position 300 (the truncation's recorded position) while writes keep coming
(positions 400, 510, 520: they raced the TRUNCATE and survive it in Cassandra), records the
truncation at 600, and more writes follow in the same batch and the next one. What Cassandra's
``SELECT * FROM tr.items`` shows afterwards, by the rules (a truncation empties the table whatever
the write timestamps, its row tombstones included; the raced writes stay):

* id 1: ``v = 'a2'`` (its raced UPDATE; the INSERT before the flush is gone);
* id 2: gone (written before the flush);
* id 3: ``'after'`` (its row tombstone, newer than the INSERT after the TRUNCATE, was truncated);
* id 4, 5: the raced INSERTs (4 in an earlier batch than the record, 5 in the same one);
* id 6: deleted after the TRUNCATE; id 7: written in the next batch.

``tr.kept`` is not truncated: its row stays.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from support.services import ensure_services
from support.sinks import clickhouse_state, fresh_clickhouse, fresh_database, postgres_state

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import ColumnDef, TableDef
from cdcfast.events import DELETE, INSERT, SET, TRUNCATE, UPDATE, Cell, ChangeEvent
from cdcfast.sinks import open_sink

pytestmark = pytest.mark.services

SEGMENT = 100
RECORDED = 300  # the truncation's recorded position: tr.items' changes at or before it are gone
SOURCE = "node1"
NOW = 2_000_000_000  # seconds: no TTLs here, any moment shows the same


def table(name: str, number: int) -> TableDef:
    int_type, text_type = CqlType("int"), CqlType("text")
    return TableDef(
        id=uuid.UUID(int=number),
        keyspace="tr",
        name=name,
        cdc=True,
        partition_key=[ColumnDef("id", "partition_key", 0, int_type, "int")],
        clustering=[],
        columns={"v": ColumnDef("v", "regular", -1, text_type, "text")},
    )


ITEMS, KEPT = table("items", 1), table("kept", 2)
TABLES = {("tr", "items"): ITEMS, ("tr", "kept"): KEPT}


def key(number: int) -> list[bytes]:
    return [number.to_bytes(4, "big", signed=True)]


def insert(name: str, number: int, value: str, ts: int, position: int) -> ChangeEvent:
    cells = [Cell("v", SET, ts, value.encode())]
    return ChangeEvent(
        b"", "tr", name, INSERT, key(number), [], ts, cells, liveness_ts=ts, segment_id=SEGMENT, position=position
    ).with_content_id()


def update(number: int, value: str, ts: int, position: int) -> ChangeEvent:
    cells = [Cell("v", SET, ts, value.encode())]
    return ChangeEvent(
        b"", "tr", "items", UPDATE, key(number), [], ts, cells, segment_id=SEGMENT, position=position
    ).with_content_id()


def delete(number: int, ts: int, position: int) -> ChangeEvent:
    return ChangeEvent(
        b"", "tr", "items", DELETE, key(number), [], ts, deletion_ts=ts, deletion_time=ts // 1_000_000,
        segment_id=SEGMENT, position=position,
    ).with_content_id()  # fmt: skip


def truncate(position: int, recorded: int, raced: list[ChangeEvent]) -> ChangeEvent:
    return ChangeEvent(
        b"", "tr", "items", TRUNCATE, [], [], 1_700_000_000_000_000, segment_id=SEGMENT, position=position,
        truncated_segment_id=SEGMENT, truncated_position=recorded, truncated_at=1_700_000_000_000, raced=raced,
    ).with_content_id()  # fmt: skip


RACED_EARLY = insert("items", 4, "race-early", 1002, 400)  # after the flush, read in an earlier batch
BATCH_1 = [
    insert("items", 1, "a", 1000, 100),
    insert("items", 2, "b", 1001, 110),
    delete(3, 5000, 120),
    insert("kept", 1, "kept", 1000, 130),
    RACED_EARLY,
]
RACED_SAME = [insert("items", 5, "c", 1003, 510), update(1, "a2", 1004, 520)]
TRUNCATE_EVENT = truncate(600, RECORDED, [RACED_EARLY, *RACED_SAME])
BATCH_2 = [
    *RACED_SAME,
    TRUNCATE_EVENT,
    insert("items", 3, "after", 1006, 700),  # older than id 3's tombstone: shows all the same
    insert("items", 6, "d", 1007, 710),
]
BATCH_3 = [insert("items", 7, "e", 1008, 1000), delete(6, 1009, 1010)]
BATCHES = [(BATCH_1, 500), (BATCH_2, 900), (BATCH_3, 1200)]
EVENT_IDS = {e.event_id for batch, _ in BATCHES for e in batch}

EXPECTED_ITEMS = {1: "a2", 3: "after", 4: "race-early", 5: "c", 7: "e"}
EXPECTED_KEPT = {1: "kept"}


def values(state: dict) -> dict[int, str]:
    return {row["id"]: row["v"] for row in state.values()}


async def deliver(sink: Any, batches: list[tuple[list[ChangeEvent], int]], crash_after_data: bool) -> None:
    """As a writer does; ``crash_after_data``: each batch is first written without its checkpoint (a
    crash between data and checkpoint), then replayed whole with it (what the restart does)."""
    for events, position in batches:
        if crash_after_data:
            await sink.apply(events, TABLES, SOURCE, None)
        await sink.apply(events, TABLES, SOURCE, (SEGMENT, position))


@pytest.mark.parametrize("kind", ["postgresql", "timescaledb", "clickhouse"])
@pytest.mark.parametrize("replayed", [False, True], ids=["once", "replayed"])
def test_truncate_empties_the_state_and_keeps_the_raced_writes(kind: str, replayed: bool) -> None:
    service = {"postgresql": "postgres"}.get(kind, kind)
    dsn = ensure_services([service])[service]
    if kind == "clickhouse":
        fresh_clickhouse(dsn).execute("DROP DATABASE IF EXISTS tr")
    else:
        dsn = asyncio.run(fresh_database(dsn))

    async def run() -> list[tuple]:
        sink = open_sink(kind, dsn, kind)
        await sink.connect()
        await deliver(sink, BATCHES, replayed)
        assert await sink.checkpoint(SOURCE) == (SEGMENT, 1200)
        await sink.close()
        return await change_log(kind, dsn)

    logged = asyncio.run(run())
    if kind == "clickhouse":
        items, kept = clickhouse_state(dsn, ITEMS, NOW), clickhouse_state(dsn, KEPT, NOW)
    else:
        items, kept = asyncio.run(postgres_state(dsn, ITEMS, NOW)), asyncio.run(postgres_state(dsn, KEPT, NOW))
    assert values(items) == EXPECTED_ITEMS
    assert values(kept) == EXPECTED_KEPT

    # the change log: every change once, the truncation as the spec's row
    assert sorted(row[0] for row in logged) == sorted(EVENT_IDS)
    (row,) = [r for r in logged if r[1] == TRUNCATE]
    assert row[0] == TRUNCATE_EVENT.event_id and row[2:6] == (TRUNCATE_EVENT.ts, SEGMENT, 600, SOURCE)
    assert row[6] == {} and row[7] is None and row[8] is None
    assert row[9] == {
        "truncated_segment_id": SEGMENT,
        "truncated_position": RECORDED,
        "truncated_at": 1_700_000_000_000,
    }


async def change_log(kind: str, dsn: str) -> list[tuple]:
    """(event_id, op, ts, segment_id, position, source, key, cells, deletion_ts, range) of tr.items
    and tr.kept, JSON decoded, each row as many times as the change log holds it."""
    import orjson

    def loads(value: Any) -> Any:
        return None if value is None else orjson.loads(value)

    columns = "event_id, op, ts, segment_id, position, source, key, cells, deletion_ts, range"
    rows = []
    if kind == "clickhouse":
        from clickhouse_driver import Client

        client = Client.from_url(dsn)
        for name in ("items", "kept"):
            rows += client.execute(f"SELECT {columns} FROM tr.{name}_changes FINAL")
    else:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        for name in ("items", "kept"):
            rows += await conn.fetch(
                "SELECT event_id, op, ts, segment_id, position, source, key::text, cells::text, deletion_ts, "
                f"range::text FROM tr.{name}_changes"
            )
        await conn.close()
    out = []
    for r in rows:
        event_id, op, ts, segment_id, position, source, key_json, cells, deletion_ts, range_json = tuple(r)
        out.append((event_id.bytes, op, ts, segment_id, position, source, loads(key_json), loads(cells),
                    deletion_ts, loads(range_json)))  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["postgresql", "clickhouse"])
def test_dead_letters_the_truncation_covers_are_not_replayed(kind: str) -> None:
    """Two dead letters of tr.items from node1 whose cause is gone (they can be stored now): the one
    read before the truncation's recorded position would resurrect a truncated row, and is skipped
    with the reason; the one after it is replayed into the state. A letter from another node is
    not covered by node1's truncation."""
    from cdcfast.sinks.poison import DeadLetter, replay_dead_letters

    service = {"postgresql": "postgres"}.get(kind, kind)
    dsn = ensure_services([service])[service]
    if kind == "clickhouse":
        fresh_clickhouse(dsn).execute("DROP DATABASE IF EXISTS tr")
    else:
        dsn = asyncio.run(fresh_database(dsn))
    early = insert("items", 8, "before the flush", 999, 115)
    late = insert("items", 9, "after the truncation", 2000, 1100)
    other = insert("items", 10, "from node2", 998, 115)

    async def run() -> Any:
        sink = open_sink(kind, dsn, kind)
        await sink.connect()
        await deliver(sink, BATCHES, crash_after_data=False)
        for letter, source in ((early, SOURCE), (late, SOURCE), (other, "node2")):
            dead = [DeadLetter(letter, "a value this sink could not store then")]
            if kind == "clickhouse":
                sink._dead_letters(dead, source, replayed=0)
            else:
                await sink._dead_letters(dead, source)
        report = await replay_dead_letters(sink, TABLES)
        again = await replay_dead_letters(sink, TABLES)  # the skipped one stays skipped
        await sink.close()
        return report, again

    report, again = asyncio.run(run())
    assert sorted(report.replayed) == sorted([late.event_id, other.event_id])
    ((skipped, reason),) = report.skipped
    assert skipped.event_id == early.event_id and report.waiting == 3 and report.unstorable == 0
    assert "tr.items" in reason and "node1" in reason and f"{SEGMENT}:{RECORDED}" in reason, reason
    assert again.waiting == 1 and [e.event_id for e, _ in again.skipped] == [early.event_id] and not again.replayed
    if kind == "clickhouse":
        items = clickhouse_state(dsn, ITEMS, NOW)
    else:
        items = asyncio.run(postgres_state(dsn, ITEMS, NOW))
    assert values(items) == {**EXPECTED_ITEMS, 9: "after the truncation", 10: "from node2"}
