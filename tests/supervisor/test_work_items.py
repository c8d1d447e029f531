"""Work items cut at section ends: the supervisor hands a durable stretch out as several items of
about ``tuning.work_item_bytes``, so the parsers decode one segment together, and every change still
reaches the sinks once, in order, with exact checkpoints."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, Corpus
from support.expected import as_of, differences, load_expected
from support.replay import cdc_events
from support.segments import build_segment, real_mutations
from support.services import ensure_services
from support.sinks import fresh_database, postgres_change_rows, postgres_state

from cdcfast.commitlog import discover
from cdcfast.commitlog.segment import raw_entries, section_bounds
from cdcfast.supervisor.messages import WHOLE_SEGMENT
from cdcfast.supervisor.supervisor import plan_items as plan_stretches

KiB = 1 << 10


def corpus_or_skip(name: str, scratch: Path) -> Corpus:
    if not (CORPUS_ROOT / name).exists():
        pytest.skip("corpus missing")
    return Corpus(name, scratch)


def plan_items(path: Path, after: int, limit: int | None, size: int) -> list[tuple[int, int | None]]:
    return [(s.after, s.limit) for s in plan_stretches(path, after, limit, size)]


def chained(items: list[tuple[int, int | None]], after: int, limit: int | None) -> bool:
    """The items cover (after, limit] once each, in order."""
    starts = [a for a, _ in items]
    limits = [b for _, b in items]
    return starts[0] == after and limits[-1] == limit and starts[1:] == limits[:-1]


# -- planning (no services) ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c50-v7-plain", "c50-v8-lz4", "c41-v7-snappy"])
def test_a_completed_segment_is_cut_at_section_ends(name: str, corpus_scratch: Path) -> None:
    corpus = corpus_or_skip(name, corpus_scratch)
    segment = next(s for s in discover([corpus.cdc_raw]) if s.idx_path is not None)
    bounds = section_bounds(segment.path)
    size = 512 * KiB
    items = plan_items(segment.path, 0, None, size)
    assert chained(items, 0, None)
    cuts = [b for _, b in items[:-1]]
    assert set(cuts) <= set(bounds) and all(c < WHOLE_SEGMENT for c in cuts)
    # About ``size`` each: as many items as the stretch holds sizes, none much larger than one.
    assert len(items) == -(-bounds[-1] // size)
    edges = [0, *cuts, bounds[-1]]
    assert max(b - a for a, b in zip(edges, edges[1:])) < 2 * size
    assert [s.end for s in plan_stretches(segment.path, 0, None, size)] == edges[1:]  # lag counts these


def test_a_stretch_of_a_segment_being_written_is_cut_too(corpus_scratch: Path) -> None:
    corpus = corpus_or_skip("c50-v7-plain", corpus_scratch)
    segment = next(s for s in discover([corpus.cdc_raw]) if s.idx_path is not None)
    positions = [p for p, _ in raw_entries(segment.path)]
    after, limit = positions[100], positions[-100]  # entry ends, inside sections
    items = plan_items(segment.path, after, limit, 256 * KiB)
    assert len(items) > 4 and chained(items, after, limit)
    assert {b for _, b in items[:-1]} <= set(section_bounds(segment.path, limit, after))


def test_a_small_stretch_is_one_item(corpus_scratch: Path) -> None:
    corpus = corpus_or_skip("c50-v8-lz4", corpus_scratch)
    segment = next(s for s in discover([corpus.cdc_raw]) if s.idx_path is not None)
    bounds = section_bounds(segment.path)
    assert plan_items(segment.path, 0, None, 64 << 20) == [(0, None)]
    assert plan_items(segment.path, bounds[2], bounds[5], 64 << 20) == [(bounds[2], bounds[5])]


def test_anything_odd_falls_back_to_one_item(corpus_scratch: Path, tmp_path: Path) -> None:
    corpus = corpus_or_skip("c50-v7-plain", corpus_scratch)
    mutations = real_mutations(corpus.cdc_raw, 600, skip=2500)
    damaged = build_segment(mutations, sections=8, preallocate=1 << 20).write(tmp_path)
    bounds = section_bounds(damaged)
    data = bytearray(damaged.read_bytes())
    data[bounds[5] + 4] ^= 0xFF  # the seventh section's marker CRC
    damaged.write_bytes(data)
    assert plan_items(damaged, 0, None, 1) == [(0, None)]  # the parser reports the damage, as before
    assert chained(plan_items(damaged, 0, bounds[4], 1), 0, bounds[4])  # damage after the stretch: cut
    assert len(plan_items(damaged, 0, bounds[4], 1)) == 5
    preallocated = tmp_path / "CommitLog-7-1800000000009.log"
    preallocated.write_bytes(bytes(1 << 20))
    assert plan_items(preallocated, 0, None, 1) == [(0, None)]
    gone = tmp_path / "CommitLog-7-1800000000010.log"
    assert plan_items(gone, 40, 9000, 1) == [(40, 9000)]


# -- the pipeline (PostgreSQL) ---------------------------------------------------------------------------


def supervise(cdc_raw: Path, schema: Path, dsn: str, state: Path, item_bytes: int) -> list[dict]:
    """``cdcfast supervise --until-idle`` with ``work_item_bytes``; the work items it handed out."""
    config = state.parent / "pipeline.yaml"
    config.write_text(
        f"""
