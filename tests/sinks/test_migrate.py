"""Warehouses follow Cassandra schema changes (docs/schema-evolution.md), on real servers.

The corpus c50-v8-lz4 added ``shop.users.loyalty_tier`` and dropped ``shop.users.phone`` during its
workload: ``shop.users``' events before the ADD are written with the table as it was then
(schema/014.json), the rest with the final definition; the state must equal Cassandra's final
``SELECT`` (expected/) and every change be logged once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import uuid
from dataclasses import replace

import asyncpg
import pytest
import structlog.testing
from clickhouse_driver import Client
from conftest import CORPUS_ROOT, Corpus
from support.expected import as_of, load_expected
from support.services import ensure_services
from support.sinks import clickhouse_state, fresh_clickhouse, fresh_database, postgres_state

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.commitlog.cqltypes import parse_cql_type
from cdcfast.commitlog.schema import ColumnDef, Schema, TableDef
from cdcfast.events import SET, Cell, ChangeEvent, events_from_batch
from cdcfast.log import get_logger
from cdcfast.sinks.clickhouse import ClickHouseSink
from cdcfast.sinks.migrate import aside_name, retain_dropped
from cdcfast.sinks.poison import ReplayReport, replay_dead_letters
from cdcfast.sinks.postgres import PostgresSink
from cdcfast.transform.typemap import PACKAGE_MAPPINGS, TypeMappings, load_mappings

pytestmark = pytest.mark.services
CORPUS = "c50-v8-lz4"
FLAVOURS = ["postgres", "timescaledb", "clickhouse"]


class History:
    """shop.users' events around the ADD COLUMN, each part decoded with the schema of its time."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.final = load_schema(corpus.schema_dir)
        self.before_add = load_schema(corpus.schema_dir / "014.json")
        self.old = self.before_add.by_name("shop", "users")
        self.new = self.final.by_name("shop", "users")
        assert "loyalty_tier" not in self.old.columns and "phone" in self.old.columns
        assert "loyalty_tier" in self.new.columns and "phone" in self.new.dropped
        final_events = self._users(self.final)
        split = next(i for i, e in enumerate(final_events) if any(c.column == "loyalty_tier" for c in e.cells))
        at = (final_events[split].segment_id, final_events[split].position)
        # Before the ADD: as a reader with the schema of then decoded them (phone values included).
        self.early = [e for e in self._users(self.before_add) if (e.segment_id, e.position) < at]
        self.late = final_events[split:]
        assert len({e.event_id for e in self.early} | {e.event_id for e in self.late}) == len(final_events)

    def _users(self, schema: Schema) -> list[ChangeEvent]:
        reader = CommitLogReader(schema)
        return [
            e
            for b in reader.read_paths([self.corpus.cdc_raw])
            for e in events_from_batch(b)
            if (e.keyspace, e.table) == ("shop", "users")
        ]


@pytest.fixture(scope="module")
def history(corpus_scratch) -> History:  # noqa: ANN001
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    return History(Corpus(CORPUS, corpus_scratch))


