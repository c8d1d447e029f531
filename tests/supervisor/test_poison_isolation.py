"""Poison that only the warehouse finds, at apply time: the writer isolates it (docs/failures.md).

Values that get past the screen (``cdcfast.sinks.poison``) and are refused by the write itself,
each tried for real first:

* PostgreSQL: U+0000 in a range deletion's clustering bound or in a set element removed (both only
  rendered into the change log's jsonb: ``22P05 unsupported Unicode escape sequence``); a clustering
  value too big for the state table's btree index (``54000 index row requires ... bytes``);
* ClickHouse stores every value the screen lets pass (a write timestamp past 2106 too:
  tests/sinks/test_clickhouse_change_log.py), so its poison comes from a change log altered by hand:
  ``ts`` made ``UInt64`` refuses a write timestamp before 1970 (``USING TIMESTAMP -1000000``), which
  Cassandra takes.

They are planted as extra changes into the corpus' ``types`` and ``shop.returns`` stream, which the
writer applies batch by batch. Exactly the planted changes must end in the dead-letter table with
the server's error, the sink must stay up with its checkpoint at the end, and the tables must equal
Cassandra's ``SELECT`` (expected/): the planted changes, had any been applied, would show there.
"""

from __future__ import annotations

import asyncio
import queue
import random
import string
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import structlog
from clickhouse_driver import Client
from conftest import CORPUS_ROOT, Corpus
from prometheus_client.parser import text_string_to_metric_families
from support.expected import as_of, differences, load_expected
from support.replay import batches, cdc_events
from support.services import ensure_services
from support.sinks import clickhouse_state, fresh_clickhouse, fresh_database, postgres_state

from cdcfast.config import ClickHouseSink, PipelineConfig, PostgresSink, SourceConfig
from cdcfast.events import TOMBSTONE, ChangeEvent
from cdcfast.log import get_logger
from cdcfast.observe import metrics
from cdcfast.sinks.poison import EVENT_DECODER, replay_dead_letters
from cdcfast.supervisor.messages import EventBatch, schema_fingerprint
from cdcfast.supervisor.writer import Writer

pytestmark = pytest.mark.services
CORPUS = "c50-v7-plain"
TABLES = {("types", "all_types"), ("shop", "returns")}
BEFORE_1970 = -1_000_000  # microseconds: 1969-12-31T23:59:59Z


def replaced(event: ChangeEvent, **changes) -> ChangeEvent:  # noqa: ANN003
    return msgspec.structs.replace(event, **changes).with_content_id()


def before_1970(event: ChangeEvent, partition: int) -> ChangeEvent:
    """``event`` re-keyed to a partition of its own and written ``USING TIMESTAMP -1000000``."""
    return replaced(
        event,
        partition_key=[partition.to_bytes(4, "big", signed=True)],
        ts=BEFORE_1970,
        liveness_ts=BEFORE_1970 if event.liveness_ts is not None else None,
        cells=[msgspec.structs.replace(c, ts=BEFORE_1970) for c in event.cells],
    )


def unsigned_write_times(client: Client) -> None:
    """The change log of ``types.all_types`` altered by hand: ``ts`` unsigned (what the poison needs)."""
    client.execute("ALTER TABLE types.all_types_changes MODIFY COLUMN ts UInt64")


Poison = tuple[int, ChangeEvent, str, bool]


def wide_key(event: ChangeEvent, partition: int) -> ChangeEvent:
    """``event`` re-keyed to a partition of its own, with a first clustering value of 30 kB: more than
    PostgreSQL's btree index on the state table takes."""
    rng = random.Random(partition)
    wide = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(30_000)).encode()
    return replaced(
        event, partition_key=[partition.to_bytes(4, "big", signed=True)], clustering=[wide, event.clustering[1]]
    )


