"""Live (issue 9): one ``cdcfast supervise`` follows a real Cassandra 5.0.9 node through a sequence of
schema changes made while a client keeps writing, into PostgreSQL, TimescaleDB and ClickHouse,
without a restart, and every sink ends equal to Cassandra's ``SELECT *``.

The node (5.0's default format, 1 MiB segments, 200 ms syncs) starts with CDC tables ``items``,
``toggled`` and ``reborn`` and a non-CDC table ``plain``; cdcfast runs in following mode with
``--schema cassandra://`` (the live node's metadata). A writer thread writes all the time, each
write a single-row mutation with its own ``USING TIMESTAMP`` (unique, increasing), so its ``ts``
names it in every change log. While it writes:

1. ``ALTER TABLE items ADD c`` then writes setting ``c``;
2. ``ALTER TABLE items DROP b`` (after the last write naming ``b``) then writes without it;
3. ``CREATE TYPE addr`` and ``CREATE TABLE people`` with a non-frozen ``addr`` column (a new CDC
   table), writes (whole values and single fields); then ``ALTER TYPE addr ADD country`` and writes
   setting the new field (whole values and ``SET home.country = ...``);
4. ``CREATE TABLE late`` (cdc = true; sets and maps): picked up without a restart;
5. ``ALTER TABLE toggled WITH cdc = false``, writes, ``WITH cdc = true`` again, writes;
6. ``DROP TABLE reborn`` and ``CREATE TABLE reborn`` with other columns (a new table id), writes;
then a last stretch of writes to every table. Each step is followed by at least ``STEP_WRITES``
writes that use it (and ``STEP_SECONDS`` of writing), so the segments mix writes of before and
after each change.

What is asserted once the writer stopped and cdcfast is idle (lag 0 on every sink that is up,
nothing written for a while):

* every sink's state of every CDC table equals Cassandra's ``SELECT *``, compared on Cassandra's
  current columns (a dropped column is absent from ``SELECT *``; a sink may keep it or not). So a
  row whose only live cell was in the dropped column (``UPDATE items SET b = ...`` and nothing
  else: no row marker) is gone from ``SELECT *`` after the DROP, and must be gone from the sinks;
* every write made while its table had cdc = true (of the table as it is now: the re-created
  ``reborn``'s) is in the sink's change log exactly once; no change-log row is there twice; no row
  is there that no client write made; nothing of the non-CDC ``plain``;
* writes made while ``toggled`` had cdc = false: Cassandra does not retain them for CDC, but its
  docs say they may share segments with CDC data, and they do here (the other tables are written
  all along): whether a sink has them is left open (cdcfast keeps those written before it noticed
  the switch, docs/schema-evolution.md). They go to keys nothing else writes, so their rows are not
  compared (a sink may hold some of a key's writes); in the change log they are never duplicated;
* the old ``reborn``'s writes may be in ``reborn_changes`` (history) but never twice, and none of
  its rows is in the new ``reborn``'s state;
* no restart: the supervisor is the process started (same pid, still running), its children have
  the pids they had when it became ready, ``cdcfast_process_restarts_total`` is 0, its log has no
  "restarting"; no sink went down and nothing went to a dead-letter queue.

Every wait has a deadline and names what it waited for (table, sink). Failures are collected and
reported together (states, change logs, dead letters, restarts, the sinks' last errors, the log's
warnings), with each DDL's client-clock interval (to place a write's ``ts`` before or after it);
every write (CQL, ts, tag) is in ``writes.jsonl`` in the test's folder.

Ports: ``CDCFAST_LIVE_*_PORT`` plus 200 (19242, 17200, 17399), clear of the other live tests.
Run with ``python -m pytest tests/live/test_live_schema_changes.py -m slow`` (about three minutes
on 2 cores); the node and cdcfast are stopped (killed if need be) whatever happens.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from live.cassandra_node import NodeSetup, cassandra_node
from live.replication import (
    SINK_NAMES,
    Pipeline,
    Sinks,
    cassandra_state,
    compare_states,
    transient,
)
from support.live import following, fresh_sinks, keyspace_cdc_tables, live_marks, schema_uri, shifted_ports

pytestmark = live_marks(services=True)

PORT_OFFSET = 200  # added to CDCFAST_LIVE_*_PORT
SETUP = NodeSetup("schema-live", storage_compat="CASSANDRA_4", compression="none", heap="512M")
STEP_WRITES = 25  # writes that use a change before the next one
STEP_SECONDS = 3.0  # and at least this long
FINAL_SECONDS = 4.0  # the last stretch of writes to every table
STEP_TIMEOUT = 60.0  # for the writes of one step
DELIVERY_TIMEOUT = 150.0  # for every sink to have every write
STALL = 30.0  # ... or to give up earlier if no change log moved for this long
IDLE_TIMEOUT = 60.0
OFF_KEYS = 10_000  # toggled's keys written while cdc = false: OFF_KEYS and up, nothing else writes them

own_ports = shifted_ports(PORT_OFFSET)


# --------------------------------------------------------------------------------------------
# CQL literals (plain statements: no prepared metadata goes stale across ALTER TYPE / DROP)


def text(rng: random.Random, longest: int = 12) -> str:
    alphabet = "abcxyz 019-'\u00e9\u4e2d\U0001f600"
    value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))
    return "'" + value.replace("'", "''") + "'"


def number(rng: random.Random) -> int:
    return rng.randint(-(2**31), 2**31 - 1)


# --------------------------------------------------------------------------------------------
# the writer


@dataclass(frozen=True)
class Write:
    table: str  # Cassandra table name
    incarnation: str  # "reborn" before the DROP is "reborn#1", after it "reborn#2"; else the name
    ts: int
    tag: str  # what the write exercises: "items.c", "people.country", ...
    captured: bool  # its table had cdc = true when it was written
    cql: str


# A stream: the writes of one table as it is now. op(rng, ts) -> (CQL, tag)
Op = Callable[[random.Random, int], tuple[str, str]]


@dataclass
class Stream:
    table: str
    incarnation: str
    op: Op
    captured: bool = True
    cdc: bool = True  # False: a table that never has cdc (plain)


@dataclass
class Writer:
    """One thread writing all the time through cassandra-driver, to the streams of the moment.
    ``set``/``remove`` swap streams under the lock the thread holds while a chunk is in flight:
    once they return, no write of the old stream is pending (so a DROP may follow)."""

    session: Any
    seed: int
    chunk: int = 8
    pause: float = 0.1  # at most about 80 writes a second
    streams: dict[str, Stream] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    tags: Counter = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    retried: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="schema-writer", daemon=True)
        self.last_ts = 0

    def set(self, name: str, stream: Stream) -> None:
        with self.lock:
            self.streams[name] = stream

    def remove(self, name: str) -> None:
        with self.lock:
            self.streams.pop(name, None)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(90)
        assert not self.thread.is_alive(), "the writer thread did not stop within 90 s"

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the writer thread failed: {type(self.error).__name__}: {self.error}")
        assert not self.failed, "writes Cassandra refused:\n" + "\n".join(self.failed[:5])

    def ts(self) -> int:
        self.last_ts = max(self.last_ts + 1, time.time_ns() // 1000)
        return self.last_ts

    def wait_for(self, tag: str, count: int = STEP_WRITES, seconds: float = STEP_SECONDS) -> None:
        """Until ``count`` writes tagged ``tag`` succeeded and ``seconds`` passed."""
        started = time.monotonic()
        first = self.tags[tag]
        while True:
            self.check()
            if self.tags[tag] - first >= count and time.monotonic() - started >= seconds:
                return
            if time.monotonic() - started > STEP_TIMEOUT:
                raise AssertionError(
                    f"only {self.tags[tag] - first} writes '{tag}' within {STEP_TIMEOUT:.0f} s, want {count}"
                )
            time.sleep(0.1)

    def _run(self) -> None:
        from cassandra.concurrent import execute_concurrent

        try:
            while not self.stop_event.is_set():
                with self.lock:
                    streams = list(self.streams.values())
                    if streams:
                        pending = []
                        for _ in range(self.chunk):
                            stream = self.rng.choice(streams)
                            ts = self.ts()
                            cql, tag = stream.op(self.rng, ts)
                            write = Write(stream.table, stream.incarnation, ts, tag, stream.captured, cql)
                            pending.append((stream, write))
                        for attempt in range(6):
                            results = execute_concurrent(
                                self.session,
                                [(w.cql, None) for _, w in pending],
                                concurrency=self.chunk,
                                raise_on_first_error=False,
                            )
                            retry = []
                            for (stream, write), (ok, outcome) in zip(pending, results):
                                if ok:
                                    if stream.cdc:
                                        self.writes.append(write)
                                    self.tags[write.tag] += 1
                                elif attempt < 5 and transient(outcome):
                                    retry.append((stream, write))  # same CQL, same timestamp: the same mutation
                                else:
                                    self.failed.append(f"{write.cql}: {type(outcome).__name__}: {outcome}")
                            if not retry:
                                break
                            self.retried += len(retry)
                            pending = retry
                            time.sleep(0.5 * (attempt + 1))
                self.stop_event.wait(self.pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


# --------------------------------------------------------------------------------------------
# the tables' streams


def items_stream(ks: str, columns: tuple[str, ...]) -> Stream:
    """items (id, seq) with regular columns ``columns`` among a, b (int), c (text)."""
    tag = "items.no_b" if "b" not in columns else "items.c" if "c" in columns else "items"

    def value(rng: random.Random, column: str) -> str:
        return str(number(rng)) if column == "b" else text(rng)

    def op(rng: random.Random, ts: int) -> tuple[str, str]:
        key = f"id = {rng.randrange(60)} AND seq = {rng.randrange(5)}"
        roll = rng.random()
        if roll < 0.55:
            names = ("a", *[c for c in columns if c != "a" and rng.random() < 0.8])
            values = ", ".join(value(rng, c) for c in names)
            where = key.replace("id = ", "").replace(" AND seq = ", ", ")
            insert = f"INSERT INTO {ks}.items (id, seq, {', '.join(names)}) VALUES ({where}, {values})"
            return f"{insert} USING TIMESTAMP {ts}", tag
        if roll < 0.9:
            column = rng.choice(columns)
            new = "null" if rng.random() < 0.1 else value(rng, column)
            return f"UPDATE {ks}.items USING TIMESTAMP {ts} SET {column} = {new} WHERE {key}", tag
        return f"DELETE FROM {ks}.items USING TIMESTAMP {ts} WHERE {key}", tag

    return Stream("items", "items", op)


def toggled_stream(ks: str, off: bool) -> Stream:
    """toggled (id) v text, n int: keys below 100 while cdc = true, OFF_KEYS and up while false."""
    base, tag = (OFF_KEYS, "toggled.off") if off else (0, "toggled")

    def op(rng: random.Random, ts: int) -> tuple[str, str]:
        key = base + rng.randrange(100)
        roll = rng.random()
        if roll < 0.6:
            insert = f"INSERT INTO {ks}.toggled (id, v, n) VALUES ({key}, {text(rng)}, {number(rng)})"
            return f"{insert} USING TIMESTAMP {ts}", tag
        if roll < 0.9:
            return f"UPDATE {ks}.toggled USING TIMESTAMP {ts} SET n = {number(rng)} WHERE id = {key}", tag
        return f"DELETE FROM {ks}.toggled USING TIMESTAMP {ts} WHERE id = {key}", tag

    return Stream("toggled", "toggled", op, captured=not off)


def toggled_on_again(ks: str) -> Stream:
    stream = toggled_stream(ks, off=False)
    inner = stream.op
    return Stream("toggled", "toggled", lambda rng, ts: (inner(rng, ts)[0], "toggled.on_again"))


def reborn_old_stream(ks: str) -> Stream:
    def op(rng: random.Random, ts: int) -> tuple[str, str]:
        key = rng.randrange(100)
        if rng.random() < 0.85:
            return f"INSERT INTO {ks}.reborn (id, v) VALUES ({key}, {text(rng)}) USING TIMESTAMP {ts}", "reborn.old"
        return f"DELETE FROM {ks}.reborn USING TIMESTAMP {ts} WHERE id = {key}", "reborn.old"

    return Stream("reborn", "reborn#1", op)


def reborn_new_stream(ks: str) -> Stream:
    """The re-created reborn: (k text, n int) w double, note text."""

    def op(rng: random.Random, ts: int) -> tuple[str, str]:
        key = f"k = '{rng.choice('abcdefgh')}' AND n = {rng.randrange(20)}"
        roll = rng.random()
        if roll < 0.6:
            return (
                f"INSERT INTO {ks}.reborn (k, n, w, note) VALUES ('{rng.choice('abcdefgh')}', {rng.randrange(20)}, "
                f"{rng.uniform(-1e6, 1e6)!r}, {text(rng)}) USING TIMESTAMP {ts}",
                "reborn.new",
            )
        if roll < 0.9:
            return f"UPDATE {ks}.reborn USING TIMESTAMP {ts} SET note = {text(rng)} WHERE {key}", "reborn.new"
        return f"DELETE FROM {ks}.reborn USING TIMESTAMP {ts} WHERE {key}", "reborn.new"

    return Stream("reborn", "reborn#2", op)


def people_stream(ks: str, country: bool) -> Stream:
    """people (id) name text, home addr (non-frozen UDT: street, zip [, country])."""
    tag = "people.country" if country else "people"

    def home(rng: random.Random) -> str:
        fields = [f"street: {text(rng)}", f"zip: {rng.randrange(100000)}"]
        if country:
            fields.append(f"country: {text(rng, 6)}")
        return "{" + ", ".join(fields) + "}"

    def op(rng: random.Random, ts: int) -> tuple[str, str]:
        key = rng.randrange(80)
        roll = rng.random()
        if roll < 0.45:
            insert = f"INSERT INTO {ks}.people (id, name, home) VALUES ({key}, {text(rng)}, {home(rng)})"
            return f"{insert} USING TIMESTAMP {ts}", tag
        if roll < 0.65:
            zip_code = rng.randrange(100000)
            return f"UPDATE {ks}.people USING TIMESTAMP {ts} SET home.zip = {zip_code} WHERE id = {key}", tag
        if roll < 0.8 and country:
            return f"UPDATE {ks}.people USING TIMESTAMP {ts} SET home.country = {text(rng, 6)} WHERE id = {key}", tag
        if roll < 0.92:
            return f"UPDATE {ks}.people USING TIMESTAMP {ts} SET name = {text(rng)} WHERE id = {key}", tag
        return f"DELETE FROM {ks}.people USING TIMESTAMP {ts} WHERE id = {key}", tag

    return Stream("people", "people", op)


def late_stream(ks: str) -> Stream:
    """late (id, k) score double, tags set<text>, attrs map<text, int>."""

    def op(rng: random.Random, ts: int) -> tuple[str, str]:
        key = f"id = {rng.randrange(40)} AND k = '{rng.choice('pqrs')}'"
        roll = rng.random()
        if roll < 0.5:
            tags = "{" + ", ".join(sorted({text(rng, 4) for _ in range(rng.randint(0, 3))})) + "}"
            entries = {text(rng, 4): number(rng) for _ in range(rng.randint(0, 3))}  # distinct keys
            attrs = "{" + ", ".join(f"{k}: {v}" for k, v in entries.items()) + "}"
            return (
                f"INSERT INTO {ks}.late (id, k, score, tags, attrs) VALUES ({rng.randrange(40)}, "
                f"'{rng.choice('pqrs')}', {rng.uniform(-1e3, 1e3)!r}, {tags}, {attrs}) USING TIMESTAMP {ts}",
                "late",
            )
        if roll < 0.7:
            return f"UPDATE {ks}.late USING TIMESTAMP {ts} SET tags = tags + {{{text(rng, 4)}}} WHERE {key}", "late"
        if roll < 0.9:
            entry = f"attrs[{text(rng, 4)}] = {number(rng)}"
            return f"UPDATE {ks}.late USING TIMESTAMP {ts} SET {entry} WHERE {key}", "late"
        return f"DELETE FROM {ks}.late USING TIMESTAMP {ts} WHERE {key}", "late"

    return Stream("late", "late", op)


def plain_stream(ks: str) -> Stream:
    def op(rng: random.Random, ts: int) -> tuple[str, str]:
        return f"INSERT INTO {ks}.plain (id, v) VALUES ({rng.randrange(50)}, {text(rng)}) USING TIMESTAMP {ts}", "plain"

    return Stream("plain", "plain", op, captured=False, cdc=False)


def initial_ddl(ks: str) -> list[str]:
    return [
        f"CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
        f"CREATE TABLE {ks}.items (id int, seq int, a text, b int, PRIMARY KEY (id, seq)) WITH cdc = true",
        f"CREATE TABLE {ks}.toggled (id int PRIMARY KEY, v text, n int) WITH cdc = true",
        f"CREATE TABLE {ks}.reborn (id int PRIMARY KEY, v text) WITH cdc = true",
        f"CREATE TABLE {ks}.plain (id int PRIMARY KEY, v text) WITH cdc = false",
    ]


# --------------------------------------------------------------------------------------------
# waiting for cdcfast


def change_log_failures(table: str, sink: str, got: Counter, required: set[int], allowed: set[int]) -> list[str]:
    missing = sorted(required - set(got))
    doubled = {ts: n for ts, n in got.items() if n > 1}
    unexpected = sorted(set(got) - allowed)
    failures = []
    where = f"[{sink}] {table}_changes"
    if missing:
        failures.append(f"{where}: {len(missing)} of {len(required)} writes missing (ts {missing[:4]})")
    if doubled:
        failures.append(f"{where}: {len(doubled)} writes more than once ({dict(list(doubled.items())[:4])})")
    if unexpected:
        failures.append(f"{where}: {len(unexpected)} rows of no client write (ts {unexpected[:4]})")
    return failures


def wait_delivered(sinks: Sinks, pipe: Pipeline, required: dict[str, set[int]]) -> list[str]:
    """Until every sink's change log of every table has every required write; or the deadline, or
    no change log moved for STALL seconds. What is still missing then, per table and sink."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    before, moved = None, time.monotonic()
    while True:
        pipe.check()
        logs = {table: sinks.change_logs(table) for table in required}
        missing = {
            (table, sink): len(required[table] - set(got))
            for table, by_sink in logs.items()
            for sink, got in by_sink.items()
            if required[table] - set(got)
        }
        if not missing:
            return []
        now = {(t, s): sum(got.values()) for t, by_sink in logs.items() for s, got in by_sink.items()}
        if now != before:
            before, moved = now, time.monotonic()
        if time.monotonic() > deadline or time.monotonic() - moved > STALL:
            why = "deadline" if time.monotonic() > deadline else f"no change log moved for {STALL:.0f} s"
            return [
                f"[{sink}] {table}_changes: {n} of {len(required[table])} writes still missing after "
                f"{DELIVERY_TIMEOUT - max(0.0, deadline - time.monotonic()):.0f} s ({why})"
                for (table, sink), n in sorted(missing.items())
            ]
        time.sleep(1.0)


