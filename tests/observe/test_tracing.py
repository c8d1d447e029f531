"""Optional OpenTelemetry tracing: spans per batch across the parser and writer processes, linked
into one trace; a no-op when switched off or when the package is absent."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, Corpus
from support.pipeline import supervise_command
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.observe import tracing


def test_switched_off_spans_cost_nothing_and_record_nothing(tmp_path: Path) -> None:
    tracing.setup("test", setting="")
    with tracing.span("cdcfast.read", segment=1) as span:
        span.set(events=3)
        assert tracing.context(span) == ""
    assert not tracing.enabled()


def test_spans_nest_and_cross_processes_through_their_context(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    tracing.setup("test", setting=f"jsonl:{path}")
    try:
        with tracing.span("cdcfast.batch", seq=7) as batch:
            with tracing.span("cdcfast.read", segment=1) as read:
                read.set(events=3)
            carried = tracing.context(batch)
        with tracing.span("cdcfast.write", parent=carried, sink="pg"):
            pass
    finally:
        tracing.shutdown()
    spans = {s["name"]: s for s in map(json.loads, path.read_text().splitlines())}
    assert set(spans) == {"cdcfast.batch", "cdcfast.read", "cdcfast.write"}
    assert spans["cdcfast.read"]["parent_id"] == spans["cdcfast.batch"]["span_id"]
    assert spans["cdcfast.write"]["parent_id"] == spans["cdcfast.batch"]["span_id"]
    assert len({s["trace_id"] for s in spans.values()}) == 1
    assert spans["cdcfast.read"]["attributes"] == {"segment": 1, "events": 3}


def test_without_the_package_tracing_warns_once_and_does_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from cdcfast.observe import tracing\n"
        f"tracing.setup('x', setting='jsonl:{tmp_path / 's.jsonl'}')\n"
        "with tracing.span('a', k=1) as s: s.set(n=2)\n"
        "print('enabled' if tracing.enabled() else 'disabled')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "disabled"
    assert "opentelemetry" in run.stderr and "not installed" in run.stderr
    assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.services
def test_a_replay_traces_every_batch_from_read_to_write(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / "c50-v8-lz4").exists():
        pytest.skip("corpus missing")
    corpus = Corpus("c50-v8-lz4", corpus_scratch)
    pg = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    path = tmp_path / "spans.jsonl"
    _, events = cdc_events(corpus)
    cdc_raw = tmp_path / "cdc_raw"
    shutil.copytree(corpus.cdc_raw, cdc_raw)  # delivered segments are deleted
    command = supervise_command(cdc_raw, corpus.schema_dir, pg, state=tmp_path / "state", until_idle=True)
    env = dict(os.environ, CDCFAST_TRACING=f"jsonl:{path}")
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {s["span_id"]: s for s in spans}
    writes = [s for s in spans if s["name"] == "cdcfast.write"]
    assert writes
    for write in writes:  # each write hangs under the parser's batch span, in the same trace
        batch = by_id[write["parent_id"]]
        assert batch["name"] == "cdcfast.batch" and batch["trace_id"] == write["trace_id"]
        assert batch["process"].startswith("parser-") and write["process"] == "writer-postgresql"
    for name in ("cdcfast.read",):  # (cdcfast.mask too, when masking is configured)
        children = [s for s in spans if s["name"] == name]
        assert children and all(by_id[s["parent_id"]]["name"] == "cdcfast.batch" for s in children), name
    assert sum(s["attributes"]["events"] for s in writes) == len(events)
    # A write takes the batches waiting in its rings together: it hangs under the last one's work item
    # and links the others', so every work item with changes leads to the writes that delivered it.
    items = {s["span_id"] for s in spans if s["name"] == "cdcfast.batch" and s["attributes"]["events"]}
    parents = {w["parent_id"] for w in writes}
    reached = parents | {link for w in writes for link in w["links"]}
    assert items <= reached, f"{len(items - reached)} of {len(items)} work items lead to no write"
