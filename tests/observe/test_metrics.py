"""cdcfast.observe: metrics recorded in real child processes and read by the supervisor's /metrics,
/health and /ready over real HTTP, and the shipped Grafana dashboard and Prometheus alerts naming only
metrics cdcfast exports."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cdcfast.errors import CdcfastError, ConfigError
from cdcfast.observe import metrics
from cdcfast.observe.http import HealthState, ObserveServer, parse_address

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "cdcfast-dashboard.json"
ALERTS = REPO / "docker" / "prometheus" / "alerts.yml"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
REQUIRED_ALERTS = {
    "CdcfastReplicationLagHigh",
    "CdcfastSinkDown",
    "CdcfastCdcRawFilling",
    "CdcfastDlqGrowing",
    "CdcfastReplicationStalled",
}


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Iterator[Path]:
    folder = metrics.setup_multiprocess(tmp_path / "state" / "metrics")
    try:
        yield folder
    finally:
        metrics.shutdown_multiprocess()  # later tests' children must not inherit a deleted folder


@pytest.fixture
def health() -> HealthState:
    return HealthState(max_lag_seconds=60.0)


@pytest.fixture
def server(metrics_dir: Path, health: HealthState) -> Iterator[ObserveServer]:
    with ObserveServer("127.0.0.1:0", health, metrics_dir) as running:
        yield running


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str) -> tuple[int, Any]:
    status, headers, body = get(url)
    assert headers["Content-Type"].startswith("application/json")
    return status, json.loads(body)


def scrape(server: ObserveServer) -> str:
    status, headers, body = get(server.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    return body.decode()


def sample_values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return sample_values(text).get((name, frozenset(labels.items())))


def run_child(target: Callable[..., Any], *args: Any) -> int:
    """Run ``target(*args)`` in a freshly spawned interpreter (as the supervisor starts its children)."""
    process = mp.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert process.pid is not None
    return process.pid


def base_name(name: str) -> str:
    """A PromQL/exposition sample name -> its metric family name as listed in METRIC_NAMES."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in metrics.HISTOGRAM_NAMES:
            return name[: -len(suffix)]
    return name


def names_in(expression: str) -> set[str]:
    return {base_name(name) for name in re.findall(r"cdcfast_[a-z_]+", expression)}


# -- multiprocess setup ----------------------------------------------------------------------------


