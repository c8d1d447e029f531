"""A writer writes the batches waiting in its rings together, up to its sink's ``batch_size`` events
per write: each write of a warehouse has a fixed cost (a transaction, a round trip per table, a new
part per table in ClickHouse), so a backlog is caught up in fewer, larger writes. Nothing is waited
for: a write takes what is there.

The corpus goes through two rings, as two parsers send it (work items alternating, each in parts),
into a real PostgreSQL; the writes must respect the limit, each work item must be acknowledged once
with its own count and position, the change log must hold every change once and the state must
equal Cassandra's ``SELECT``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import queue
from pathlib import Path

import asyncpg
import msgspec
import pytest
from conftest import CORPUS_ROOT, Corpus
from support.replay import batches, cdc_events
from support.services import ensure_services
from support.sinks import fresh_database, postgres_differences

from cdcfast.config import NullSink, PipelineConfig, PostgresSink, SourceConfig, TuningConfig
from cdcfast.events import ChangeEvent
from cdcfast.observe import tracing
from cdcfast.supervisor.messages import BATCH_ENCODER, EventBatch, schema_fingerprint
from cdcfast.supervisor.ring import Ring
from cdcfast.supervisor.writer import Writer, undelivered

pytestmark = pytest.mark.services
CORPUS = "c50-v7-plain"
PART = 150  # events per ring batch
PARTS_PER_ITEM = 3
WRITE_LIMIT = 1000  # the sink's batch_size


def work_items(events: list[ChangeEvent], fingerprint: str, size: int = PART) -> list[list[EventBatch]]:
    parts = batches(events, size)
    items = [parts[i : i + PARTS_PER_ITEM] for i in range(0, len(parts), PARTS_PER_ITEM)]
    return [
        [
            EventBatch(seq, n, n == len(item) - 1, part[-1].segment_id, part[-1].position, part, schema=fingerprint)
            for n, part in enumerate(item)
        ]
        for seq, item in enumerate(items)
    ]


def writer_for(dsn: str, schema_dir: Path, tmp_path: Path, batch_size: int | None) -> Writer:
    config = PipelineConfig(
        sources=[SourceConfig(node="n1", cdc_raw=str(tmp_path), schema=str(schema_dir))],
        sinks=[PostgresSink(name="pg", dsn=dsn, batch_size=batch_size)],
        state_dir=str(tmp_path / "state"),
        tuning=TuningConfig(batch_size=PART),
    )
    return Writer(config, 0, queue.Queue())  # type: ignore[arg-type]


def spy_on_writes(writer: Writer) -> list[int]:
    """The size of each write the sink makes (the real write is made)."""
    sizes: list[int] = []
    real = writer.sink.apply

    async def apply(events, *args):  # noqa: ANN001, ANN202
        sizes.append(len(events))
        return await real(events, *args)

    writer.sink.apply = apply  # type: ignore[method-assign]
    return sizes


def messages(writer: Writer) -> list[tuple]:
    out = []
    while not writer.status.empty():  # type: ignore[attr-defined]
        out.append(writer.status.get())
    return out


def test_waiting_batches_are_written_together_up_to_the_sinks_batch_size(corpus_scratch, tmp_path) -> None:  # noqa: ANN001
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    schema, events = cdc_events(corpus)
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    writer = writer_for(dsn, corpus.schema_dir, tmp_path, WRITE_LIMIT)
    items = work_items(events, schema_fingerprint(writer.schema))
    rings = [Ring(capacity=256 << 20, create=True) for _ in range(2)]
    try:
        for seq, item in enumerate(items):  # items alternate between the rings, as two parsers take them
            for part in item:
                rings[seq % 2].put(BATCH_ENCODER.encode(part))
        for ring in rings:
            ring.close_writing()
        sizes = spy_on_writes(writer)
        asyncio.run(writer.run(rings))
    finally:
        for ring in rings:
            ring.close()  # the creator's close removes it

    ring_batches = sum(len(item) for item in items)
    assert sum(sizes) == len(events)
    assert max(sizes) <= WRITE_LIMIT
    assert len(sizes) <= ring_batches / 4, (len(sizes), ring_batches)  # about 6 ring batches per write
    applied = [m for m in messages(writer) if m[0] == "applied"]
    assert [m[2] for m in applied] == list(range(len(items)))  # each work item once, in order
    assert [tuple(m[3]) for m in applied] == [(item[-1].segment_id, item[-1].position) for item in items]
    assert [m[4] for m in applied] == [sum(len(p.events) for p in item) for item in items]

    async def stored() -> tuple[int, tuple[int, int] | None]:
        conn = await asyncpg.connect(dsn)
        try:
            tables = [f'"{t.keyspace}"."{t.name}_changes"' for t in schema.cdc_tables()]
            count = sum([await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables])
            row = await conn.fetchrow("SELECT segment_id, position FROM cdcfast.checkpoints WHERE source = 'n1'")
            return count, (row["segment_id"], row["position"])
        finally:
            await conn.close()

    assert asyncio.run(stored()) == (len(events), (events[-1].segment_id, events[-1].position))
    failures = postgres_differences(dsn, corpus)
    assert not failures, "\n\n".join(failures)


def test_a_write_of_several_work_items_hangs_under_the_last_and_links_the_others(corpus_scratch, tmp_path) -> None:  # noqa: ANN001
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    _, events = cdc_events(corpus)
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    writer = writer_for(dsn, corpus.schema_dir, tmp_path, 10 * WRITE_LIMIT)
    spans = tmp_path / "spans.jsonl"
    tracing.setup("test", setting=f"jsonl:{spans}")
    ring = Ring(capacity=64 << 20, create=True)
    try:
        items = work_items(events[: 3 * PARTS_PER_ITEM * PART], schema_fingerprint(writer.schema))
        assert len(items) == 3
        for item in items:  # each work item decoded under its own span, as a parser does
            with tracing.span("cdcfast.batch", seq=item[0].seq) as span:
                context = tracing.context(span)
            for part in item:
                ring.put(BATCH_ENCODER.encode(msgspec.structs.replace(part, trace=context)))
        ring.close_writing()
        asyncio.run(writer.run([ring]))  # everything waits: one write takes the three items
    finally:
        tracing.shutdown()
        ring.close()
    recorded = [json.loads(line) for line in spans.read_text().splitlines()]
    items_spans = [s["span_id"] for s in recorded if s["name"] == "cdcfast.batch"]
    (write,) = [s for s in recorded if s["name"] == "cdcfast.write"]
    assert write["parent_id"] == items_spans[-1]
    assert write["links"] == items_spans[:-1]


def test_the_write_limit_defaults_to_the_tunings_write_batch_size(tmp_path) -> None:  # noqa: ANN001
    schema_dir = CORPUS_ROOT / CORPUS / "schema"
    if not schema_dir.exists():
        pytest.skip("corpus missing")
    assert writer_for("postgresql://nowhere/db", schema_dir, tmp_path, None).write_limit == 50_000
    assert writer_for("postgresql://nowhere/db", schema_dir, tmp_path, 700).write_limit == 700


def test_a_batch_partly_delivered_is_written_from_the_checkpoint_on() -> None:
    events = [
        ChangeEvent(b"%d" % n, "shop", "users", "insert", [b"k"], [], n, segment_id=7, position=n // 2)
        for n in range(8)
    ]

    assert undelivered(events, (7, 1)) == events[4:]  # positions 2 and 3 are after the checkpoint (7, 1)
    assert undelivered(events, (6, 99)) == events  # an older segment's checkpoint
    assert undelivered(events, (7, 3)) == []
    assert undelivered([], (7, 3)) == []


def test_decoding_the_rings_batches_leaves_the_collector_alone(corpus_scratch, tmp_path) -> None:  # noqa: ANN001
    """Decoded events hold no cycles (reference counting frees them); the cyclic collector scanning
    them again and again while a large batch is decoded cost the null writer 40% of its time."""
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    schema, events = cdc_events(corpus)
    config = PipelineConfig(
        sources=[SourceConfig(node="n1", cdc_raw=str(tmp_path), schema=str(corpus.schema_dir))],
        sinks=[NullSink(name="null", dsn=f"null://{tmp_path / 'null'}?fsync=0")],
        state_dir=str(tmp_path / "state"),
    )
    writer = Writer(config, 0, queue.Queue())  # type: ignore[arg-type]
    copies = [msgspec.structs.replace(e, segment_id=e.segment_id + n * 1000) for n in range(10) for e in events]
    items = work_items(copies, schema_fingerprint(writer.schema), 5000)  # about 900,000 events, as parsers send them
    ring = Ring(capacity=256 << 20, create=True)
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    try:
        for item in items:
            for part in item:
                ring.put(BATCH_ENCODER.encode(part))
        ring.close_writing()
        gc.collect()
        gc.callbacks.append(count)
        try:
            asyncio.run(writer.run([ring]))
        finally:
            gc.callbacks.remove(count)
    finally:
        ring.close()

    applied = [m for m in messages(writer) if m[0] == "applied"]
    assert sum(m[4] for m in applied) == len(copies)
    ring_batches = sum(len(item) for item in items)
    # at most one after each batch decoded and each write (a batch makes about 20,000 lists: 28 without a pause)
    assert len(collections) <= 2 * ring_batches, f"{len(collections)} collections for {ring_batches} batches"
