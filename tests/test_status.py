"""`cdcfast status` as people read it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT
from support.silent_server import SilentServer

from cdcfast.config import ClickHouseSink, PipelineConfig, PostgresSink, SourceConfig
from cdcfast.status import collect, render


def status_with(sink: dict) -> dict:
    return {
        "node": "n1",
        "supervisor": {"running": True, "pid": 42, "updated_seconds_ago": 0.5},
        "processes": [{"name": "cdcfast-writer-postgresql", "pid": 43, "alive": True}],
        "cdc_raw": {"path": "/var/lib/cassandra/cdc_raw", "bytes": 3 << 20, "segments": 2},
        "sinks": {"postgresql": sink},
    }


def test_a_sink_the_pipeline_holds_as_down_says_so_and_why() -> None:
    sink = {"reachable": True, "checkpoint": [7, 100], "lag_segments": 2, "lag_bytes": 1 << 20, "dlq_depth": 0,
            "events_per_s": 0, "down": "transient", "last_error": "ConnectionRefusedError: connect failed"}
    line = render(status_with(sink)).splitlines()[3]
    assert line.startswith("postgresql") and "7:100" in line
    assert "DOWN (transient): ConnectionRefusedError: connect failed" in line


def test_a_flowing_sink_shows_its_checkpoint_lag_and_no_error() -> None:
    sink = {"reachable": True, "checkpoint": [7, 100], "lag_segments": 0, "lag_bytes": 0, "dlq_depth": 1,
            "events_per_s": 1200.5, "down": None, "last_error": None}
    line = render(status_with(sink)).splitlines()[3]
    assert "7:100" in line and "0 seg/0.0 MiB" in line and "1200.5" in line and line.endswith("-")
    assert "processes: cdcfast-writer-postgresql 43" in render(status_with(sink))


@pytest.mark.parametrize("scheme", ["clickhouse", "postgresql"])
def test_a_sink_that_never_answers_shows_as_unreachable_within_seconds(scheme: str, tmp_path: Path) -> None:
    """A server that accepts connections and never answers (a hung process): the drivers alone
    would hold the screen for 300 s (ClickHouse) or 60 s (asyncpg)."""
    server = SilentServer()
    where = f"127.0.0.1:{server.port}"
    dsn = f"{scheme}://default@{where}/default"
    sink = ClickHouseSink(name="ch", dsn=dsn) if scheme == "clickhouse" else PostgresSink(name="pg", dsn=dsn)
    config = PipelineConfig(
        sources=[SourceConfig(node="n1", cdc_raw=str(tmp_path), schema=str(CORPUS_ROOT / "c50-v8-lz4" / "schema"))],
        sinks=[sink],
        state_dir=str(tmp_path / "state"),
    )
    started = time.monotonic()
    try:
        status = asyncio.run(collect(config))
    finally:
        server.close()
    assert time.monotonic() - started < 20
    entry = status["sinks"][sink.name]
    assert entry["reachable"] is False
    assert f"sink {sink.name} ({dsn})" in entry["error"] and "did not answer within" in entry["error"]


def test_dlq_commands_name_a_sink_that_never_answers_and_exit() -> None:
    server = SilentServer()
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cdcfast.cli", "dlq", "list", "--sink", f"clickhouse://default@127.0.0.1:{server.port}/x"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.close()
    assert time.monotonic() - started < 25
    assert done.returncode == 1, done
    said = done.stderr
    named = "cdcfast: error: sink clickhouse (clickhouse://default@127.0.0.1:"
    assert named in said and "did not answer within" in said, said