def test_setup_creates_the_folder_clears_stale_files_and_sets_the_variable(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_12345.db").write_bytes(b"stale from the last run")
    (folder / "keep.txt").write_text("not ours")
    try:
        assert metrics.setup_multiprocess(folder) == folder.resolve()
        assert os.environ[metrics.MULTIPROC_ENV] == str(folder.resolve())
        assert not (folder / "counter_12345.db").exists()
        assert (folder / "keep.txt").exists()
        fresh = metrics.setup_multiprocess(tmp_path / "new" / "metrics")
        assert fresh.is_dir() and metrics.multiprocess_directory() == str(fresh)
    finally:
        metrics.shutdown_multiprocess()
    assert metrics.MULTIPROC_ENV not in os.environ
    assert metrics.multiprocess_directory() is None


def test_counters_and_histograms_recorded_in_child_processes_are_summed(
    server: ObserveServer, metrics_dir: Path
) -> None:
    first = run_child(metrics.record_write, "pg", {"shop.orders": 3}, 100, 0.02)
    second = run_child(metrics.record_write, "pg", {"shop.orders": 4, "shop.users": 1}, 50, 0.2)
    run_child(metrics.record_read, {"shop.orders": 7, "shop.users": 1}, 4096)
    metrics.record_write("pg", {"shop.orders": 5}, 10, 0.001)  # the supervisor's own process
    metrics.record_write("ch", {"shop.orders": 2}, 5, 0.5)
    assert first != second
    assert {p.name for p in metrics_dir.glob("counter_*.db")} >= {f"counter_{first}.db", f"counter_{second}.db"}

    text = scrape(server)
    assert value(text, "cdcfast_events_written_total", sink="pg", table="shop.orders") == 12
    assert value(text, "cdcfast_events_written_total", sink="pg", table="shop.users") == 1
    assert value(text, "cdcfast_events_written_total", sink="ch", table="shop.orders") == 2
    assert value(text, "cdcfast_bytes_written_total", sink="pg") == 160
    assert value(text, "cdcfast_events_read_total", table="shop.orders") == 7
    assert value(text, "cdcfast_bytes_read_total") == 4096
    assert value(text, "cdcfast_batch_size_events_count", sink="pg") == 3
    assert value(text, "cdcfast_batch_size_events_sum", sink="pg") == 13
    assert value(text, "cdcfast_write_latency_seconds_count", sink="pg") == 3
    assert value(text, "cdcfast_write_latency_seconds_bucket", sink="pg", le="0.05") == 2  # 0.001 and 0.02
    assert value(text, "cdcfast_write_latency_seconds_bucket", sink="pg", le="+Inf") == 3
    assert value(text, "cdcfast_write_latency_seconds_sum", sink="pg") == pytest.approx(0.221)
    # counters and histograms are summed over processes, not split by pid
    assert all("pid" not in dict(labels) for _, labels in sample_values(text))


def test_gauges_of_a_dead_process_go_away_but_its_counters_and_the_dlq_depth_stay(
    server: ObserveServer, metrics_dir: Path
) -> None:
    pid = run_child(metrics.set_lag, "pg", 12.5, 4096)
    run_child(metrics.set_dlq_depth, "pg", 7)
    error_pid = run_child(metrics.record_error, "pg", "poison")
    text = scrape(server)
    assert value(text, "cdcfast_replication_lag_seconds", sink="pg") == 12.5
    assert value(text, "cdcfast_replication_lag_bytes", sink="pg") == 4096

    metrics.mark_dead(pid)
    metrics.mark_dead(error_pid)
    text = scrape(server)
    assert value(text, "cdcfast_replication_lag_seconds", sink="pg") is None  # 'livemax': live processes only
    assert value(text, "cdcfast_dlq_depth", sink="pg") == 7  # 'mostrecent': the last value set survives restarts
    assert value(text, "cdcfast_errors_total", sink="pg", **{"class": "poison"}) == 1

    metrics.set_lag("pg", 3.0, 10)
    metrics.set_lag("pg", 1.0, 0)  # a gauge is the last value set, not a sum
    metrics.set_dlq_depth("pg", 2)
    text = scrape(server)
    assert value(text, "cdcfast_replication_lag_seconds", sink="pg") == 1.0
    assert value(text, "cdcfast_replication_lag_bytes", sink="pg") == 0
    assert value(text, "cdcfast_dlq_depth", sink="pg") == 2


def test_every_exported_family_is_in_metric_names_and_every_name_is_exported(
    server: ObserveServer, metrics_dir: Path
) -> None:
    metrics.init_sink("pg")
    metrics.record_read({"shop.orders": 1}, 10)
    metrics.record_write("pg", {"shop.orders": 1}, 10, 0.01)
    metrics.set_lag("pg", 0.0, 0)
    metrics.set_checkpoint_age("pg", 0.0)
    metrics.record_error("pg", "transient")
    metrics.record_retry("pg")
    metrics.set_dlq_depth("pg", 0)
    metrics.set_cdc_raw(10, 100)
    metrics.set_segments_pending(1)
    metrics.record_restart("writer-pg")
    metrics.record_masked("shop.users", "email", "pii", 2)
    metrics.record_read_issue("crc")
    metrics.set_sink_up("pg", True)

    exported = {base_name(name) for name, _ in sample_values(scrape(server))}
    assert exported == metrics.METRIC_NAMES
    assert all(name.startswith("cdcfast_") for name in metrics.METRIC_NAMES)
    counters = {spec.name for spec in metrics.SPECS if spec.kind == "counter"}
    assert counters and all(name.endswith("_total") for name in counters)
    assert metrics.HISTOGRAM_NAMES == {"cdcfast_batch_size_events", "cdcfast_write_latency_seconds"}
    for spec in metrics.SPECS:
        assert spec.kind != "gauge" or spec.multiprocess_mode, spec.name


def test_init_sink_exports_zero_series_for_every_error_class(server: ObserveServer) -> None:
    metrics.init_sink("pg")
    text = scrape(server)
    for error_class in metrics.ERROR_CLASSES:
        assert value(text, "cdcfast_errors_total", sink="pg", **{"class": error_class}) == 0
    assert value(text, "cdcfast_retries_total", sink="pg") == 0
    assert value(text, "cdcfast_events_written_total", sink="pg", table="shop.orders") is None


def test_label_values_stay_bounded(metrics_dir: Path) -> None:
    with pytest.raises(ValueError, match="transient, permanent, poison"):
        metrics.record_error("pg", "ConnectionRefusedError: host 10.0.0.1")
    assert metrics.table_name("shop", "orders") == "shop.orders"
    assert metrics.events_by_table(
        [_Event("shop", "orders"), _Event("shop", "orders"), _Event("clinic", "visits")]
    ) == {"shop.orders": 2, "clinic.visits": 1}


def test_read_issues_and_unknown_kinds(server: ObserveServer) -> None:
    metrics.record_read_issue("crc", 2)
    metrics.record_read_issue("unknown_table", 5)
    metrics.record_read_issue("something odd at offset 17")  # never a free text label value
    text = scrape(server)
    assert value(text, "cdcfast_read_issues_total", kind="crc") == 2
    assert value(text, "cdcfast_read_issues_total", kind="unknown_table") == 5
    assert value(text, "cdcfast_read_issues_total", kind="other") == 1


def test_masking_audit_counts_only_what_is_new(server: ObserveServer) -> None:
    metrics.record_masking_audit({("shop.users", "email", "pii", "hash"): 3, ("shop.users", "email", "pii", "drop"): 1})
    metrics.record_masking_audit({("shop.users", "email", "pii", "hash"): 5, ("shop.users", "email", "pii", "drop"): 1})
    metrics.record_masking_audit({("shop.users", "email", "pii", "hash"): 2})  # the masker's audit was reset
    metrics.record_masked("clinic.visits", "diagnosis", "phi", 4)
    text = scrape(server)
    assert value(text, "cdcfast_masked_fields_total", table="shop.users", column="email", classification="pii") == 8
    assert (
        value(text, "cdcfast_masked_fields_total", table="clinic.visits", column="diagnosis", classification="phi") == 4
    )


def test_cdc_raw_gauges(server: ObserveServer, tmp_path: Path) -> None:
    cdc_raw = tmp_path / "cdc_raw"
    cdc_raw.mkdir()
    (cdc_raw / "CommitLog-7-1.log").write_bytes(b"x" * 1000)
    (cdc_raw / "CommitLog-7-1_cdc.idx").write_bytes(b"1000\nCOMPLETED\n")
    used, total = metrics.cdc_raw_usage(cdc_raw, total_space=10_000)
    assert (used, total) == (1000 + len(b"1000\nCOMPLETED\n"), 10_000)
    _, default_total = metrics.cdc_raw_usage(cdc_raw)
    assert 0 < default_total <= 4096 << 20  # Cassandra's default: 4096 MiB or 1/8 of the volume
    assert metrics.cdc_raw_usage(tmp_path / "missing", total_space=5) == (0, 5)
    metrics.set_cdc_raw(used, total)
    metrics.set_segments_pending(3)
    text = scrape(server)
    assert value(text, "cdcfast_cdc_raw_bytes") == used
    assert value(text, "cdcfast_cdc_total_space_bytes") == 10_000
    assert value(text, "cdcfast_segments_pending") == 3


# -- lag -------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Event:
    def __init__(self, keyspace: str, table: str) -> None:
        self.keyspace = keyspace
        self.table = table


def test_lag_tracker_follows_dispatch_and_delivery(server: ObserveServer) -> None:
    clock = _Clock()
    tracker = metrics.LagTracker(["pg", "ch"], clock=clock)
    assert tracker.lag("pg") == (0.0, 0)
    assert tracker.checkpoint_age("pg") == 0.0

    tracker.dispatched(0, 1000, written_at=500.0)
    clock.now += 5
    tracker.dispatched(1, 300, written_at=530.0)
    # nothing delivered yet this run: lag counted from the oldest undelivered item
    assert tracker.lag("pg") == (30.0, 1300)
    assert tracker.checkpoint_age("pg") == 5.0

    clock.now += 2
    tracker.applied("pg", 0)
    assert tracker.lag("pg") == (30.0, 300)  # newest durable (530) - newest delivered (500)
    assert tracker.checkpoint_age("pg") == 0.0  # it just advanced
    clock.now += 4
    assert tracker.checkpoint_age("pg") == 4.0
    assert tracker.checkpoint_age("ch") == 11.0  # never advanced since item 0 was handed out

    tracker.applied("pg", 1)
    assert tracker.lag("pg") == (0.0, 0)  # caught up
    assert tracker.checkpoint_age("pg") == 0.0
    clock.now += 100
    assert tracker.checkpoint_age("pg") == 0.0  # idle is not stalled

    tracker.publish()
    text = scrape(server)
    assert value(text, "cdcfast_replication_lag_seconds", sink="pg") == 0
    assert value(text, "cdcfast_replication_lag_seconds", sink="ch") == 30
    assert value(text, "cdcfast_replication_lag_bytes", sink="ch") == 1300
    assert value(text, "cdcfast_checkpoint_age_seconds", sink="ch") == 111

    tracker.applied("ch", 1)  # a sink may acknowledge several items at once
    assert tracker.lag("ch") == (0.0, 0)
    assert tracker.pending_items == 0  # delivered everywhere: forgotten


# -- /health and /ready ----------------------------------------------------------------------------


def test_health_is_ok_until_a_component_fails(server: ObserveServer, health: HealthState) -> None:
    status, body = get_json(server.url + "/health")
    assert (status, body) == (200, {"status": "ok", "components": {}})

    health.ok("supervisor")
    health.starting("parser-0")
    health.ok("writer-pg", reachable=True, lag_seconds=1.5)
    status, body = get_json(server.url + "/health")
    assert status == 200 and body["status"] == "ok"
    assert set(body["components"]) == {"supervisor", "parser-0", "writer-pg"}
    assert body["components"]["writer-pg"]["state"] == "ok"
    assert body["components"]["writer-pg"]["lag_seconds"] == 1.5
    assert body["components"]["writer-pg"]["reachable"] is True

    health.failing("writer-pg", "ConnectionRefusedError: postgresql://cdc:s3cret@db:5432/x refused", reachable=False)
    status, headers, raw = get(server.url + "/health")
    body = json.loads(raw)
    assert status == 503 and body["status"] == "failing"
    component = body["components"]["writer-pg"]
    assert component["state"] == "failing" and component["reachable"] is False
    assert "ConnectionRefusedError" in component["last_error"]
    assert "s3cret" not in raw.decode()  # passwords in DSNs never reach the body

    health.ok("writer-pg", reachable=True)
    status, body = get_json(server.url + "/health")
    assert status == 200
    assert "ConnectionRefusedError" in body["components"]["writer-pg"]["last_error"]  # kept for diagnosis


def test_ready_needs_every_component_ok_every_sink_reachable_and_lag_under_the_bound(
    server: ObserveServer, health: HealthState
) -> None:
    status, body = get_json(server.url + "/ready")
    assert status == 503 and body["status"] == "not_ready"  # nothing has started yet

    health.ok("supervisor")
    health.ok("parser-0")
    health.starting("writer-pg")
    status, body = get_json(server.url + "/ready")
    assert status == 503
    assert body["components"]["writer-pg"]["ready"] is False
    assert body["components"]["writer-pg"]["reason"] == "starting"
    assert body["components"]["supervisor"]["ready"] is True

    health.ok("writer-pg", reachable=True, lag_seconds=59.0)
    status, body = get_json(server.url + "/ready")
    assert (status, body["status"], body["max_lag_seconds"]) == (200, "ready", 60.0)
    assert all(c["ready"] for c in body["components"].values())

    health.update("writer-pg", lag_seconds=61.0)
    status, body = get_json(server.url + "/ready")
    assert status == 503
    assert body["components"]["writer-pg"]["reason"] == "lag 61.0 s is over 60.0 s"

    health.update("writer-pg", lag_seconds=0.0, reachable=False)
    status, body = get_json(server.url + "/ready")
    assert status == 503
    assert body["components"]["writer-pg"]["reason"] == "sink unreachable"

    health.update("writer-pg", reachable=True)
    health.failing("parser-0", "SegmentError: CommitLog-7-3.log at offset 17: crc")
    status, body = get_json(server.url + "/ready")
    assert status == 503 and body["components"]["parser-0"]["reason"] == "failing"

    health.remove("parser-0")
    assert get_json(server.url + "/ready")[0] == 200


def test_a_silent_component_turns_health_failing() -> None:
    clock = _Clock()
    health = HealthState(max_lag_seconds=60.0, heartbeat_timeout=30.0, clock=clock)
    health.ok("supervisor")
    health.beat("supervisor")
    health.ok("writer-pg")  # never beats: not watched
    clock.now += 29
    assert health.health()[0] is True
    clock.now += 2
    alive, body = health.health()
    assert alive is False
    assert body["components"]["supervisor"]["state"] == "failing"
    assert body["components"]["supervisor"]["last_error"] == "no heartbeat for 31.0 s (timeout 30.0 s)"
    assert body["components"]["writer-pg"]["state"] == "ok"
    health.beat("supervisor")
    assert health.health()[0] is True


def test_state_names_are_checked() -> None:
    with pytest.raises(ValueError, match="state"):
        HealthState().update("supervisor", state="sleepy")


def test_other_paths_and_head(server: ObserveServer, health: HealthState) -> None:
    status, _, body = get(server.url + "/nope")
    assert status == 404 and b"/metrics" in body
    health.ok("supervisor")
    request = urllib.request.Request(server.url + "/health", method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.read() == b""
    status, _, body = get(server.url + "/ready/?verbose=1")  # query strings and a trailing slash are ignored
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, _, body = get(server.url + "/")
    assert status == 200 and b"/ready" in body


# -- the server's address --------------------------------------------------------------------------


def test_port_in_use_names_the_address(metrics_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CdcfastError, match=rf"127\.0\.0\.1:{port}.*already in use.*--metrics-addr"):
            ObserveServer(f"127.0.0.1:{port}", HealthState(), metrics_dir).start()


def test_addresses() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    assert parse_address("metrics.local:80") == ("metrics.local", 80)
    for bad in ("9464", "host:", "host:port", ":9464", "host:70000", "::1:9464"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_address(bad)


def test_server_close_frees_the_port(metrics_dir: Path) -> None:
    server = ObserveServer("127.0.0.1:0", HealthState(), metrics_dir).start()
    port = server.port
    assert get(server.url + "/health")[0] == 200
    server.close()
    server.close()  # twice is fine
    with ObserveServer(f"127.0.0.1:{port}", HealthState(), metrics_dir) as again:
        assert again.port == port


# -- dashboards and alerts -------------------------------------------------------------------------


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of a Grafana dashboard: panel targets (rows' panels too) and query
    variables."""
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield query["query"] if isinstance(query, dict) else query


def balanced(expression: str) -> bool:
    depth = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"[^"]*"', "", expression):
        if char in "([{":
            depth.append(char)
        elif char in pairs:
            if not depth or depth.pop() != pairs[char]:
                return False
    return not depth


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"]
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    expressions = list(dashboard_expressions(dashboard))
    assert len(panels) >= 10 and len(expressions) >= len(panels)
    used: set[str] = set()
    for expression in expressions:
        names = names_in(expression)
        assert names, f"no cdcfast metric in {expression!r}"
        assert names <= metrics.METRIC_NAMES, f"{sorted(names - metrics.METRIC_NAMES)} in {expression!r}"
        assert balanced(expression), expression
        used |= names
    for needed in (
        "cdcfast_events_written_total",
        "cdcfast_replication_lag_seconds",
        "cdcfast_errors_total",
        "cdcfast_dlq_depth",
        "cdcfast_cdc_raw_bytes",
        "cdcfast_cdc_total_space_bytes",
        "cdcfast_write_latency_seconds",
        "cdcfast_process_restarts_total",
    ):
        assert needed in used, needed
    quantiles = [e for e in expressions if "histogram_quantile" in e and "cdcfast_write_latency_seconds_bucket" in e]
    assert {re.search(r"histogram_quantile\((0\.\d+)", e).group(1) for e in quantiles} >= {"0.5", "0.99"}  # type: ignore[union-attr]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_alert_rules_parse_name_only_exported_metrics_and_cover_the_failure_modes() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert all(group["name"] for group in document["groups"])
    alerts = {rule["alert"]: rule for rule in rules}
    assert REQUIRED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        names = names_in(rule["expr"])
        assert names, f"{name}: no cdcfast metric in {rule['expr']!r}"
        assert names <= metrics.METRIC_NAMES, f"{name}: {sorted(names - metrics.METRIC_NAMES)}"
        assert balanced(rule["expr"]), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), name
    assert "cdcfast_cdc_total_space_bytes" in alerts["CdcfastCdcRawFilling"]["expr"]
    assert "0.8" in alerts["CdcfastCdcRawFilling"]["expr"]
    assert "cdcfast_dlq_depth" in alerts["CdcfastDlqGrowing"]["expr"]
    assert "cdcfast_replication_lag_seconds" in alerts["CdcfastReplicationLagHigh"]["expr"]
