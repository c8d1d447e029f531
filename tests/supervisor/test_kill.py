"""kill -9 at random moments (the supervisor, writers and parsers) loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, Corpus
from support.expected import as_of, load_expected
from support.pipeline import supervise_command, timescale_dsn
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import clickhouse_state, fresh_clickhouse, fresh_database, postgres_change_rows, postgres_state

pytestmark = [pytest.mark.services, pytest.mark.slow]
KILLS_PER_PROCESS = int(os.environ.get("CDCFAST_KILLS", "20"))
SUPERVISOR_KILLS = int(os.environ.get("CDCFAST_SUPERVISOR_KILLS", "10"))


def rings_of(supervisors: list[int]) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if any(name.startswith(f"cdcfast-{pid}-") for pid in supervisors)]


def child_pids(state: Path) -> list[int]:
    pids = []
    for pid_file in (state / "run").glob("*.pid"):
        if pid_file.stem != "supervisor":
            try:
                pids.append(int(pid_file.read_text()))
            except ValueError:
                pass
    return pids


def assert_all_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not is_zombie(pid)]
        time.sleep(0.1)
    assert not alive, f"children outlived their supervisor: {alive}"


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def check_status_while_running(cdc_raw: Path, schema: Path, state: Path, *sinks: str) -> None:
    """``cdcfast status`` shows the supervisor and its processes (it may be between restarts: retry)."""
    command = [
        sys.executable,
        "-m",
        "cdcfast.cli",
        "status",
        "--json",
        "--cdc-raw",
        str(cdc_raw),
        "--schema",
        str(schema),
        "--node",
        "node1",
        "--state-dir",
        str(state),
    ]
    for sink in sinks:
        command += ["--sink", sink]
    report: dict = {}
    for _ in range(60):
        report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        alive = [p for p in report["processes"] if p["alive"]]
        if report["supervisor"]["running"] and len(alive) == len(report["processes"]) and alive:
            names = {p["name"] for p in alive}
            assert {"cdcfast-writer-postgresql", "cdcfast-parser-0"} <= names, names
            assert all(report["sinks"][name]["reachable"] for name in ("postgresql", "clickhouse"))
            return
        time.sleep(0.5)
    raise AssertionError(f"status never showed a running pipeline: {report}")


def test_kill_nine_anything_loses_and_duplicates_nothing(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / "c50-v8-lz4").exists():
        pytest.skip("corpus missing")
    corpus = Corpus("c50-v8-lz4", corpus_scratch)
    dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
    client = fresh_clickhouse(dsns["clickhouse"])
    pg = asyncio.run(fresh_database(dsns["postgres"]))
    ts = asyncio.run(fresh_database(dsns["timescaledb"]))
    cdc_raw, state = tmp_path / "cdc_raw", tmp_path / "state"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    command = supervise_command(cdc_raw, corpus.schema_dir, pg, timescale_dsn(ts), dsns["clickhouse"], state=state)
    log = open(tmp_path / "supervise.log", "a")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wanted = {"writer-postgresql": KILLS_PER_PROCESS, "writer-timescaledb": KILLS_PER_PROCESS}
    wanted |= {"writer-clickhouse": KILLS_PER_PROCESS, "parser-0": KILLS_PER_PROCESS}
    wanted["supervisor"] = SUPERVISOR_KILLS
    kills = dict.fromkeys(wanted, 0)
    killed_supervisors: list[int] = []
    rng = random.Random(7)
    status_checked = False
    deadline = time.monotonic() + 1500
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "supervise.log").read_text()[-4000:]
            time.sleep(rng.uniform(0.3, 4.0))
            pending = [v for v in wanted if kills[v] < wanted[v]]
            if not pending:
                break
            victim = rng.choice(pending)
            if sum(kills.values()) == 2 and not status_checked:  # `cdcfast status` on the running pipeline
                check_status_while_running(cdc_raw, corpus.schema_dir, state, pg, dsns["clickhouse"])
                status_checked = True
            if victim == "supervisor":
                children = child_pids(state)
                killed_supervisors.append(process.pid)
                process.kill()
                process.wait()
                kills[victim] += 1
                assert_all_gone(children)  # its parsers and writers die with it
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                continue
            pid_file = state / "run" / f"{victim}.pid"
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                kills[victim] += 1
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
        # Then let it finish: every segment delivered to every sink and deleted; a graceful stop.
        while any(p.name.endswith("_cdc.idx") for p in cdc_raw.iterdir()) and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "supervise.log").read_text()[-4000:]
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, (tmp_path / "supervise.log").read_text()[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
    assert kills == wanted
    assert not rings_of(killed_supervisors), "rings of killed supervisors were left in /dev/shm"
    schema, events = cdc_events(corpus)
    when = as_of(corpus.root)
    for table in schema.cdc_tables():
        want = load_expected(corpus.root, table)
        assert asyncio.run(postgres_state(pg, table, when)) == want, table.qualified_name
        assert asyncio.run(postgres_state(ts, table, when)) == want, table.qualified_name
        got = clickhouse_state(dsns["clickhouse"], table, when)
        assert set(got) == set(want), table.qualified_name
    ids = {e.event_id for e in events}
    assert asyncio.run(postgres_change_rows(pg, schema)) == len(ids)
    assert asyncio.run(postgres_change_rows(ts, schema)) == len(ids)
    ch_total = sum(
        client.execute(f"SELECT count() FROM `{t.keyspace}`.`{t.name}_changes` FINAL")[0][0]
        for t in schema.cdc_tables()
    )
    assert ch_total == len(ids)