def wait_idle(pipe: Pipeline, quiet: float = 3.0) -> list[str]:
    """Until every sink that is up has lag 0 and nothing was written for ``quiet`` seconds.
    A sink that is down is reported (with its last error from status.json), not waited for."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    before = None
    while True:
        pipe.check()
        samples = pipe.samples()
        status = pipe.status()
        down = {name: s for name, s in status.get("sinks", {}).items() if s.get("down")}
        now = {
            sink: (
                samples.get(f'cdcfast_replication_lag_bytes{{sink="{sink}"}}', 0.0),
                samples.get(f'cdcfast_events_written_total{{sink="{sink}"}}', 0.0),
            )
            for sink in SINK_NAMES
            if sink not in down
        }
        if before == now and all(lag == 0 for lag, _ in now.values()):
            return [f"[{name}] sink down ({s['down']}): {s.get('last_error')}" for name, s in down.items()]
        if time.monotonic() > deadline:
            return [f"cdcfast not idle within {IDLE_TIMEOUT:.0f} s: (lag bytes, events written) per sink {now}"] + [
                f"[{name}] sink down ({s['down']}): {s.get('last_error')}" for name, s in down.items()
            ]
        before = now
        time.sleep(quiet)


def wait_children(pipe: Pipeline, timeout: float = 30) -> dict[str, int]:
    """The child processes status.json lists once the supervisor's loop runs: name -> pid."""
    deadline = time.monotonic() + timeout
    while True:
        pipe.check()
        children = {p["name"]: p["pid"] for p in pipe.status().get("processes", [])}
        if children:
            return children
        if time.monotonic() > deadline:
            raise AssertionError(f"status.json lists no child processes within {timeout:.0f} s:\n{pipe.log()}")
        time.sleep(0.2)


