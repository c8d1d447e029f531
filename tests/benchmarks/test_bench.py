"""``cdcfast bench pipeline`` / ``bench e2e`` on tiny generated inputs: the results file has what it
promises and its counts equal the generator's manifest. (Speed itself is measured in bench/, never
here.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, REPO, corpus_names

from cdcfast.benchmarks.pipeline import covered_events, latencies, latency_summary, weighted_percentiles
from cdcfast.benchmarks.replay import Release, Replay, input_segments
from cdcfast.benchmarks.watch import Landing
from cdcfast.commitlog import read_cdc_index
from cdcfast.generate.run import GenerateSettings, generate
from cdcfast.generate.workload import WorkloadSpec
from cdcfast.supervisor.messages import WHOLE_SEGMENT

CORPORA = corpus_names()
pytestmark = pytest.mark.skipif(not CORPORA, reason="no corpora")
MAIN = "c50-v8-lz4" if "c50-v8-lz4" in CORPORA else (CORPORA[0] if CORPORA else "")
SCHEMA = CORPUS_ROOT / MAIN / "schema"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "input"
    manifest = generate(
        GenerateSettings(
            str(SCHEMA), out, WorkloadSpec(seed=3), events=3000, segment_size=512 * 1024, sync_ms=300, progress=False
        ),
        stderr=None,
    )
    assert manifest["totals"]["segments"] >= 2
    return out, manifest


def bench(kind: str, *options: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cdcfast.cli", "bench", kind, "--schema", str(SCHEMA), "--quiet", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def check_results(result: dict, manifest: dict, sinks: list[str]) -> None:
    events = manifest["totals"]["events"]
    assert result["format"] == 1
    assert result["complete"], result["problems"]
    assert result["input"]["events"] == events == result["input"]["manifest_events"]
    assert result["input"]["segments"] == manifest["totals"]["segments"]
    assert result["input"]["logical_bytes"] == manifest["totals"]["logical_bytes"]
    machine = result["machine"]
    assert machine["cpus"] >= 1 and len(machine["loadavg_before"]) == 3 and machine["memory_gb"] > 0
    base = result["baseline"]
    assert base["events"] == events and base["events_per_s"] > 0 and base["cpu_seconds"] > 0
    assert base["ring_serialization"]["decode_cpu_seconds"] >= 0
    pipe = result["pipeline"]
    assert pipe["finished"] and pipe["events"] == events
    assert pipe["events_per_s"] > 0 and pipe["mb_per_s"] > 0 and pipe["seconds"] > 0
    ratio = pipe["events_per_s"] / base["events_per_s"]
    assert result["ratio_to_baseline"] == pytest.approx(ratio, rel=0.01, abs=0.0006)  # printed to 3 decimals
    assert set(pipe["sinks"]) == set(sinks)
    for sink in pipe["sinks"].values():
        assert sink["events"] == events  # counted by the sink itself
        assert sink["events_covered"] == events
        assert sink["checkpoint"][1] == WHOLE_SEGMENT and sink["sink_checkpoint"] == sink["checkpoint"]
        latency = sink["latency"]
        assert 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        assert latency["sections"] == result["input"]["sections"]  # every section measured
    cpu = pipe["cpu_seconds"]
    expected = {"supervisor", "parser-0", "parser-1", *(f"writer-{s}" for s in sinks)}
    assert expected <= set(cpu) and cpu["total"] > 0
    assert cpu["total"] == pytest.approx(sum(v for k, v in cpu.items() if k != "total"), abs=0.01)
    assert pipe["cpu_seconds_all_descendants"] >= cpu["total"] - 0.05
    assert pipe["machine_busy_cpu_seconds"] >= 0 and pipe["others_cpu_seconds"] >= 0


def test_bench_pipeline_all_at_once(generated: tuple[Path, dict], tmp_path: Path) -> None:
    folder, manifest = generated
    out = tmp_path / "results" / "pipeline.json"
    work = str(tmp_path / "work")
    me = f"me={os.getpid()}"
    run = bench("pipeline", "--segments", str(folder), "--out", str(out), "--work", work, "--server", me)
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout
    result = json.loads(out.read_text())
    check_results(result, manifest, ["null"])
    assert result["benchmark"] == "pipeline" and result["settings"]["release"] == "all at once"
    assert result["pipeline"]["server_cpu_seconds"]["me"] >= 0  # a server's process tree: this one here
    assert "events/s" in run.stdout and "p99" in run.stdout  # the text summary
    # the pipeline deleted what it delivered from its own cdc_raw (links), never the input
    assert len(list(folder.glob("CommitLog-*.log"))) == manifest["totals"]["segments"]
    assert not (tmp_path / "work" / "cdc_raw").exists()  # the work folder is cleaned up


def test_bench_pipeline_paced_generates_its_input(tmp_path: Path) -> None:
    run = bench(
        "pipeline",
        "--events",
        "1500",
        "--segment-size",
        "256KiB",
        "--rate",
        "1500",
        "--sync-ms",
        "250",
        "--poll-interval",
        "0.1",
        "--json",
        "--work",
        str(tmp_path),
        "--keep",
    )
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout
    result = json.loads(run.stdout)
    manifest = json.loads((tmp_path / "input" / "generated.json").read_text())
    check_results(result, manifest, ["null"])
    assert result["input"]["generated"] and result["settings"]["rate"] == 1500
    assert result["pipeline"]["idx_advances"] >= 3  # several syncs
    # kept: the state dir's null sink checkpoint file says the same
    (state,) = (tmp_path / "state" / "null" / "null").glob("checkpoint-*.json")
    assert json.loads(state.read_text())["events"] == manifest["totals"]["events"]


@pytest.mark.services
def test_bench_e2e_into_real_sinks(generated: tuple[Path, dict], tmp_path: Path) -> None:
    import asyncio

    from support.pipeline import timescale_dsn
    from support.services import ensure_services
    from support.sinks import fresh_clickhouse, fresh_database

    folder, manifest = generated
    dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
    fresh_clickhouse(dsns["clickhouse"])
    pg = asyncio.run(fresh_database(dsns["postgres"]))
    ts = asyncio.run(fresh_database(dsns["timescaledb"]))
    out = tmp_path / "e2e.json"
    sinks = ["--sink", pg, "--sink", timescale_dsn(ts), "--sink", dsns["clickhouse"]]
    run = bench("e2e", "--segments", str(folder), *sinks, "--out", str(out), "--rate", "2000", "--sync-ms", "500")
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout
    result = json.loads(out.read_text())
    check_results(result, manifest, ["postgresql", "timescaledb", "clickhouse"])
    assert result["benchmark"] == "e2e"


def test_replay_advances_idx_by_whole_sections(generated: tuple[Path, dict], tmp_path: Path) -> None:
    folder, manifest = generated
    segments = input_segments(folder)
    assert [s.logical_bytes for s in segments] == [s["logical_bytes"] for s in manifest["segments"]]
    assert [len(s.section_ends) for s in segments] == [s["sections"] for s in manifest["segments"]]
    for segment, info in zip(segments, manifest["segments"]):
        segment.section_events = [info["events"] // len(segment.section_ends)] * len(segment.section_ends)
    replay = Replay(segments, tmp_path / "raw")
    first = segments[0]
    replay.release_until(first.section_events[0] * 2 + 1)
    idx = read_cdc_index(tmp_path / "raw" / first.path.name.replace(".log", "_cdc.idx"))
    assert idx.offset == first.section_ends[1] and not idx.completed
    assert (tmp_path / "raw" / first.path.name).stat().st_ino == first.path.stat().st_ino  # linked, not copied
    assert [r.key for r in replay.releases] == [(first.segment_id, first.section_ends[1])]
    assert [s.key for s in replay.sections] == [(first.segment_id, end) for end in first.section_ends[:2]]
    replay.release_until(first.events + 1)
    assert read_cdc_index(tmp_path / "raw" / first.path.name.replace(".log", "_cdc.idx")).completed
    assert replay.releases[-1].key == (first.segment_id, WHOLE_SEGMENT)
    assert not (tmp_path / "raw" / segments[1].path.name).exists()  # nothing of the next one yet
    replay.release_all()
    assert replay.done and replay.released_events == replay.total_events
    assert sum(r.events for r in replay.releases) == replay.total_events == sum(s.events for s in replay.sections)
    assert len(replay.sections) == sum(len(s.section_ends) for s in segments)
    shutil.rmtree(tmp_path / "raw")


def test_latency_arithmetic() -> None:
    releases = [Release(10.0, 1, 100, 10, 0), Release(12.0, 1, 200, 30, 0), Release(14.0, 1, WHOLE_SEGMENT, 60, 0)]
    landings = [Landing(10.5, (1, 150)), Landing(13.0, (1, 220)), Landing(16.0, (2, 5))]
    samples = latencies(releases, landings)
    assert samples == [(0.5, 10), (1.0, 30), (2.0, 60)]
    assert weighted_percentiles(samples, (10, 40, 41, 100)) == [0.5, 1.0, 2.0, 2.0]
    summary = latency_summary(samples)
    assert summary["p50_ms"] == 2000.0 and summary["p99_ms"] == 2000.0 and summary["sections"] == 3
    assert summary["mean_ms"] == pytest.approx((0.5 * 10 + 30 + 120) / 100 * 1000)
    assert covered_events(releases, (1, 220)) == 40
    assert latency_summary([])["p50_ms"] is None


def test_the_baseline_runs_with_the_collector_off_as_parsers_and_writers_do(
    generated: tuple[Path, dict], tmp_path: Path
) -> None:
    """The single-process baseline (decoding, ring serialization) is timed as the pipeline's processes
    run: without the cyclic collector's automatic passes (on, they made decoding look four times as
    costly); the collector is back on afterwards."""
    import gc

    from cdcfast.benchmarks.pipeline import single_process
    from cdcfast.config import PipelineConfig, SourceConfig

    folder, manifest = generated
    config = PipelineConfig(
        sources=[SourceConfig(node="n", cdc_raw=str(folder), schema=str(SCHEMA))], sinks=[], state_dir=str(tmp_path)
    )
    passes: list[dict] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            passes.append(info)

    gc.enable()
    gc.callbacks.append(count)
    try:
        baseline = single_process(config, input_segments(folder), 50)
    finally:
        gc.callbacks.remove(count)
    assert baseline["events"] == manifest["totals"]["events"]
    assert passes == []
    assert gc.isenabled()
