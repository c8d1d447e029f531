"""``cdcfast supervise``: the multiprocess pipeline from a cdc_raw folder into every sink."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Corpus
from support.expected import as_of, differences, load_expected
from support.pipeline import supervise_command, timescale_dsn
from support.services import ensure_services
from support.sinks import as_clickhouse_holds, clickhouse_state, fresh_clickhouse, fresh_database, postgres_state

from cdcfast.commitlog import load_schema

pytestmark = pytest.mark.services


def supervise(cdc_raw: Path, schema: Path, *sinks: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        supervise_command(cdc_raw, schema, *sinks, until_idle=True), capture_output=True, text=True, timeout=900
    )


def test_until_idle_replays_a_corpus_into_every_sink(corpus: Corpus, tmp_path: Path) -> None:
    dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
    fresh_clickhouse(dsns["clickhouse"])
    pg = asyncio.run(fresh_database(dsns["postgres"]))
    ts = asyncio.run(fresh_database(dsns["timescaledb"]))
    cdc_raw = tmp_path / "cdc_raw"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    result = supervise(cdc_raw, corpus.schema_dir, pg, timescale_dsn(ts), dsns["clickhouse"])
    assert result.returncode == 0, result.stderr[-5000:]
    schema = load_schema(corpus.schema_dir)
    when = as_of(corpus.root)
    failures = []
    for table in schema.cdc_tables():
        want = load_expected(corpus.root, table)
        for name, got in (
            ("postgresql", asyncio.run(postgres_state(pg, table, when))),
            ("timescaledb", asyncio.run(postgres_state(ts, table, when))),
        ):
            if got != want:
                failures.append(f"[{name}] " + differences(table, got, want))
        got, held = clickhouse_state(dsns["clickhouse"], table, when), as_clickhouse_holds(table, want)
        if got != held:
            failures.append("[clickhouse] " + differences(table, got, held))
    assert not failures, "\n\n".join(failures)
    # Delivered and COMPLETED: the segments are gone; segments without an idx are Cassandra's to delete.
    left = sorted(p.name for p in cdc_raw.iterdir())
    assert not [n for n in left if n.endswith("_cdc.idx")], left
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdcfast.cli",
            "status",
            "--json",
            "--cdc-raw",
            str(cdc_raw),
            "--schema",
            str(corpus.schema_dir),
            "--node",
            "node1",
            "--sink",
            pg,
            "--sink",
            dsns["clickhouse"],
        ],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert not report["supervisor"]["running"]
    for name in ("postgresql", "clickhouse"):
        sink = report["sinks"][name]
        assert sink["reachable"] and sink["dlq_depth"] == 0 and sink["lag_segments"] == 0, sink
        assert sink["checkpoint"][0] > 0
    # A second run finds everything delivered and changes nothing.
    again = supervise(cdc_raw, corpus.schema_dir, pg, dsns["clickhouse"])
    assert again.returncode == 0, again.stderr[-3000:]


def scrape(url: str) -> dict[str, float]:
    """Metric samples summed over labels, by metric name."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def metrics_url(state: Path, deadline: float) -> str:
    """The running supervisor's metrics address, once it has written it into its state folder."""
    import time

    address = state / "run" / "metrics.addr"
    while not address.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return address.read_text()