def sync(coroutine):  # noqa: ANN001, ANN201
    """Run a coroutine to its end, also from inside a running event loop (in its own thread)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def open_sink(flavour: str, **options) -> tuple[object, str]:  # noqa: ANN003
    dsn = ensure_services([flavour])[flavour]
    if flavour == "clickhouse":
        fresh_clickhouse(dsn)
        return ClickHouseSink(dsn, name=flavour, **options), dsn
    db = asyncio.run(fresh_database(dsn))
    return PostgresSink(db, name=flavour, timescale=flavour == "timescaledb", **options), db


def reopen(sink, **options):  # noqa: ANN001, ANN003, ANN201
    if isinstance(sink, ClickHouseSink):
        return ClickHouseSink(sink.dsn, name=sink.name, **options)
    return PostgresSink(sink.dsn, name=sink.name, timescale=sink.timescale, **options)


async def apply(sink, table: TableDef, events: list[ChangeEvent], chunk: int = 700) -> None:  # noqa: ANN001
    tables = {(table.keyspace, table.name): table}
    for start in range(0, len(events), chunk):
        part = events[start : start + chunk]
        await sink.apply(part, tables, "node1", (part[-1].segment_id, part[-1].position))


def columns(flavour: str, dsn: str, relation: str) -> list[str]:
    keyspace, name = relation.split(".")
    if flavour == "clickhouse":
        client = Client.from_url(dsn)
        rows = client.execute(
            "SELECT name FROM system.columns WHERE database = %(d)s AND table = %(t)s", {"d": keyspace, "t": name}
        )
        return [r[0] for r in rows]

    async def read() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                keyspace,
                name,
            )
        finally:
            await conn.close()
        return [r[0] for r in rows]

    return sync(read())


def count(flavour: str, dsn: str, relation: str) -> int:
    keyspace, name = relation.split(".")
    if flavour == "clickhouse":
        final = " FINAL" if not name.endswith("_view") else ""
        return Client.from_url(dsn).execute(f"SELECT count() FROM `{keyspace}`.`{name}`{final}")[0][0]

    async def read() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(f'SELECT count(*) FROM "{keyspace}"."{name}"')
        finally:
            await conn.close()

    return sync(read())


def registry(flavour: str, dsn: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(keyspace, table) -> (table id, status), as the sink's registry has it."""
    if flavour == "clickhouse":
        rows = Client.from_url(dsn).execute("SELECT keyspace, table, table_id, status FROM cdcfast.tables FINAL")
    else:

        async def read() -> list:
            conn = await asyncpg.connect(dsn)
            try:
                return await conn.fetch('SELECT keyspace, "table", table_id, status FROM cdcfast.tables')
            finally:
                await conn.close()

        rows = sync(read())
    return {(r[0], r[1]): (str(r[2]), r[3]) for r in rows}


def state(flavour: str, dsn: str, table: TableDef, when: int) -> dict:
    if flavour == "clickhouse":
        return clickhouse_state(dsn, table, when)
    return asyncio.run(postgres_state(dsn, table, when))