sources:
  - node: node1
    cdc_raw: {cdc_raw}
    schema: {schema}
    poll_interval: 0.2
sinks:
  - {{kind: postgresql, name: postgresql, dsn: "{dsn}"}}
state_dir: {state}
metrics_addr: "127.0.0.1:0"
tuning: {{work_item_bytes: {item_bytes}}}
"""
    )
    command = [sys.executable, "-m", "cdcfast.cli", "supervise", "--config", str(config), "--until-idle"]
    run = subprocess.run([*command, "--log-level", "DEBUG"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "work item handed out"]


def events_written(state: Path) -> int:
    return json.loads((state / "status.json").read_text())["sinks"]["postgresql"]["events_written"]


def checkpoint(dsn: str) -> tuple[int, int]:
    async def read() -> tuple[int, int]:
        from cdcfast.sinks import open_sink

        sink = open_sink("postgresql", dsn, "postgresql")
        await sink.connect()
        try:
            return tuple(await sink.checkpoint("node1"))  # type: ignore[return-value]
        finally:
            await sink.close()

    return asyncio.run(read())


def assert_delivered(corpus: Corpus, dsn: str) -> None:
    schema, events = cdc_events(corpus)
    when = as_of(corpus.root)
    failures = []
    for table in schema.cdc_tables():
        want = load_expected(corpus.root, table)
        got = asyncio.run(postgres_state(dsn, table, when))
        if got != want:
            failures.append(differences(table, got, want))
    assert not failures, "\n\n".join(failures)
    assert asyncio.run(postgres_change_rows(dsn, schema)) == len({e.event_id for e in events})


def items_by_segment(items: list[dict]) -> dict[int, list[tuple[int, int | None]]]:
    out: dict[int, list[tuple[int, int | None]]] = {}
    for item in sorted(items, key=lambda i: i["seq"]):
        out.setdefault(item["segment"], []).append((item["after"], item["limit"]))
    return out


@pytest.mark.services
@pytest.mark.parametrize("name", ["c50-v7-plain", "c50-v8-lz4"])
def test_until_idle_delivers_each_change_once_from_items_cut_at_sections(
    name: str, corpus_scratch: Path, tmp_path: Path
) -> None:
    corpus = corpus_or_skip(name, corpus_scratch)
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    cdc_raw, state = tmp_path / "cdc_raw", tmp_path / "state"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    with_data = [s.segment_id for s in discover([cdc_raw]) if s.idx_path is not None]
    items = supervise(cdc_raw, corpus.schema_dir, dsn, state, 512 * KiB)
    per_segment = items_by_segment(items)
    assert sorted(per_segment) == with_data
    assert [i["seq"] for i in items] == list(range(len(items)))
    for segment_id, stretches in per_segment.items():
        assert chained(stretches, 0, None), (segment_id, stretches)
    assert max(len(s) for s in per_segment.values()) >= 8  # an 8 MiB segment, in items of 512 KiB
    _, events = cdc_events(corpus)
    assert events_written(state) == len(events)  # each change once: none skipped, none twice
    assert checkpoint(dsn) == (with_data[-1], WHOLE_SEGMENT)
    assert_delivered(corpus, dsn)
    assert not [p for p in cdc_raw.iterdir() if p.name.endswith("_cdc.idx")]  # delivered: deleted


@pytest.mark.services
def test_resuming_mid_segment_hands_out_from_the_checkpoint(corpus_scratch: Path, tmp_path: Path) -> None:
    """A sink's checkpoint inside a compressed segment (inside a section, even): the next run hands
    out that segment from there, in items cut at the sections after it, and nothing arrives twice."""
    corpus = corpus_or_skip("c50-v8-lz4", corpus_scratch)
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    cdc_raw, state = tmp_path / "cdc_raw", tmp_path / "state"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    segments = [s for s in discover([cdc_raw]) if s.idx_path is not None]
    middle, later = segments[1], segments[2:]
    completed_idx = middle.idx_path.read_text()
    positions = [p for p, _ in raw_entries(middle.path)]
    mid = positions[len(positions) // 2]
    assert mid not in section_bounds(middle.path)
    # First run: the middle segment durable up to an entry inside a section; newer ones not yet.
    middle.idx_path.write_text(str(mid))
    held = tmp_path / "held"
    held.mkdir()
    for segment in later:
        for path in (segment.path, segment.idx_path):
            shutil.move(path, held / path.name)
    first = supervise(cdc_raw, corpus.schema_dir, dsn, state, 256 * KiB)
    assert checkpoint(dsn) == (middle.segment_id, mid)
    assert items_by_segment(first)[middle.segment_id][-1][1] == mid
    written = events_written(state)
    # Second run: the segment COMPLETED and the rest of the log there.
    middle.idx_path.write_text(completed_idx)
    for path in held.iterdir():
        shutil.move(path, cdc_raw / path.name)
    second = items_by_segment(supervise(cdc_raw, corpus.schema_dir, dsn, state, 256 * KiB))
    assert sorted(second) == [s.segment_id for s in segments[1:]]
    assert chained(second[middle.segment_id], mid, None) and len(second[middle.segment_id]) > 2
    _, events = cdc_events(corpus)
    assert written + events_written(state) == len(events)
    assert checkpoint(dsn) == (segments[-1].segment_id, WHOLE_SEGMENT)
    assert_delivered(corpus, dsn)