def postgres_poison(events: list[ChangeEvent]) -> list[Poison]:
    """(index to plant at, the change, what the server says, in the mutation of the change there):
    values the screen lets pass."""
    inserts = [i for i, e in enumerate(events) if e.table == "all_types" and e.op == "insert"]
    ranges = [i for i, e in enumerate(events) if e.table == "all_types" and e.op == "range_delete"]
    insert = events[inserts[10]]
    s_text = next(c for e in events if e.table == "all_types" for c in e.cells if c.column == "s_text" and c.path)
    removal = replaced(
        insert,
        op="update",
        liveness_ts=None,
        partition_key=[(7_000_001).to_bytes(4, "big", signed=True)],
        cells=[msgspec.structs.replace(s_text, value=None, path=b"gift\x00wrap", kind=TOMBSTONE, ts=insert.ts)],
    )
    rng_event = events[ranges[3]]
    bound = [b"be\x00fore"] + list((rng_event.range_start or [None])[1:])
    return [
        (ranges[3], replaced(rng_event, range_start=bound), "Unicode", False),
        (inserts[40], removal, "Unicode", True),
        (inserts[80], wide_key(insert, 7_000_002), "index row", False),
        (inserts[120], wide_key(insert, 7_000_003), "index row", False),
    ]


def clickhouse_poison(events: list[ChangeEvent]) -> list[Poison]:
    inserts = [i for i, e in enumerate(events) if e.table == "all_types" and e.op == "insert"]
    insert = events[inserts[10]]
    return [
        (inserts[40], before_1970(insert, 7_000_001), "Column ts", True),
        (inserts[120], before_1970(insert, 7_000_002), "Column ts", False),
    ]


def plant(events: list[ChangeEvent], poison: list[Poison]) -> list[ChangeEvent]:
    """The stream with each poison change placed before the change at its index: at that change's
    position (one mutation with it), or just before it (a mutation of its own)."""
    out = list(events)
    for index, event, _, same_mutation in sorted(poison, key=lambda p: p[0], reverse=True):
        after = events[index]
        position = after.position if same_mutation else after.position - 1
        assert same_mutation or all((e.segment_id, e.position) != (after.segment_id, position) for e in events)
        out.insert(index, msgspec.structs.replace(event, segment_id=after.segment_id, position=position))
    return out


def flood_of(poison: Callable[[int], ChangeEvent], count: int, last: ChangeEvent) -> list[ChangeEvent]:
    """``count`` poison changes (``poison(partition)``), each a mutation of its own after ``last``."""
    return [
        msgspec.structs.replace(poison(8_000_000 + n), segment_id=last.segment_id, position=last.position + 1 + n)
        for n in range(count)
    ]


class Run:
    def __init__(self, kind: str, dsn: str, schema_dir: Path, tmp_path: Path) -> None:
        spec = PostgresSink(name="pg", dsn=dsn) if kind == "postgresql" else ClickHouseSink(name="ch", dsn=dsn)
        config = PipelineConfig(
            sources=[SourceConfig(node="n1", cdc_raw=str(tmp_path), schema=str(schema_dir))],
            sinks=[spec],
            state_dir=str(tmp_path / "state"),
        )
        self.status: queue.Queue = queue.Queue()
        self.writer = Writer(config, 0, self.status)  # type: ignore[arg-type]

    async def apply(self, events: list[ChangeEvent], size: int, prepared: Callable[[], None] | None = None) -> None:
        """Apply ``events`` in batches of ``size`` (``prepared``: called once the tables are made)."""
        await self.writer.start()
        if prepared is not None:
            prepared()
        fingerprint = schema_fingerprint(self.writer.schema)
        for seq, part in enumerate(batches(events, size)):
            batch = EventBatch(seq, 0, True, part[-1].segment_id, part[-1].position, part, schema=fingerprint)
            await self.writer.apply_with_retries([batch])
            assert self.writer.down is None, self.messages()
        self.letters = await self.writer.sink.dead_letters()
        self.checkpoint = await self.writer.sink.checkpoint("n1")
        # Replayed while the server still refuses them: they stay, counted as unstorable.
        self.replay = await replay_dead_letters(self.writer.sink, self.writer.tables())
        await self.writer.disconnect()

    def messages(self) -> list[tuple]:
        out = []
        while not self.status.empty():
            out.append(self.status.get())
        return out


