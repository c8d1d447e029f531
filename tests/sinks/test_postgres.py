"""The PostgreSQL and TimescaleDB writers on real servers: corpus replays equal expected/, exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from conftest import CORPUS_ROOT, Corpus
from support.expected import as_of, canonical_rows, differences, load_expected
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import fresh_database
from support.warehouse import from_postgres

from cdcfast.commitlog.schema import Schema
from cdcfast.events import ChangeEvent
from cdcfast.sinks import postgres
from cdcfast.sinks.postgres import PostgresSink

pytestmark = pytest.mark.services
REPLAYED = 12000  # events applied again, from the start and from the end (replays and replicas)


async def replay(
    sink: PostgresSink, schema: Schema, events: list[ChangeEvent], chunk: int = 4000, source: str = "node1"
) -> None:
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}
    for start in range(0, len(events), chunk):
        part = events[start : start + chunk]
        await sink.apply(part, tables, source, (part[-1].segment_id, part[-1].position))


def c50_events(scratch: Path) -> tuple[Schema, list[ChangeEvent]]:
    """c50-v8-lz4's schema and CDC change events (the test is skipped without that corpus)."""
    if not (CORPUS_ROOT / "c50-v8-lz4").exists():
        pytest.skip("corpus missing")
    return cdc_events(Corpus("c50-v8-lz4", scratch))


async def each_change_logged_once(conn: asyncpg.Connection, events: list[ChangeEvent]) -> None:
    """Each table's change log holds one row per distinct change of ``events``."""
    expected_ids = Counter((e.keyspace, e.table) for e in {e.event_id: e for e in events}.values())
    for (ks, name), count in expected_ids.items():
        n = await conn.fetchval(f'SELECT count(*) FROM "{ks}"."{name}_changes"')
        assert n == count, f"{ks}.{name}_changes has {n} rows, expected {count}"


async def state_of(conn: asyncpg.Connection, sink: PostgresSink, schema: Schema, when: int) -> dict:
    out = {}
    for table in schema.cdc_tables():
        writer = sink.writers[(table.keyspace, table.name)]
        columns = table.partition_key + table.clustering + list(table.columns.values())
        rows = await conn.fetch(
            f'SELECT * FROM {writer.state.rsplit(".", 1)[0]}."{table.name}_as_of"(to_timestamp($1))', when
        )
        decoded = [
            {c.name: from_postgres(c.type, writer.targets[c.name].sql, r[c.name]) for c in columns} for r in rows
        ]
        out[table.qualified_name] = canonical_rows(table, decoded)
    return out


@pytest.mark.parametrize("flavour", ["postgres", "timescaledb"])
def test_corpus_replay_equals_expected_exactly_once(corpus: Corpus, flavour: str) -> None:
    if flavour == "timescaledb" and corpus.name != "c50-v8-lz4":
        pytest.skip("TimescaleDB gets every corpus in tests/supervisor/test_supervise.py; here one is enough")
    dsn = ensure_services([flavour])[flavour]
    schema, events = cdc_events(corpus)

    async def run() -> None:
        db = await fresh_database(dsn)
        sink = PostgresSink(db, name=flavour, timescale=flavour == "timescaledb")
        await sink.connect()
        await replay(sink, schema, events)
        await replay(sink, schema, events[:REPLAYED], chunk=1500)  # a replay changes nothing
        # The same changes as logged by two more replicas (their own checkpoints).
        for node in ("node2", "node3"):
            await replay(sink, schema, events[-REPLAYED:], chunk=9000, source=node)
        conn = sink.conn
        assert conn is not None
        failures = []
        got = await state_of(conn, sink, schema, as_of(corpus.root))
        for table in schema.cdc_tables():
            want = load_expected(corpus.root, table)
            if got[table.qualified_name] != want:
                failures.append(differences(table, got[table.qualified_name], want))
        assert not failures, "\n\n".join(failures)
        await each_change_logged_once(conn, events)
        assert await conn.fetchval("SELECT to_regclass('shop.sessions_changes')") is None
        assert await sink.checkpoint("node1") == (events[-1].segment_id, events[-1].position)
        await sink.close()

    asyncio.run(run())


def test_change_log_rows_after_a_duplicate_are_all_written(corpus_scratch) -> None:  # noqa: ANN001
    """A batch meeting ids already in the change log is applied again through staging; the batches
    after it (new ids, a mix of new and known ones) lose no row and add none twice."""
    schema, events = c50_events(corpus_scratch)
    events = events[:6000]
    dsn = ensure_services(["postgres"])["postgres"]

    async def run() -> None:
        sink = PostgresSink(await fresh_database(dsn), name="pg")
        await sink.connect()
        await replay(sink, schema, events[:2000], chunk=2000)
        await replay(sink, schema, events[:2000], chunk=2000, source="node2")  # all known: staged
        await replay(sink, schema, events[2000:3000], chunk=1000, source="node2")  # all new
        await replay(sink, schema, events[2500:4500], chunk=2000, source="node2")  # half known
        await replay(sink, schema, events[4500:], chunk=1500)
        conn = sink.conn
        assert conn is not None
        await each_change_logged_once(conn, events)
        await sink.close()

    asyncio.run(run())