def restart_failures(pipe: Pipeline, children: dict[str, int]) -> list[str]:
    """The supervisor started is the one running, with the children it had when ready."""
    failures = []
    assert pipe.process is not None
    if pipe.process.poll() is not None:
        failures.append(f"cdcfast supervise exited with {pipe.process.returncode}")
    status = pipe.status()
    if status.get("supervisor_pid") != pipe.process.pid:
        failures.append(f"status.json names supervisor pid {status.get('supervisor_pid')}, started {pipe.process.pid}")
    now = {p["name"]: p["pid"] for p in status.get("processes", [])}
    if now != children:
        failures.append(f"child processes changed (restarted): at ready {children}, now {now}")
    dead = [p["name"] for p in status.get("processes", []) if not p.get("alive")]
    if dead:
        failures.append(f"child processes not alive: {dead}")
    restarts = pipe.metrics().get("cdcfast_process_restarts_total", 0)
    if restarts:
        failures.append(f"cdcfast_process_restarts_total = {restarts:.0f}")
    lines = [line for line in pipe.log(10**7).splitlines() if "restarting" in line]
    if lines:
        failures.append(f"{len(lines)} restart lines in the log, the first: {lines[0][:400]}")
    return failures


def log_digest(pipe: Pipeline, limit: int = 12) -> str:
    """The log's distinct warnings and errors (first occurrence of each message), for the report."""
    seen: dict[str, str] = {}
    for line in pipe.log(10**7).splitlines():
        lowered = line.lower()
        if "warning" in lowered or "error" in lowered:
            key = line.split('"event":')[-1][:80] if '"event":' in line else line[:120]
            seen.setdefault(key, line[:600])
    return "\n".join(list(seen.values())[:limit]) or "(none)"


