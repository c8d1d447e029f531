"""Sink outages on real servers: a sink stopped mid-stream holds its checkpoint while the others keep
flowing, memory stays flat, /ready and the lag say so, and the sink catches up when it returns;
connections cut under the writers; a sink with a wrong password stops alone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from clickhouse_driver import Client
from conftest import CORPUS_ROOT, Corpus
from support.expected import as_of, load_expected
from support.pipeline import supervise_command
from support.replay import cdc_events
from support.services import PrivateServices, ensure_services
from support.sinks import clickhouse_state, fresh_database, postgres_change_rows, postgres_state

pytestmark = [pytest.mark.services, pytest.mark.slow]
CORPUS = "c50-v8-lz4"
PASSWORD = "Pa55-not-this-one"
OUTAGE_SECONDS = float(os.environ.get("CDCFAST_OUTAGE_SECONDS", "60"))


def samples(url: str) -> dict[str, float]:
    """``name{labels}`` -> value, from /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def ready(url: str) -> tuple[bool, dict]:
    try:
        response = urllib.request.urlopen(url + "/ready", timeout=5)
        return True, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return False, json.loads(exc.read())


def wait_for(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; log tail:\n{log.read_text()[-4000:]}")


def pipeline_rss(state: Path) -> int:
    """Resident bytes of the supervisor and every child, from their pid files."""
    total = 0
    for pid_file in (state / "run").glob("*.pid"):
        try:
            status = Path(f"/proc/{int(pid_file.read_text())}/status").read_text()
        except (OSError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def checkpoint(state: Path, sink: str) -> list[int]:
    try:
        return json.loads((state / "status.json").read_text())["sinks"][sink]["checkpoint"]
    except (OSError, ValueError, KeyError):
        return [-1, -1]


def copy_segments(source: Path, target: Path, names: list[str]) -> None:
    """As a node would: the segment first, then its idx (the idx is what makes it readable)."""
    for name in names:
        shutil.copy(source / name, target / (name + ".tmp"))
        (target / (name + ".tmp")).rename(target / name)
        idx = name.removesuffix(".log") + "_cdc.idx"
        if (source / idx).exists():
            shutil.copy(source / idx, target / (idx + ".tmp"))
            (target / (idx + ".tmp")).rename(target / idx)


def assert_equal_to_expected(corpus: Corpus, pg: str, ch: str) -> None:
    schema, events = cdc_events(corpus)
    when = as_of(corpus.root)
    for table in schema.cdc_tables():
        want = load_expected(corpus.root, table)
        assert asyncio.run(postgres_state(pg, table, when)) == want, table.qualified_name
        assert set(clickhouse_state(ch, table, when)) == set(want), table.qualified_name

    assert asyncio.run(postgres_change_rows(pg, schema)) == len({e.event_id for e in events})  # none lost, none twice


@dataclass
class FollowingPipeline:
    """`cdcfast supervise` following an empty cdc_raw into private PostgreSQL and ClickHouse servers."""

    servers: PrivateServices
    pg: str
    ch: str
    cdc_raw: Path
    state: Path
    log: Path
    process: subprocess.Popen
    url: str
    segments: list[str]  # the corpus' segment files, for the test to copy in

    def delivered(self) -> bool:
        return not any(p.name.endswith("_cdc.idx") for p in self.cdc_raw.iterdir())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=120) == 0, self.log.read_text()[-4000:]


@contextmanager
def following_pipeline(corpus: Corpus, tmp_path: Path) -> Iterator[FollowingPipeline]:
    servers = PrivateServices()
    process: subprocess.Popen | None = None
    try:
        dsns = servers.start("postgres", "clickhouse")
        pg = asyncio.run(fresh_database(dsns["postgres"]))
        cdc_raw, state, log = tmp_path / "cdc_raw", tmp_path / "state", tmp_path / "supervise.log"
        cdc_raw.mkdir()
        process = subprocess.Popen(
            supervise_command(cdc_raw, corpus.schema_dir, pg, dsns["clickhouse"], state=state),
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
        )
        address = state / "run" / "metrics.addr"
        wait_for(address.exists, 120, "the metrics server", log)
        url = address.read_text()
        wait_for(lambda: ready(url)[0], 120, "/ready", log)
        segments = sorted(p.name for p in corpus.cdc_raw.iterdir() if p.name.endswith(".log"))
        yield FollowingPipeline(servers, pg, dsns["clickhouse"], cdc_raw, state, log, process, url, segments)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        servers.stop()


def test_a_stopped_sink_holds_while_the_others_flow_and_catches_up(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    with following_pipeline(corpus, tmp_path) as run:
        url, state, log, segments = run.url, run.state, run.log, run.segments
        # PostgreSQL goes away; the node writes on.
        run.servers.stop("postgres")
        copy_segments(corpus.cdc_raw, run.cdc_raw, segments[:2])
        second = int(segments[1].split("-")[2].split(".")[0])
        wait_for(
            lambda: checkpoint(state, "clickhouse")[0] >= second,
            120,
            "ClickHouse to get the first segments while PostgreSQL is down",
            log,
        )
        wait_for(lambda: samples(url).get('cdcfast_sink_up{sink="postgresql"}') == 0, 60, "sink_up 0", log)
        is_ready, body = ready(url)
        assert not is_ready and not body["components"]["writer-postgresql"]["ready"], body
        wait_for(
            lambda: samples(url).get('cdcfast_replication_lag_seconds{sink="postgresql"}', 0) > 0,
            60,
            "the PostgreSQL lag to rise",
            log,
        )
        assert samples(url).get('cdcfast_replication_lag_seconds{sink="clickhouse"}') == 0
        status = json.loads((state / "status.json").read_text())
        assert status["sinks"]["postgresql"]["down"] == "transient", status["sinks"]["postgresql"]
        assert status["sinks"]["clickhouse"]["down"] is None

        # Memory stays flat while the outage lasts and the rest of the stream arrives.
        copy_segments(corpus.cdc_raw, run.cdc_raw, segments[2:])
        rss = []
        end = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < end:
            rss.append(pipeline_rss(state))
            time.sleep(1)
        settled = rss[len(rss) // 4 :]
        assert max(settled) - min(settled) < 64 << 20, f"RSS grew during the outage: {rss}"
        assert not run.delivered(), "deleted before PostgreSQL had it"

        # PostgreSQL is back: it catches up, cdc_raw empties, /ready turns true again.
        run.servers.start("postgres")
        wait_for(run.delivered, 300, "every segment delivered to both sinks and deleted", log)
        wait_for(lambda: ready(url)[0], 60, "/ready to turn true again", log)
        assert samples(url).get('cdcfast_sink_up{sink="postgresql"}') == 1
        assert samples(url).get('cdcfast_errors_total{class="transient",sink="postgresql"}', 0) >= 1
        run.stop()
        assert_equal_to_expected(corpus, run.pg, run.ch)


def test_connections_cut_under_the_writers_lose_and_duplicate_nothing(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    with following_pipeline(corpus, tmp_path) as run:

        async def cut_every_connection() -> int:
            admin = await asyncpg.connect(run.pg)
            try:
                cut = await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                return len(cut)
            finally:
                await admin.close()

        cuts = 0
        for name in run.segments:
            copy_segments(corpus.cdc_raw, run.cdc_raw, [name])
            for _ in range(3):
                time.sleep(1.0)
                cuts += asyncio.run(cut_every_connection())
        wait_for(run.delivered, 300, "every segment delivered and deleted", run.log)
        assert cuts >= 5, "the test did not cut the writer's connection"
        assert run.process.poll() is None, run.log.read_text()[-4000:]  # retried, not restarted
        run.stop()
        assert "sink write failed: retrying" in run.log.read_text()
        assert_equal_to_expected(corpus, run.pg, run.ch)


def test_a_sink_with_a_wrong_password_stops_alone(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    dsns = ensure_services(["postgres", "clickhouse"])
    pg = asyncio.run(fresh_database(dsns["postgres"]))
    wrong = dsns["clickhouse"].replace("default@", f"default:{PASSWORD}@")
    cdc_raw, state = tmp_path / "cdc_raw", tmp_path / "state"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    run = subprocess.run(
        supervise_command(cdc_raw, corpus.schema_dir, pg, wrong, state=state, until_idle=True),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert "giving up: a sink is down" in output
    assert PASSWORD not in output and PASSWORD not in (state / "status.json").read_text(), "password leaked"
    status = json.loads((state / "status.json").read_text())
    assert status["sinks"]["clickhouse"]["down"] == "permanent"
    assert "password" in status["sinks"]["clickhouse"]["last_error"].lower()
    # PostgreSQL has everything; the segments stay for ClickHouse.
    schema, events = cdc_events(corpus)
    when = as_of(corpus.root)
    for table in schema.cdc_tables():
        assert asyncio.run(postgres_state(pg, table, when)) == load_expected(corpus.root, table)
    assert any(p.name.endswith("_cdc.idx") for p in cdc_raw.iterdir())


def plant_poison(cdc_raw: Path, schema_dir: Path, target: Path, count: int) -> tuple[set[bytes], int]:
    """The corpus' mutations re-framed into one segment, ``count`` of the all_types inserts with a
    date PostgreSQL cannot hold (the 4 value bytes patched in place). Returns the planted changes'
    ids and the number of CDC changes in the segment."""
    from support.segments import build_segment

    from cdcfast.commitlog import CommitLogReader, discover, load_schema
    from cdcfast.commitlog.segment import raw_entries
    from cdcfast.events import events_from_batch

    bad_date = b"\x00\x00\x00\x05"  # 2^31 - 5 days before 1970: no PostgreSQL date
    schema = load_schema(schema_dir)
    cdc = {(t.keyspace, t.name) for t in schema.cdc_tables()}
    mutations: list[bytes] = []
    candidates = 0
    for segment in discover([cdc_raw]):
        entries = list(raw_entries(segment.path))
        by_position: dict[int, list] = {}
        for batch in CommitLogReader(schema).read_segment(segment):
            for event in events_from_batch(batch):
                by_position.setdefault(event.position, []).append(event)
        for position, mutation in entries:
            events = by_position.get(position, [])
            dates = [
                c.value
                for e in events
                if e.table == "all_types" and e.op == "insert"
                for c in e.cells
                if c.column == "a_date" and c.value
            ]
            if count and len(events) == 1 and dates and mutation.count(dates[0]) == 1:
                candidates += 1
                if candidates % 7 == 0:  # spread over the stream
                    mutation = mutation.replace(dates[0], bad_date)
                    count -= 1
            mutations.append(mutation)
    assert count == 0, "not enough all_types inserts with a date to patch"
    segment_file = build_segment(mutations, 40).write(target, idx="completed")
    events = [
        e
        for b in CommitLogReader(schema).read_segment(discover([segment_file.parent])[0])
        for e in events_from_batch(b)
        if (e.keyspace, e.table) in cdc
    ]
    planted = {e.event_id for e in events if any(c.column == "a_date" and c.value == bad_date for c in e.cells)}
    return planted, len({e.event_id for e in events})


def test_planted_poison_lands_in_the_dead_letters_and_nothing_else_does(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    cdc_raw, state = tmp_path / "cdc_raw", tmp_path / "state"
    cdc_raw.mkdir()
    planted, total = plant_poison(corpus.cdc_raw, corpus.schema_dir, cdc_raw, count=3)
    servers = PrivateServices()
    try:
        dsns = servers.start("postgres", "clickhouse")
        pg = asyncio.run(fresh_database(dsns["postgres"]))
        run = subprocess.run(
            supervise_command(cdc_raw, corpus.schema_dir, pg, dsns["clickhouse"], state=state, until_idle=True),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        check_dead_letters(pg, dsns["clickhouse"], planted, total)
    finally:
        servers.stop()


def check_dead_letters(pg: str, ch: str, planted: set[bytes], total: int) -> None:

    async def postgresql() -> tuple[set[bytes], int]:
        conn = await asyncpg.connect(pg)
        try:
            dead = {r["event_id"].bytes for r in await conn.fetch("SELECT event_id FROM cdcfast.dead_letters")}
            changes = 0
            for keyspace, table in await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_name LIKE '%\\_changes'"
            ):
                changes += await conn.fetchval(f'SELECT count(*) FROM "{keyspace}"."{table}"')
            return dead, changes
        finally:
            await conn.close()

    dead, changes = asyncio.run(postgresql())
    assert dead == planted  # exactly the planted changes, nothing else
    assert changes == total - len(planted)
    client = Client.from_url(ch)
    assert client.execute("SELECT count() FROM cdcfast.dead_letters")[0][0] == 0  # ClickHouse can hold them
    ch_changes = sum(
        client.execute(f"SELECT count() FROM `{db}`.`{name}` FINAL")[0][0]
        for db, name in client.execute(
            "SELECT database, name FROM system.tables WHERE name LIKE '%\\\\_changes' AND database != 'system'"
        )
    )
    assert ch_changes == total