def test_a_merge_failing_while_the_next_change_log_is_copied_rolls_the_batch_back(
    corpus_scratch,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table's merge is planned while the next table's change log is still being copied
    (``PostgresSink._overlapped``). When planning fails, the COPY is given up with the transaction:
    the planning error is what the writer sees, nothing of the batch stays, and the same connection
    applies the batch afterwards."""
    schema, events = c50_events(corpus_scratch)
    events = events[:3000]
    assert len({(e.keyspace, e.table) for e in events}) >= 2  # a next table to copy while planning
    dsn = ensure_services(["postgres"])["postgres"]

    def failing(loaded: object) -> None:
        raise RuntimeError("planning failed")

    async def run() -> None:
        sink = PostgresSink(await fresh_database(dsn), name="pg")
        await sink.connect()
        with monkeypatch.context() as patch:
            patch.setattr(postgres, "planned", failing)
            with pytest.raises(RuntimeError, match="planning failed"):
                await replay(sink, schema, events, chunk=len(events))
        conn = sink.conn
        assert conn is not None
        tables = sorted({(e.keyspace, e.table) for e in events})
        for ks, name in tables:
            assert await conn.fetchval(f'SELECT count(*) FROM "{ks}"."{name}_changes"') == 0
        assert await conn.fetchval("SELECT count(*) FROM cdcfast.checkpoints") == 0
        await replay(sink, schema, events, chunk=len(events))
        await each_change_logged_once(conn, events)
        await sink.close()

    asyncio.run(run())


def test_state_values_the_copy_encoder_does_not_write_go_through_asyncpg(corpus_scratch) -> None:  # noqa: ANN001
    """A state column altered by hand to a type whose values the writer's own encoder does not
    write (``age``: integer to numeric, given Python ints): from the first row holding such a value,
    asyncpg encodes the rest of the batch. The table ends as it does unaltered."""
    schema, events = c50_events(corpus_scratch)
    dsn = ensure_services(["postgres"])["postgres"]
    users_table = next(t for t in schema.cdc_tables() if (t.keyspace, t.name) == ("shop", "users"))
    columns = [c.name for c in users_table.partition_key + users_table.clustering + list(users_table.columns.values())]
    select = "SELECT " + ", ".join(f'"{c}"::text' for c in columns) + " FROM shop.users ORDER BY 1"

    of_users = [i for i, e in enumerate(events) if (e.keyspace, e.table) == ("shop", "users")]
    half = of_users[len(of_users) // 2]  # users rows written on both sides

    async def users(altered: bool) -> list[tuple]:
        sink = PostgresSink(await fresh_database(dsn), name="pg")
        await sink.connect()
        await replay(sink, schema, events[:half])
        conn = sink.conn
        assert conn is not None
        if altered:
            await conn.execute("ALTER TABLE shop.users ALTER COLUMN age TYPE numeric")
        await replay(sink, schema, events[half:])
        if altered:
            assert await conn.fetchval(
                "SELECT format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = 'shop.users'::regclass AND attname = 'age'"
            ) == "numeric"
        rows = [tuple(r) for r in await conn.fetch(select)]
        await sink.close()
        return rows

    plain, altered = asyncio.run(users(False)), asyncio.run(users(True))
    assert plain == altered
    assert any(r[columns.index("age")] is not None for r in plain)


@pytest.mark.parametrize("flavour", ["postgres", "timescaledb"])
def test_writes_with_timestamps_far_from_now_are_stored(corpus_scratch, flavour: str) -> None:  # noqa: ANN001
    """Cassandra takes any 64-bit write timestamp (``USING TIMESTAMP`` in nanoseconds by mistake, or
    negative): the change log keeps it exactly in ``ts``, and as ``change_time`` within what
    PostgreSQL and TimescaleDB hold (4714-11-24 BC to 294247-01-01; the nearer end outside), and the
    state shows the write."""
    import msgspec

    schema, events = c50_events(corpus_scratch)
    insert = next(e for e in events if e.table == "all_types" and e.op == "insert" and e.cells)
    stamps = {
        2**62: "148108-07-06 14:00:27.387904+00",
        2**63 - 1: "294247-01-01 23:59:59.999999+00",
        253_402_300_800_000_000: "10000-01-01 00:00:00+00",
        -(2**62): "4714-11-24 00:00:00+00 BC",
    }
    planted = [
        msgspec.structs.replace(
            insert,
            partition_key=[(7_100_000 + n).to_bytes(4, "big", signed=True)],
            ts=ts,
            liveness_ts=ts,
            cells=[msgspec.structs.replace(c, ts=ts) for c in insert.cells],
            position=insert.position + n,
        ).with_content_id()
        for n, ts in enumerate(stamps)
    ]
    dsn = ensure_services([flavour])[flavour]

    async def run() -> None:
        sink = PostgresSink(await fresh_database(dsn), name=flavour, timescale=flavour == "timescaledb")
        await sink.connect()
        await replay(sink, schema, planted)
        conn = sink.conn
        assert conn is not None
        stored = dict(await conn.fetch("SELECT ts, change_time::text FROM types.all_types_changes"))
        assert stored == stamps
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM types.all_types WHERE id >= 7100000")}
        assert ids == {7_100_000 + n for n in range(len(stamps))}
        assert await sink.dead_letters() == []
        await sink.close()

    asyncio.run(run())


@pytest.mark.parametrize("flavour", ["postgres", "timescaledb"])
def test_writers_of_several_nodes_set_up_a_fresh_database_at_once(flavour: str) -> None:
    """Every node's writer starts together on a new database: none may fail on another's CREATE."""
    db = asyncio.run(fresh_database(ensure_services([flavour])[flavour]))

    async def connect_all() -> list:
        sinks = [PostgresSink(db, name=flavour, timescale=flavour == "timescaledb") for _ in range(6)]
        outcomes = await asyncio.gather(*(sink.connect() for sink in sinks), return_exceptions=True)
        for sink in sinks:
            await sink.close()
        return [o for o in outcomes if isinstance(o, BaseException)]

    for _ in range(3):
        failures = asyncio.run(connect_all())
        assert not failures, failures
        db = asyncio.run(fresh_database(ensure_services([flavour])[flavour]))