def test_live_pipeline_metrics_health_and_graceful_stop(corpus_scratch, tmp_path: Path) -> None:
    """A following (not --until-idle) pipeline: /metrics counts exactly the delivered changes, the lag
    falls to zero when idle, /ready answers, and SIGTERM drains and exits 0."""
    import signal
    import time
    import urllib.error
    import urllib.request

    from conftest import CORPUS_ROOT
    from support.replay import cdc_events

    if not (CORPUS_ROOT / "c50-v8-lz4").exists():
        pytest.skip("corpus missing")
    corpus = Corpus("c50-v8-lz4", corpus_scratch)
    dsns = ensure_services(["postgres"])
    pg = asyncio.run(fresh_database(dsns["postgres"]))
    cdc_raw, state = tmp_path / "cdc_raw", tmp_path / "state"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    _, events = cdc_events(corpus)
    process = subprocess.Popen(
        supervise_command(cdc_raw, corpus.schema_dir, pg, state=state),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "log", "w"),
    )
    try:
        deadline = time.monotonic() + 600
        url = metrics_url(state, deadline)
        written = 0.0
        while time.monotonic() < deadline:
            totals = scrape(url)
            written = totals.get("cdcfast_events_written_total", 0.0)
            if written >= len(events) and not any(p.name.endswith("_cdc.idx") for p in cdc_raw.iterdir()):
                break
            time.sleep(1)
        assert written == len(events)  # every change once: not fewer, not more
        assert scrape(url).get("cdcfast_events_read_total") == len(events)
        time.sleep(2)
        assert scrape(url).get("cdcfast_replication_lag_seconds") == 0
        # The node's segment links without CDC data (no idx) stay in cdc_raw: nothing is pending.
        assert any(p.suffix == ".log" for p in cdc_raw.iterdir())
        assert scrape(url).get("cdcfast_segments_pending") == 0
        ready = urllib.request.urlopen(url + "/ready", timeout=5)
        assert ready.status == 200 and json.loads(ready.read())["status"] == "ready"
        health = json.loads(urllib.request.urlopen(url + "/health", timeout=5).read())
        assert health["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, (tmp_path / "log").read_text()[-3000:]
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            raise AssertionError("the server should be gone after a graceful stop")
        except (urllib.error.URLError, ConnectionError):
            pass
    finally:
        if process.poll() is None:
            process.kill()


def test_segments_pending_counts_cdc_segments_a_down_sink_has_not_got(corpus_scratch, tmp_path: Path) -> None:
    """With one sink down, every segment holding CDC data stays pending (and in cdc_raw) after the
    other sink has all of them; segment links without CDC data are never pending."""
    import time

    from support.replay import cdc_events

    corpus = Corpus("c50-v8-lz4", corpus_scratch)
    _, events = cdc_events(corpus)
    pg = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    down = "postgresql://postgres@127.0.0.1:1/nowhere"  # refused: the sink is down from the start
    cdc_raw, state = tmp_path / "cdc_raw", tmp_path / "state"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    with_cdc = {p.name.removesuffix("_cdc.idx") for p in cdc_raw.glob("*_cdc.idx")}
    assert 0 < len(with_cdc) < len(list(cdc_raw.glob("*.log")))  # the corpus has links without CDC data
    command = supervise_command(cdc_raw, corpus.schema_dir, pg, down, state=state)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "w"))
    try:
        deadline = time.monotonic() + 300
        url = metrics_url(state, deadline)
        totals: dict[str, float] = {}
        while time.monotonic() < deadline:
            totals = scrape(url)
            if totals.get("cdcfast_events_written_total", 0.0) >= len(events):
                break
            time.sleep(0.5)
        assert totals.get("cdcfast_events_written_total") == len(events), (tmp_path / "log").read_text()[-3000:]
        time.sleep(1)  # a supervisor round after the last checkpoint
        assert scrape(url).get("cdcfast_segments_pending") == len(with_cdc)
        assert {p.name.removesuffix("_cdc.idx") for p in cdc_raw.glob("*_cdc.idx")} == with_cdc  # none deleted
    finally:
        process.kill()
        process.wait(timeout=60)


def test_a_cdc_table_without_durable_writes_is_named_at_start(tmp_path: Path) -> None:
    from conftest import CORPUS_ROOT

    final = sorted((CORPUS_ROOT / "c50-v8-lz4" / "schema").glob("*.json"))[-1]
    document = json.loads(final.read_text())
    for keyspace in document["keyspaces"]:
        if keyspace["keyspace_name"] == "clinic":
            keyspace["durable_writes"] = False
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(document))
    (tmp_path / "cdc_raw").mkdir()
    pg = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    command = supervise_command(tmp_path / "cdc_raw", schema, pg, state=tmp_path / "state", until_idle=True)
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [json.loads(line) for line in run.stderr.splitlines() if "durable_writes = false" in line]
    assert [(w["keyspace"], w["table"], w["level"]) for w in warnings] == [("clinic", "patients", "warning")]


def test_status_counts_every_event_of_split_work_items_and_children_log_at_the_chosen_level(
    corpus_scratch, tmp_path: Path
) -> None:
    from conftest import CORPUS_ROOT
    from support.replay import cdc_events

    corpus = Corpus("c50-v8-lz4", corpus_scratch)
    _, events = cdc_events(corpus)
    state, cdc_raw = tmp_path / "state", tmp_path / "cdc_raw"
    shutil.copytree(corpus.cdc_raw, cdc_raw)  # delivered segments are deleted: never the shared copy
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""
sources:
  - node: n1
    cdc_raw: {cdc_raw}
    schema: {CORPUS_ROOT / "c50-v8-lz4" / "schema"}
sinks:
  - {{kind: "null", name: "null", dsn: "null://"}}
state_dir: {state}
metrics_addr: "127.0.0.1:0"
tuning: {{batch_size: 40}}
"""
    )
    command = [sys.executable, "-m", "cdcfast.cli", "supervise", "--config", str(config), "--until-idle"]
    run = subprocess.run([*command, "--log-level", "DEBUG"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    status = json.loads((state / "status.json").read_text())
    assert status["sinks"]["null"]["events_written"] == len(events)  # work items of ~thousands, parts of 40
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert any(line["level"] == "debug" and line.get("component") == "writer" for line in lines)


def test_supervise_refuses_config_together_with_options_it_would_ignore(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text("sources: []\nsinks: []\nstate_dir: x\n")
    command = [sys.executable, "-m", "cdcfast.cli", "supervise", "--config", str(config), "--sink", "null://"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "--sink" in run.stderr and "--config" in run.stderr, run.stderr