# --------------------------------------------------------------------------------------------


def test_cdcfast_follows_live_schema_changes_without_a_restart(tmp_path: Path) -> None:
    started = time.monotonic()
    sinks = fresh_sinks("evo")
    ks = sinks.keyspace
    marks: list[str] = []

    def lap(label: str) -> None:
        marks.append(f"{label}: {time.monotonic() - started:.0f} s")
        print(marks[-1], flush=True)

    with cassandra_node(tmp_path / "node", SETUP) as node:
        lap("node started")
        session = node.session
        for statement in initial_ddl(ks):
            session.execute(statement, timeout=60)
        timeline: list[str] = []  # each DDL with the client clock (write timestamps) around it

        def ddl(statement: str) -> None:
            before = time.time_ns() // 1000
            session.execute(statement, timeout=60)
            timeline.append(f"{before}..{time.time_ns() // 1000} {' '.join(statement.split())}")

        writer = Writer(session, seed=int(ks[4:], 16))
        with following(node, sinks, tmp_path / "state", f"{ks}-node1") as pipe:
            children = wait_children(pipe)
            lap("cdcfast ready")
            writer.set("items", items_stream(ks, ("a", "b")))
            writer.set("toggled", toggled_stream(ks, off=False))
            writer.set("reborn", reborn_old_stream(ks))
            writer.set("plain", plain_stream(ks))
            writer.start()
            try:
                writer.wait_for("items")

                # 1. ADD column, then writes setting it
                ddl(f"ALTER TABLE {ks}.items ADD c text")
                writer.set("items", items_stream(ks, ("a", "b", "c")))
                writer.wait_for("items.c")
                lap("1. items ADD c")

                # 2. DROP column (once nothing in flight names it), then writes without it
                writer.set("items", items_stream(ks, ("a", "c")))
                ddl(f"ALTER TABLE {ks}.items DROP b")
                writer.wait_for("items.no_b")
                lap("2. items DROP b")

                # 3. CREATE TYPE + a table with a non-frozen UDT column; ALTER TYPE ADD field
                ddl(f"CREATE TYPE {ks}.addr (street text, zip int)")
                ddl(f"CREATE TABLE {ks}.people (id int PRIMARY KEY, name text, home addr) WITH cdc = true")
                writer.set("people", people_stream(ks, country=False))
                writer.wait_for("people")
                ddl(f"ALTER TYPE {ks}.addr ADD country text")
                writer.set("people", people_stream(ks, country=True))
                writer.wait_for("people.country")
                lap("3. people created; addr ADD country")

                # 4. a new CDC table
                ddl(
                    f"CREATE TABLE {ks}.late (id int, k text, score double, tags set<text>, attrs map<text, int>, "
                    "PRIMARY KEY (id, k)) WITH cdc = true",
                )
                writer.set("late", late_stream(ks))
                writer.wait_for("late")
                lap("4. late created")

                # 5. cdc off (writes to keys of their own), then on again
                writer.remove("toggled")
                ddl(f"ALTER TABLE {ks}.toggled WITH cdc = false")
                writer.set("toggled", toggled_stream(ks, off=True))
                writer.wait_for("toggled.off")
                writer.remove("toggled")
                ddl(f"ALTER TABLE {ks}.toggled WITH cdc = true")
                writer.set("toggled", toggled_on_again(ks))
                writer.wait_for("toggled.on_again")
                lap("5. toggled cdc off and on")

                # 6. DROP TABLE and CREATE TABLE under the same name, other columns
                writer.remove("reborn")
                ddl(f"DROP TABLE {ks}.reborn")
                ddl(
                    f"CREATE TABLE {ks}.reborn (k text, n int, w double, note text, PRIMARY KEY (k, n)) "
                    "WITH cdc = true",
                )
                writer.set("reborn", reborn_new_stream(ks))
                writer.wait_for("reborn.new")
                lap("6. reborn dropped and re-created")

                time.sleep(FINAL_SECONDS)
                pipe.check()
            finally:
                writer.stop()
            writer.check()
            history = tmp_path / "writes.jsonl"  # for a failure's post-mortem: which write, when
            history.write_text("".join(json.dumps(w.__dict__) + "\n" for w in writer.writes))
            lap(f"writes done: {len(writer.writes)} to CDC tables ({dict(writer.tags)}), {writer.retried} retried")

            # what each change log must hold, and may hold
            required: dict[str, set[int]] = {}
            allowed: dict[str, set[int]] = {}
            current = {"items": "items", "toggled": "toggled", "reborn": "reborn#2", "people": "people", "late": "late"}
            for write in writer.writes:
                allowed.setdefault(write.table, set()).add(write.ts)
                if write.captured and write.incarnation == current[write.table]:
                    required.setdefault(write.table, set()).add(write.ts)
            failures = wait_delivered(sinks, pipe, required)
            lap("delivered" if not failures else "delivery incomplete")
            failures += wait_idle(pipe)
            lap("idle")

            tables = keyspace_cdc_tables(schema_uri(node), ks)
            assert sorted(tables) == sorted(current), f"Cassandra's CDC tables: {sorted(tables)}"
            assert "b" not in tables["items"].columns and "c" in tables["items"].columns
            home = tables["people"].columns["home"].type
            assert home.field_names[-1] == "country", home
            for name, table in sorted(tables.items()):
                want = cassandra_state(session, table)
                # Keys written while cdc was off: a sink may have some of their writes (those made
                # before it noticed the switch, docs/schema-evolution.md), so their rows may differ.
                off_keys = (lambda key: key[0] >= OFF_KEYS) if name == "toggled" else None
                failures += compare_states(sinks, table, want, ignored=off_keys)
                for sink, got in sinks.change_logs(name).items():
                    failures += change_log_failures(name, sink, got, required.get(name, set()), allowed[name])
            off = {w.ts for w in writer.writes if w.table == "toggled" and not w.captured}
            kept = {sink: len(off & set(got)) for sink, got in sinks.change_logs("toggled").items()}
            lap(f"writes made while toggled had cdc = false, in each sink's change log: {kept} of {len(off)}")
            for sink, got in sinks.change_logs("plain").items():
                if got:
                    failures.append(f"[{sink}] plain (cdc = false) has {sum(got.values())} change-log rows")
            for sink, letters in sinks.dead_letters().items():
                by_table = Counter((d["table"], d["reason"]) for d in letters)
                failures += [
                    f"[{sink}] {table}: {n} events in the dead-letter queue: {reason}"
                    for (table, reason), n in sorted(by_table.items())
                ]
            failures += restart_failures(pipe, children)
            lap("compared")
            assert not failures, (
                f"{len(failures)} failures:\n" + "\n".join(failures)
                + f"\n\ntimings: {marks}\n\nDDL (client clock, microseconds):\n" + "\n".join(timeline)
                + f"\n\nevery write: {history}; cdcfast's log: {pipe.log_path}"
                + f"\n\ncdcfast's warnings and errors:\n{log_digest(pipe)}"
            )  # fmt: skip
            assert pipe.stop() == 0, f"cdcfast did not stop cleanly:\n{pipe.log()}"
    print(f"\nschema changes followed: {len(writer.writes)} writes, {marks}")
