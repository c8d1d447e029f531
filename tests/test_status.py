"""`cdcfast status` as people read it."""

from __future__ import annotations

from cdcfast.status import render


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