def expected_users(history: History, flavour: str, table: TableDef) -> dict:
    want = load_expected(history.corpus.root, table)
    if flavour == "clickhouse":  # documented: an Array column cannot be NULL (null and empty are [])
        for row in want.values():
            for name in ("tags", "prefs"):
                if name in row and row[name] in ((), frozenset()):
                    row[name] = None
    return want


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_add_and_drop_column_followed_live_dropped_column_kept(history: History, flavour: str) -> None:
    """One sink, no restart: the first event with the new definition migrates the table first."""
    sink, dsn = open_sink(flavour)

    async def run() -> None:
        await sink.connect()
        await sink.prepare(history.before_add)
        await apply(sink, history.old, history.early)
        assert "loyalty_tier" not in columns(
            flavour, dsn, "shop.users" if flavour != "clickhouse" else "shop.users__rows"
        )
        await apply(sink, history.new, history.late)
        await sink.close()

    asyncio.run(run())
    relation = "shop.users" if flavour != "clickhouse" else "shop.users__rows"
    have = columns(flavour, dsn, relation)
    assert "loyalty_tier" in have
    assert "phone" in have, "dropped_columns: keep (the default) keeps the warehouse column"
    assert state(flavour, dsn, history.new, as_of(history.corpus.root)) == expected_users(history, flavour, history.new)
    assert count(flavour, dsn, "shop.users_changes") == len(history.early) + len(history.late)
    assert registry(flavour, dsn)[("shop", "users")] == (str(history.new.id), "live")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tables_made_by_an_older_schema_migrated_at_startup_dropped_column_removed(
    history: History, flavour: str
) -> None:
    sink, dsn = open_sink(flavour)

    async def before() -> None:
        await sink.connect()
        await sink.prepare(history.before_add)
        await apply(sink, history.old, history.early)
        await sink.close()

    asyncio.run(before())
    restarted = reopen(sink, dropped_columns="remove")

    async def after() -> None:
        await restarted.connect()
        await restarted.prepare(history.final)  # start-up: before any event
        relation = "shop.users" if flavour != "clickhouse" else "shop.users__rows"
        have = columns(flavour, dsn, relation)
        assert "loyalty_tier" in have and "phone" not in have
        await apply(restarted, history.new, history.late)
        await restarted.close()

    asyncio.run(after())
    assert state(flavour, dsn, history.new, as_of(history.corpus.root)) == expected_users(history, flavour, history.new)
    assert count(flavour, dsn, "shop.users_changes") == len(history.early) + len(history.late)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_table_recreated_under_its_name_old_tables_set_aside(history: History, flavour: str) -> None:
    """A new table id for shop.users: the old warehouse tables are renamed aside, the new table's
    state holds only the new table's rows; late mutations of the old id reach the old tables."""
    sink, dsn = open_sink(flavour)
    recreated = replace(history.new, id=uuid.uuid4())
    old_events, new_events = history.late[: len(history.late) // 2], history.late[len(history.late) // 2 :]
    aside = aside_name("users", history.new.id)
    # The writer's view once the schema shows the drop and re-creation: the old definition stays
    # for late mutations, under the aside name.
    both = retain_dropped(Schema({history.new.id: history.new}), Schema({recreated.id: recreated}))
    old_there = both.tables[history.new.id]
    assert old_there.name == aside

    async def run() -> None:
        await sink.connect()
        await sink.prepare(Schema({history.new.id: history.new}))
        await apply(sink, history.new, old_events)
        await sink.prepare(both)
        await apply(sink, recreated, new_events)
        late = [msgspec_replace(e, table=aside) for e in old_events[:50]]
        await apply(sink, old_there, late)  # replayed late: already there, nothing changes
        await sink.close()

    asyncio.run(run())
    assert count(flavour, dsn, "shop.users_changes") == len(new_events)
    assert count(flavour, dsn, f"shop.{aside}_changes") == len(old_events)
    got = registry(flavour, dsn)
    assert got[("shop", "users")] == (str(recreated.id), "live")
    assert got[("shop", aside)] == (str(history.new.id), "replaced")
    keys = {tuple(e.partition_key) for e in new_events if e.op != "partition_delete"}
    state_rows = state(flavour, dsn, recreated, as_of(history.corpus.root))
    assert len(state_rows) <= len(keys)
    assert count(flavour, dsn, f"shop.{aside}" if flavour != "clickhouse" else f"shop.{aside}__rows") > 0


def msgspec_replace(event: ChangeEvent, **changes) -> ChangeEvent:  # noqa: ANN003
    import msgspec

    return msgspec.structs.replace(event, **changes)


@pytest.mark.parametrize("flavour", ["postgres", "clickhouse"])
def test_dropped_table_kept_and_marked(history: History, flavour: str) -> None:
    schema_with = load_schema(history.corpus.schema_dir / "019.json")
    schema_without = load_schema(history.corpus.schema_dir / "020.json")
    scratch = schema_with.by_name("shop", "scratch")
    sink, dsn = open_sink(flavour)

    async def run() -> None:
        await sink.connect()
        await sink.prepare(schema_with)
        await sink.prepare(retain_dropped(schema_with, schema_without))
        await sink.close()
        restarted = reopen(sink)
        await restarted.connect()
        await restarted.prepare(schema_without)  # after a restart: the table is simply absent
        await restarted.close()

    asyncio.run(run())
    assert registry(flavour, dsn)[("shop", "scratch")] == (str(scratch.id), "dropped")
    relation = "shop.scratch" if flavour != "clickhouse" else "shop.scratch__rows"
    assert columns(flavour, dsn, relation), "a dropped table's warehouse tables are kept"


@pytest.mark.parametrize("flavour", ["postgres", "clickhouse"])
def test_a_dropped_table_first_met_through_its_late_changes_is_registered_dropped(
    history: History, flavour: str
) -> None:
    """A writer that learns of shop.scratch only after its drop (created and dropped between two of
    its schema reads) still stores its late changes, and the registry says the table is dropped."""
    schema_with = load_schema(history.corpus.schema_dir / "019.json")
    scratch = schema_with.by_name("shop", "scratch")
    late = [
        e
        for b in CommitLogReader(schema_with).read_paths([history.corpus.cdc_raw])
        for e in events_from_batch(b)
        if e.table == "scratch"
    ]
    assert late, "the corpus writes shop.scratch"
    sink, dsn = open_sink(flavour)

    async def run() -> None:
        await sink.connect()
        await sink.prepare(retain_dropped(schema_with, load_schema(history.corpus.schema_dir / "020.json")))
        await apply(sink, scratch, late)
        await sink.close()

    asyncio.run(run())
    assert registry(flavour, dsn)[("shop", "scratch")] == (str(scratch.id), "dropped")
    assert count(flavour, dsn, "shop.scratch_changes") == len(late)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_auto_migrate_off_warns_and_keeps_values_in_the_change_log(history: History, flavour: str) -> None:
    sink, dsn = open_sink(flavour, auto_migrate=False)
    relation = "shop.users" if flavour != "clickhouse" else "shop.users__rows"

    async def run() -> None:
        await sink.connect()
        await sink.prepare(history.before_add)
        await apply(sink, history.old, history.early)
        await apply(sink, history.new, history.late)
        await sink.close()

    get_logger("test")  # logging set up first: set up inside capture_logs, it would replace the capture
    with structlog.testing.capture_logs() as logged_lines:
        asyncio.run(run())
    assert "loyalty_tier" not in columns(flavour, dsn, relation), "auto_migrate off: no DDL"
    warnings = [
        line for line in logged_lines if line["log_level"] == "warning" and line.get("column") == "loyalty_tier"
    ]
    assert len(warnings) == 1, logged_lines  # once per change, not per batch
    assert warnings[0]["keyspace"] == "shop" and warnings[0]["table"] == "users"
    assert f"sink {flavour}" in warnings[0]["event"] and "ADD COLUMN" in warnings[0]["ddl"]
    # Every loyalty_tier value is in the change log.
    tiers = sum(1 for e in history.late for c in e.cells if c.column == "loyalty_tier")
    assert tiers > 0
    if flavour == "clickhouse":
        rows = Client.from_url(dsn).execute("SELECT cells FROM shop.users_changes FINAL WHERE cells IS NOT NULL")
        logged = sum(1 for (cells,) in rows for c in json.loads(cells) if c["col"] == "loyalty_tier")
    else:

        async def read() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return await conn.fetchval(
                    "SELECT count(*) FROM shop.users_changes, jsonb_array_elements(cells) c "
                    "WHERE c->>'col' = 'loyalty_tier'"
                )
            finally:
                await conn.close()

        logged = sync(read())
    assert logged == tiers
    # The rest of the state is Cassandra's.
    shown = replace(history.new, columns={n: c for n, c in history.new.columns.items() if n != "loyalty_tier"})
    want = {
        k: {n: v for n, v in row.items() if n != "loyalty_tier"}
        for k, row in expected_users(history, flavour, shown).items()
    }
    assert state(flavour, dsn, shown, as_of(history.corpus.root)) == want
    # Switched on: the column is added at the next start.
    restarted = reopen(sink)

    async def again() -> None:
        await restarted.connect()
        await restarted.prepare(history.final)
        await restarted.close()

    asyncio.run(again())
    assert "loyalty_tier" in columns(flavour, dsn, relation)


# A type mapping a warehouse cannot follow: written for servers that have the type, run against one
# that has not (PostgreSQL without the ip4r extension; ClickHouse 18.16, before IPv6 columns).
UNFOLLOWABLE_INET = {
    "postgres": (
        '  inet: {sql: inet, convert: same, lossless: true, note: "IPv4 and IPv4-mapped IPv6 stay apart"}',
        "  inet: {sql: ip4r, convert: inet_text, lossless: true}",
    ),
    "clickhouse": ("      requires: [ipv6]\n", ""),
}


def unfollowable_mappings(tmp_path) -> TypeMappings:  # noqa: ANN001
    text = PACKAGE_MAPPINGS.read_text()
    for old, new in UNFOLLOWABLE_INET.values():
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "mappings.yaml"
    path.write_text(text)
    return load_mappings(path)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_column_the_warehouse_cannot_add_sends_its_changes_to_the_dlq_until_fixed(
    history: History, flavour: str, tmp_path
) -> None:  # noqa: ANN001
    """Cassandra adds ``shop.users.loyalty_tier text`` and ``last_ip inet``; the warehouse refuses
    the ALTER for ``last_ip``. The changes carrying a ``last_ip`` go to the dead-letter queue with
    that reason, everything else keeps flowing (``loyalty_tier`` is added and filled), the sink
    stays up. After the operator fixed the mapping, ``dlq replay`` adds the column and applies them,
    once."""
    inet = parse_cql_type("inet")
    with_ip = replace(
        history.new, columns={**history.new.columns, "last_ip": ColumnDef("last_ip", "regular", -1, inet, "inet")}
    )
    newest = max(e.ts for e in history.early + history.late)
    keys = sorted({tuple(e.partition_key) for e in history.late if e.op == "update"})
    want = expected_users(history, flavour, history.new)
    shown = [k for k in keys if (uuid.UUID(bytes=k[0]),) in want][:5]
    assert len(shown) == 5
    addresses = {k: bytes([10, 9, 0, n + 1]) for n, k in enumerate(shown)}
    template = next(e for e in history.late if e.op == "update")
    planted = [
        msgspec_replace(
            template,
            partition_key=list(k),
            ts=newest + 1,
            cells=[Cell("last_ip", SET, newest + 1, value)],
            liveness_ts=None,
        ).with_content_id()
        for k, value in addresses.items()
    ]
    late = list(history.late)
    for n, event in enumerate(planted):  # spread over the late changes, each at a neighbour's position
        at = (n + 1) * len(late) // (len(planted) + 1)
        late.insert(at, msgspec_replace(event, segment_id=late[at].segment_id, position=late[at].position))
    sink, dsn = open_sink(flavour, mappings=unfollowable_mappings(tmp_path))
    relation = "shop.users" if flavour != "clickhouse" else "shop.users__rows"

    async def run() -> list[dict]:
        await sink.connect()
        await sink.prepare(Schema({history.old.id: history.old}))  # shop.users alone: all_types has an inet
        await apply(sink, history.old, history.early)
        await sink.prepare(Schema({with_ip.id: with_ip}))
        await apply(sink, with_ip, late)
        letters = await sink.dead_letters()
        await sink.close()
        return letters

    letters = asyncio.run(run())
    assert {d["event_id"].bytes for d in letters} == {e.event_id for e in planted}
    for letter in letters:
        assert f"sink {flavour}" in letter["reason"] and "shop.users" in letter["reason"], letter["reason"]
        assert "last_ip" in letter["reason"] and ("ip4r" in letter["reason"] or "IPv6" in letter["reason"])
    have = columns(flavour, dsn, relation)
    assert "loyalty_tier" in have and "last_ip" not in have
    assert state(flavour, dsn, history.new, as_of(history.corpus.root)) == want
    assert count(flavour, dsn, "shop.users_changes") == len(history.early) + len(history.late)

    # The operator fixed the mapping (the shipped one); the replay adds the column and applies them.
    fixed = reopen(sink)

    async def replay() -> tuple[ReplayReport, ReplayReport]:
        await fixed.connect()
        try:
            first = await replay_dead_letters(fixed, {("shop", "users"): with_ip})
            again = await replay_dead_letters(fixed, {("shop", "users"): with_ip})
        finally:
            await fixed.close()
        return first, again

    first, again = asyncio.run(replay())
    assert set(first.replayed) == {e.event_id for e in planted} and first.unstorable == 0
    assert again.waiting == 0 and not again.replayed
    assert "last_ip" in columns(flavour, dsn, relation)
    after = state(flavour, dsn, with_ip, as_of(history.corpus.root))
    stored_ip = {k: row.pop("last_ip") for k, row in after.items()}
    assert after == want  # nothing else changed
    shown_ids = {(uuid.UUID(bytes=k[0]),): ipaddress.ip_address(v) for k, v in addresses.items()}
    assert {k: v for k, v in stored_ip.items() if v is not None} == shown_ids
    assert count(flavour, dsn, "shop.users_changes") == len(history.early) + len(history.late) + len(planted)


# -- a row kept alive only by a dropped column (issue #9) ---------------------------------------
def _items(dropped: bool) -> TableDef:
    """dv.items (id int, c int, a text, b text, PRIMARY KEY (id, c)), before or after DROP b."""
    text, integer = parse_cql_type("text"), parse_cql_type("int")
    a = ColumnDef("a", "regular", -1, text, "text")
    b = ColumnDef("b", "regular", -1, text, "text", dropped_at_us=5_000 if dropped else None)
    return TableDef(
        uuid.UUID("5a1e0000-0000-4000-8000-000000000009"),
        "dv",
        "items",
        True,
        [ColumnDef("id", "partition_key", 0, integer, "int")],
        [ColumnDef("c", "clustering", 0, integer, "int")],
        {"a": a} if dropped else {"a": a, "b": b},
        {"b": b} if dropped else {},
    )


def _item_event(n: int, row: int, ts: int, cells: dict[str, str], insert: bool) -> ChangeEvent:
    """INSERT (a primary-key liveness) or UPDATE (cells only) of dv.items (row, 0)."""
    return ChangeEvent(
        event_id=uuid.UUID(int=n).bytes,
        keyspace="dv",
        table="items",
        op="insert" if insert else "update",
        partition_key=[row.to_bytes(4, "big", signed=True)],
        clustering=[(0).to_bytes(4, "big")],
        ts=ts,
        cells=[Cell(name, SET, ts, value.encode()) for name, value in cells.items()],
        liveness_ts=ts if insert else None,
        segment_id=1,
        position=n,
    )


@pytest.mark.parametrize("policy", ["keep", "remove"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_rows_kept_alive_only_by_a_dropped_column_vanish(flavour: str, policy: str) -> None:
    """Cassandra: after ``ALTER TABLE dv.items DROP b``, ``SELECT *`` no longer shows the rows that
    only ``UPDATE ... SET b`` made (no primary-key liveness, no other live cell); INSERTed rows stay,
    also with every remaining column null. keep: the drop is met live (a batch with the new
    definition); remove: at a restart, before any event. A later write brings a vanished row back."""
    before, after = _items(dropped=False), _items(dropped=True)
    events = [
        _item_event(1, 1, 1_000, {"a": "x"}, insert=True),  # stays: liveness and a
        _item_event(2, 2, 1_000, {}, insert=True),  # stays: liveness alone, every column null
        _item_event(3, 3, 1_000, {"b": "only-b"}, insert=False),  # vanishes
        _item_event(4, 4, 1_000, {"a": "z", "b": "w"}, insert=False),  # stays: a is live
        _item_event(5, 5, 1_000, {"b": "only-b"}, insert=False),  # vanishes, then comes back
        _item_event(6, 6, 1_000, {"b": "b-too"}, insert=True),  # stays: liveness
    ]
    late = [_item_event(7, 5, 9_000, {"a": "back"}, insert=False)]
    sink, dsn = open_sink(flavour, dropped_columns=policy)
    if flavour == "clickhouse":
        Client.from_url(dsn).execute("DROP DATABASE IF EXISTS dv")

    async def run() -> None:
        nonlocal sink
        await sink.connect()
        await sink.prepare(Schema({before.id: before}))
        await apply(sink, before, events)
        if policy == "remove":
            await sink.close()
            sink = reopen(sink, dropped_columns=policy)
            await sink.connect()
            await sink.prepare(Schema({after.id: after}))  # start-up migration
        else:
            # the first batch with the new definition migrates the table
            await apply(sink, after, [_item_event(8, 1, 2_000, {"a": "x"}, insert=True)])
        await sink.close()

    asyncio.run(run())
    want = {(1, 0): "x", (2, 0): None, (4, 0): "z", (6, 0): None}
    got = {key: row["a"] for key, row in state(flavour, dsn, after, 10**9).items()}
    assert got == want

    async def later() -> None:
        restarted = reopen(sink, dropped_columns=policy)
        await restarted.connect()
        await apply(restarted, after, late)
        await restarted.close()

    asyncio.run(later())
    got = {key: row["a"] for key, row in state(flavour, dsn, after, 10**9).items()}
    assert got == {**want, (5, 0): "back"}