@pytest.mark.parametrize("kind", ["postgresql", "clickhouse"])
def test_poison_the_server_refuses_is_isolated_and_the_sink_stays_up(kind: str, corpus_scratch, tmp_path) -> None:  # noqa: ANN001
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    schema, events = cdc_events(corpus)
    events = [e for e in events if (e.keyspace, e.table) in TABLES]
    poison = postgres_poison(events) if kind == "postgresql" else clickhouse_poison(events)
    stream = plant(events, poison)
    template = events[[i for i, e in enumerate(events) if e.op == "insert" and e.table == "all_types"][10]]
    poisoned = wide_key if kind == "postgresql" else before_1970
    flood = flood_of(lambda partition: poisoned(template, partition), 40, stream[-1])
    stream += flood
    planted = {
        e.event_id: e for e in stream if e.event_id in {p[1].event_id for p in poison} | {f.event_id for f in flood}
    }
    assert len(planted) == len(poison) + len(flood)
    said = {p[1].event_id: p[2] for p in poison} | {e.event_id: poison[-1][2] for e in flood}

    prepared = None
    if kind == "clickhouse":
        dsn = ensure_services(["clickhouse"])["clickhouse"]
        client = fresh_clickhouse(dsn)
        prepared = lambda: unsigned_write_times(client)  # noqa: E731
    else:
        dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    folder = metrics.setup_multiprocess(tmp_path / "metrics")
    try:
        run = Run(kind, dsn, corpus.schema_dir, tmp_path)
        asyncio.run(run.apply(stream, 400, prepared))
        exported = {
            (s.name, s.labels.get("class")): s.value
            for family in text_string_to_metric_families(metrics.render_metrics(folder).decode())
            for s in family.samples
            if s.labels.get("sink") == run.writer.name
        }
    finally:
        metrics.shutdown_multiprocess()

    messages = run.messages()
    assert not [m for m in messages if m[0] in ("down", "error")]
    assert sum(m[4] for m in messages if m[0] == "applied") == len(stream) - len(planted)  # written, not DLQ'd
    assert exported[("cdcfast_errors_total", "poison")] == len(planted)
    assert exported[("cdcfast_dlq_depth", None)] == len(planted)
    assert run.checkpoint == (stream[-1].segment_id, stream[-1].position)
    assert {d["event_id"].bytes for d in run.letters} == set(planted)  # exactly the planted changes
    assert (run.replay.waiting, run.replay.unstorable, run.replay.replayed) == (len(planted), len(planted), [])
    for letter in run.letters:
        event = planted[letter["event_id"].bytes]
        assert EVENT_DECODER.decode(letter["event"]) == event
        assert (letter["keyspace"], letter["table"]) == ("types", "all_types")
        assert (letter["segment_id"], letter["position"]) == (event.segment_id, event.position)
        assert said[event.event_id] in letter["reason"] and "types.all_types" in letter["reason"], letter["reason"]

    when = as_of(corpus.root)
    failures = []
    for table in (schema.by_name(ks, name) for ks, name in sorted(TABLES)):
        want = load_expected(corpus.root, table)
        if kind == "clickhouse":
            got = clickhouse_state(dsn, table, when)
            writer = run.writer.sink.writers[(table.keyspace, table.name)]
            arrays = [
                c.name for c in writer.key_columns + writer.data_columns if writer.sql_type(c).startswith("Array")
            ]
            for row in want.values():  # documented: an Array column cannot be NULL (null and empty are [])
                for name in arrays:
                    if row[name] in ((), frozenset()):
                        row[name] = None
        else:
            got = asyncio.run(postgres_state(dsn, table, when))
        if got != want:
            failures.append(differences(table, got, want))
    assert not failures, "\n\n".join(failures)


def test_a_batch_with_poison_isolated_logs_one_warning(corpus_scratch, tmp_path) -> None:  # noqa: ANN001
    """One warning per batch carries what isolating took (parts, seconds) and the dead letters' count."""
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    _, events = cdc_events(corpus)
    events = [e for e in events if (e.keyspace, e.table) == ("types", "all_types")][:60]
    inserts = [i for i, e in enumerate(events) if e.op == "insert"]
    # PostgreSQL's state table cannot index a 30 kB clustering value: refused at apply time
    stream = plant(events, [(inserts[-1], wide_key(events[inserts[0]], 7_000_001), "index row", False)])
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    get_logger("test")  # logging set up first: set up inside capture_logs, it would replace the capture
    with structlog.testing.capture_logs() as logged:
        run = Run("postgresql", dsn, corpus.schema_dir, tmp_path)
        asyncio.run(run.apply(stream, len(stream)))  # one batch

    assert len(run.letters) == 1
    warnings = [line for line in logged if line["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    assert warning["count"] == 1 and warning["tables"] == ["types.all_types"], warning
    assert warning["parts"] >= 2 and warning["isolation_seconds"] >= 0, warning  # a failing whole, then parts
    assert "index row" in warning["reason"], warning
