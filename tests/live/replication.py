"""Helpers for live replication tests: real Cassandra -> ``cdcfast supervise`` -> every sink.

* :class:`Workload`: CDC tables of many types and a seeded mix of inserts, updates, collection
  changes, static rows, row, range and partition deletions through cassandra-driver. Every write
  carries its own ``USING TIMESTAMP`` (unique, increasing), so it is one change event whose ``ts``
  names it in every change log, and a client retry is the very same mutation. Writes are paced
  (bytes per second) and retried on timeouts; refusals of a full ``cdc_raw`` are counted, never
  retried.
* :class:`Pipeline`: one ``cdcfast supervise`` (following mode) in its own process group, its log
  in a file; always stopped.
* :class:`Sinks`: fresh PostgreSQL and TimescaleDB databases and a ClickHouse database per
  keyspace; their change logs (``ts`` -> rows) and states (``SELECT *`` as of now) read back.
* :func:`cassandra_state`: Cassandra's own ``SELECT JSON *`` in the same canonical form.
* :class:`CdcRawMonitor`: samples a node's ``cdc_raw`` size and the segments that pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from clickhouse_driver import Client
from support.expected import canonical_rows, differences, from_cassandra_json
from support.pipeline import supervise_command, timescale_dsn
from support.services import ensure_services
from support.sinks import as_clickhouse_holds, clickhouse_state, fresh_database, postgres_state
from support.throwaway import made_clickhouse_database

from cdcfast.commitlog.schema import TableDef
from cdcfast.transform.typemap import ClickHouseFeatures

TABLES = ("events", "profiles")
SINK_NAMES = ("postgresql", "timescaledb", "clickhouse")


def ddl(keyspace: str, replication_factor: int) -> list[str]:
    return [
        f"CREATE KEYSPACE {keyspace} WITH replication = "
        f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}",
        f"""CREATE TABLE {keyspace}.events (
            id int, seq int, owner text STATIC, payload blob, note text, n bigint, at timestamp,
            tags set<text>, attrs map<text, int>, PRIMARY KEY (id, seq)
        ) WITH cdc = true""",
        f"""CREATE TABLE {keyspace}.profiles (
            id int PRIMARY KEY, name text, score double, born date, seen timestamp, ip inet, uid uuid,
            ratio decimal, big varint, flags frozen<list<int>>, place tuple<text, int>
        ) WITH cdc = true""",
        f"CREATE TABLE {keyspace}.plain (id int PRIMARY KEY, v text) WITH cdc = false",
    ]


@dataclass
class WorkloadResult:
    writes: dict[str, Counter] = field(default_factory=lambda: {t: Counter() for t in TABLES})  # table -> ts -> 1
    bytes: int = 0  # payload bytes sent to CDC tables
    refused: list[str] = field(default_factory=list)  # writes Cassandra refused (cdc_raw full)
    failed: list[str] = field(default_factory=list)  # writes that failed on every try
    retried: int = 0  # tries repeated after a timeout or an unavailable replica
    total: int = 0  # successful writes to CDC tables (read while the workload runs in a thread)


class Workload:
    """A seeded stream of single-row writes to the CDC tables (and a few to a non-CDC one)."""

    def __init__(
        self,
        session: Any,
        keyspace: str,
        seed: int,
        consistency: Any = None,
        partitions: int = 2000,
        rows: int = 8,
        cdc_refusals: bool = True,
    ) -> None:
        """``cdc_refusals``: a WriteFailure is Cassandra refusing a CDC write (cdc_raw full): counted,
        not retried. Otherwise (a cluster whose cdc_raw cannot fill) it is retried like a timeout."""
        from cassandra import ConsistencyLevel

        self.session = session
        self.keyspace = keyspace
        self.rng = random.Random(seed)
        self.partitions, self.rows = partitions, rows
        self.cdc_refusals = cdc_refusals
        self.consistency = consistency if consistency is not None else ConsistencyLevel.ONE
        self.last_ts = 0
        self.result = WorkloadResult()
        ks = keyspace
        statements = {
            "insert": f"INSERT INTO {ks}.events (id, seq, payload, note, n, at, tags, attrs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
            "update": f"UPDATE {ks}.events USING TIMESTAMP ? SET note = ?, n = ? WHERE id = ? AND seq = ?",
            "tags": f"UPDATE {ks}.events USING TIMESTAMP ? SET tags = tags + ? WHERE id = ? AND seq = ?",
            "untag": f"UPDATE {ks}.events USING TIMESTAMP ? SET tags = tags - ? WHERE id = ? AND seq = ?",
            "attrs": f"UPDATE {ks}.events USING TIMESTAMP ? SET attrs[?] = ? WHERE id = ? AND seq = ?",
            "owner": f"UPDATE {ks}.events USING TIMESTAMP ? SET owner = ? WHERE id = ?",
            "null_note": f"UPDATE {ks}.events USING TIMESTAMP ? SET note = null WHERE id = ? AND seq = ?",
            "delete_row": f"DELETE FROM {ks}.events USING TIMESTAMP ? WHERE id = ? AND seq = ?",
            "delete_range": f"DELETE FROM {ks}.events USING TIMESTAMP ? WHERE id = ? AND seq >= ? AND seq < ?",
            "delete_partition": f"DELETE FROM {ks}.events USING TIMESTAMP ? WHERE id = ?",
            "profile": f"INSERT INTO {ks}.profiles (id, name, score, born, seen, ip, uid, ratio, big, flags, place) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
            "profile_update": f"UPDATE {ks}.profiles USING TIMESTAMP ? SET score = ?, flags = ? WHERE id = ?",
            "profile_delete": f"DELETE name, ip FROM {ks}.profiles USING TIMESTAMP ? WHERE id = ?",
            "plain": f"INSERT INTO {ks}.plain (id, v) VALUES (?, ?)",
        }
        self.prepared = {}
        for name, cql in statements.items():
            prepared = session.prepare(cql)
            prepared.consistency_level = self.consistency
            prepared.is_idempotent = True  # every write has its own timestamp: a retry is the same mutation
            self.prepared[name] = prepared
        self.mix = [
            ("insert", 46),
            ("update", 10),
            ("tags", 5),
            ("untag", 2),
            ("attrs", 4),
            ("owner", 4),
            ("null_note", 2),
            ("delete_row", 5),
            ("delete_range", 2),
            ("delete_partition", 1),
            ("profile", 10),
            ("profile_update", 5),
            ("profile_delete", 2),
            ("plain", 2),
        ]

    def ts(self) -> int:
        self.last_ts = max(self.last_ts + 1, time.time_ns() // 1000)
        return self.last_ts

    def text(self, longest: int = 24) -> str:
        alphabet = "abcdefxyz 0123456789-_/\u00e9\u4e2d\U0001f600"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, longest)))

    def op(self, payload: tuple[int, int]) -> tuple[str, str | None, tuple, int]:
        """One write: (statement, CDC table or None, values, payload bytes)."""
        rng = self.rng
        kind = rng.choices([k for k, _ in self.mix], [w for _, w in self.mix])[0]
        pid, seq = rng.randrange(self.partitions), rng.randrange(self.rows)
        if kind == "insert":
            blob = rng.randbytes(rng.randint(*payload))
            tags = {self.text(6) for _ in range(rng.randint(0, 3))}
            attrs = {self.text(5): rng.randint(-(2**31), 2**31 - 1) for _ in range(rng.randint(0, 3))}
            at = rng.randint(-(2**40), 2**41)
            values = (pid, seq, blob, self.text(), rng.randint(-(2**63), 2**63 - 1), at, tags, attrs, self.ts())
            return kind, "events", values, len(blob)
        if kind == "update":
            return kind, "events", (self.ts(), self.text(), rng.randint(-1000, 1000), pid, seq), 0
        if kind in ("tags", "untag"):
            return kind, "events", (self.ts(), {self.text(6) for _ in range(rng.randint(1, 2))}, pid, seq), 0
        if kind == "attrs":
            return kind, "events", (self.ts(), self.text(5), rng.randint(0, 99), pid, seq), 0
        if kind == "owner":
            return kind, "events", (self.ts(), self.text(), pid), 0
        if kind in ("null_note", "delete_row"):
            return kind, "events", (self.ts(), pid, seq), 0
        if kind == "delete_range":
            return kind, "events", (self.ts(), pid, seq, seq + rng.randint(1, 6)), 0
        if kind == "delete_partition":
            return kind, "events", (self.ts(), pid), 0
        if kind == "profile":
            from cassandra.util import Date

            values = (
                pid,
                self.text(),
                rng.uniform(-1e6, 1e6),
                Date(rng.randint(-100_000, 100_000)),
                rng.randint(0, 2**42),
                f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                uuid.UUID(int=rng.getrandbits(128)),
                rng.randint(-(10**12), 10**12) / 1000,
                rng.randint(-(2**90), 2**90),
                [rng.randint(-9, 9) for _ in range(rng.randint(0, 4))],
                (self.text(8), rng.randint(0, 9)),
                self.ts(),
            )
            return kind, "profiles", values, 0
        if kind == "profile_update":
            flags = [rng.randint(0, 5) for _ in range(rng.randint(0, 3))]
            return kind, "profiles", (self.ts(), rng.uniform(0, 1), flags, pid), 0
        if kind == "profile_delete":
            return kind, "profiles", (self.ts(), pid), 0
        return kind, None, (pid, self.text()), 0

    def run(
        self,
        total_bytes: int,
        bytes_per_second: float,
        payload: tuple[int, int] = (2000, 6000),
        chunk: int = 40,
        concurrency: int = 16,
        stop: threading.Event | None = None,
        between_chunks: Any = None,
    ) -> WorkloadResult:
        """Write until ``total_bytes`` of payload went to the CDC tables, at about ``bytes_per_second``."""
        from cassandra.concurrent import execute_concurrent

        started, sent = time.monotonic(), 0
        while sent < total_bytes and not (stop and stop.is_set()):
            ops = [self.op(payload) for _ in range(chunk)]
            pending = ops
            for attempt in range(8):
                results = execute_concurrent(
                    self.session,
                    [(self.prepared[kind], values) for kind, _, values, _ in pending],
                    concurrency=concurrency,
                    raise_on_first_error=False,
                )
                retry = []
                for op, (ok, outcome) in zip(pending, results):
                    if ok:
                        if op[1] is not None:
                            ts = op[2][-1] if op[0] in ("insert", "profile") else op[2][0]
                            self.result.writes[op[1]][ts] += 1
                            self.result.total += 1
                        continue
                    if self.cdc_refusals and refused(outcome):
                        self.result.refused.append(f"{op[0]}: {outcome}")
                    elif attempt < 7 and (transient(outcome) or refused(outcome)):
                        retry.append(op)
                    else:
                        self.result.failed.append(f"{op[0]}: {type(outcome).__name__}: {outcome}")
                if not retry:
                    break
                self.result.retried += len(retry)
                pending = retry
                time.sleep(0.5 * (attempt + 1))
            sent += sum(op[3] for op in ops)
            self.result.bytes += sum(op[3] for op in ops)
            if between_chunks is not None:
                between_chunks()
            ahead = sent / bytes_per_second - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        return self.result


def transient(error: Any) -> bool:
    """Errors after which the same write may succeed: timeouts, unavailable replicas, lost connections."""
    from cassandra import OperationTimedOut, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return isinstance(error, (WriteTimeout, Unavailable, OperationTimedOut, NoHostAvailable, ConnectionException))


def refused(error: Any) -> bool:
    """Cassandra's answer to a write into a CDC table while cdc_raw is full: a WriteFailure (the
    replica's CDCWriteException, "Rejecting mutation to keyspace ... Free up space in cdc_raw")."""
    from cassandra import WriteFailure

    return isinstance(error, WriteFailure) or "Rejecting mutation" in str(error)


# --------------------------------------------------------------------------------------------
# cdcfast supervise


class Pipeline:
    """One ``cdcfast supervise`` next to one node (following mode), in its own process group."""

    def __init__(
        self, cdc_raw: Path, schema: str, sinks: list[str], state: Path, node: str, extra: tuple[str, ...] = ()
    ) -> None:
        self.command = supervise_command(
            cdc_raw, Path(schema), *sinks, state=state, poll=0.2, extra=("--node", node, *extra)
        )
        # supervise_command passes the schema as a path: keep a cassandra:// URI as it is
        self.command[self.command.index("--schema") + 1] = schema
        self.state, self.node = state, node
        self.log_path = state.parent / f"{state.name}.log"
        self.process: subprocess.Popen | None = None
        self.stops: list[int] = []  # exit codes of earlier runs

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=Path(__file__).parents[2]
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def check(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        assert code is None, f"cdcfast supervise ({self.node}) exited with {code}:\n{self.log()}"

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM (a graceful drain); SIGKILL of the whole process group if it does not end in time."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # any child left behind (the group is ours alone)
        code = process.wait()
        self.stops.append(code)
        return code

    def wait_ready(self, timeout: float = 120) -> None:
        """Until ``/ready`` answers 200: every writer connected to its sink, parsers started."""
        import urllib.error
        import urllib.request

        address = self.state / "run" / "metrics.addr"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if address.exists():
                try:
                    if urllib.request.urlopen(address.read_text() + "/ready", timeout=5).status == 200:
                        return
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
            time.sleep(0.3)
        raise AssertionError(f"cdcfast supervise ({self.node}) not ready within {timeout:.0f} s:\n{self.log()}")

    def samples(self) -> dict[str, float]:
        """Its /metrics samples as they are, labels included (``cdcfast_sink_up{sink="clickhouse"}``)."""
        import urllib.request

        url = (self.state / "run" / "metrics.addr").read_text()
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }

    def metrics(self) -> dict[str, float]:
        """Its /metrics samples summed over labels, by name."""
        totals: dict[str, float] = {}
        for sample, value in self.samples().items():
            name = sample.split("{")[0]
            totals[name] = totals.get(name, 0.0) + value
        return totals

    def status(self) -> dict:
        """Its ``status.json`` (pids, per-sink checkpoint, last error, down), or {} before the first."""
        path = self.state / "status.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}


@contextlib.contextmanager
def pipelines(*items: Pipeline) -> Iterator[tuple[Pipeline, ...]]:
    """Start them; stop every one at the end, whatever happened."""
    try:
        for item in items:
            item.start()
        yield items
    finally:
        for item in items:
            item.stop(timeout=60)


# --------------------------------------------------------------------------------------------
# sinks


class Sinks:
    """A fresh PostgreSQL and TimescaleDB database each, and ClickHouse (databases named after the
    test's keyspace, which is unique per run); all dropped when the test ends (support.throwaway)."""

    def __init__(self, keyspace: str) -> None:
        dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
        self.keyspace = keyspace  # <prefix>_<10 hex digits>, new for each run
        self.pg = asyncio.run(fresh_database(dsns["postgres"]))
        self.ts = asyncio.run(fresh_database(dsns["timescaledb"]))
        self.ch = dsns["clickhouse"]
        self.client = Client.from_url(self.ch)
        made_clickhouse_database(self.ch, keyspace)  # cdcfast creates it, named after the keyspace
        self.drop_stale_clickhouse(keyspace.rsplit("_", 1)[0])
        self.features = ClickHouseFeatures.from_version(self.client.execute("SELECT version()")[0][0])

    @property
    def dsns(self) -> list[str]:
        return [self.pg, timescale_dsn(self.ts), self.ch]

    def change_logs(self, table: str) -> dict[str, Counter]:
        """Per sink: ts -> change-log rows with that ts."""

        async def postgres(dsn: str) -> Counter:
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(f'SELECT ts FROM "{self.keyspace}"."{table}_changes"')
            except asyncpg.UndefinedTableError:
                rows = []
            finally:
                await conn.close()
            return Counter(r["ts"] for r in rows)

        try:
            ch_rows = self.client.execute(f"SELECT ts FROM `{self.keyspace}`.`{table}_changes` FINAL")
        except Exception as exc:  # not created yet
            if "doesn't exist" not in str(exc) and "does not exist" not in str(exc):
                raise
            ch_rows = []
        return {
            "postgresql": asyncio.run(postgres(self.pg)),
            "timescaledb": asyncio.run(postgres(self.ts)),
            "clickhouse": Counter(ts for (ts,) in ch_rows),
        }

    def dead_letters(self) -> dict[str, list[dict]]:
        """Per sink: the dead letters of this keyspace (``cdcfast dlq list``), oldest first."""
        from cdcfast.sinks import open_sink

        async def read(kind: str, dsn: str) -> list[dict]:
            sink = open_sink(kind, dsn, kind)
            await sink.connect()
            try:
                letters = await sink.dead_letters()
            finally:
                await sink.close()
            return [d for d in letters if d["keyspace"] == self.keyspace]

        return {kind: asyncio.run(read(kind, dsn)) for kind, dsn in zip(SINK_NAMES, self.dsns)}

    def delivered(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for table in TABLES:
            for sink, counts in self.change_logs(table).items():
                totals[sink] = totals.get(sink, 0) + sum(counts.values())
        return totals

    def states(self, table: TableDef) -> dict[str, dict]:
        return {sink: self.state(sink, table) for sink in SINK_NAMES}

    def state(self, sink: str, table: TableDef, when: int | None = None) -> dict:
        """One sink's current state of ``table`` (its ``_as_of`` now), canonical."""
        when = int(time.time()) if when is None else when
        if sink == "clickhouse":
            return clickhouse_state(self.ch, table, when)
        return asyncio.run(postgres_state(self.pg if sink == "postgresql" else self.ts, table, when))

    def drop_stale_clickhouse(self, prefix: str, older_than: float = 3600) -> None:
        """Drop the ClickHouse databases of earlier runs (``<prefix>_<10 hex digits>``) whose tables
        have not changed for ``older_than`` seconds (a run going on elsewhere keeps its own): those
        of a session killed before its teardown."""
        rows = self.client.execute(
            "SELECT database, max(toUInt32(metadata_modification_time)) FROM system.tables "
            "WHERE match(database, %(pattern)s) GROUP BY database",
            {"pattern": f"^{prefix}_[0-9a-f]{{10}}$"},
        )
        for database, modified in rows:
            if database != self.keyspace and modified < time.time() - older_than:
                self.client.execute(f"DROP DATABASE IF EXISTS `{database}`")


def wait_delivered(sinks: Sinks, want: int, pipelines: list[Pipeline], timeout: float) -> dict[str, int]:
    """Until every sink's change logs hold ``want`` rows (or more: the comparison says which)."""
    deadline = time.monotonic() + timeout
    while True:
        got = sinks.delivered()
        if all(n >= want for n in got.values()):
            return got
        for item in pipelines:
            if item.process is not None:
                item.check()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.node}:\n{p.log(2000)}" for p in pipelines)
            raise AssertionError(f"not delivered within {timeout:.0f} s: {got}, want {want} each\n{logs}")
        time.sleep(0.5)


def wait_caught_up(pipelines: list[Pipeline], timeout: float, quiet: float = 3.0) -> None:
    """Until every pipeline has applied everything it handed out to every sink (lag 0, every sink up)
    and nothing moved for ``quiet`` seconds (longer than a commit log sync period plus a poll): the
    sinks' states are final, not just their change logs."""
    deadline = time.monotonic() + timeout
    before = None
    while True:
        now = []
        for item in pipelines:
            item.check()
            m = item.metrics()
            now.append(
                (
                    m.get("cdcfast_replication_lag_bytes", 0),
                    m.get("cdcfast_sink_up", 0),
                    m.get("cdcfast_events_written_total", 0),
                )
            )
        sinks = [item.command.count("--sink") for item in pipelines]
        if before == now and all(lag == 0 and up == n for (lag, up, _), n in zip(now, sinks)):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"pipelines not caught up within {timeout:.0f} s: (lag bytes, sinks up, written) {now}"
            )
        before = now
        time.sleep(quiet)


def change_log_report(table: str, sink: str, got: Counter, want: Counter) -> str | None:
    """None if every client write is in the change log exactly once (and nothing else is)."""
    missing = [ts for ts in want if got.get(ts, 0) == 0]
    doubled = {ts: n for ts, n in got.items() if n > 1}
    unexpected = [ts for ts in got if ts not in want]
    if not (missing or doubled or unexpected):
        return None
    return (
        f"[{sink}] {table}_changes: {sum(got.values())} rows for {sum(want.values())} writes; "
        f"{len(missing)} writes missing (ts {sorted(missing)[:5]}), {len(doubled)} more than once "
        f"({dict(list(doubled.items())[:5])}), {len(unexpected)} rows of no client write (ts {sorted(unexpected)[:5]})"
    )


def compare_states(
    sinks: Sinks,
    table: TableDef,
    want: dict,
    optional: Callable[[tuple], bool] | None = None,
    ignored: Callable[[tuple], bool] | None = None,
) -> list[str]:
    """Each sink's state of ``table`` against ``want`` (Cassandra's ``SELECT *``, canonical). A row
    whose key is ``optional`` may be missing from a sink, but if it is there it must equal Cassandra's;
    rows whose key is ``ignored`` are not compared. A sink whose state cannot be read (no such table
    or column) is a failure naming it."""
    failures = []
    for sink in SINK_NAMES:
        try:
            got = sinks.state(sink, table)
        except Exception as exc:  # noqa: BLE001 - reported with the sink and table
            failures.append(f"[{sink}] {table.qualified_name}: state not readable: {type(exc).__name__}: {exc}")
            continue
        expected = want
        if sink == "clickhouse":
            expected = as_clickhouse_holds(table, want, sinks.features)
        if optional is not None:
            expected = {k: row for k, row in expected.items() if not optional(k) or k in got}
        if ignored is not None:
            expected = {k: row for k, row in expected.items() if not ignored(k)}
            got = {k: row for k, row in got.items() if not ignored(k)}
        if got != expected:
            failures.append(f"[{sink}] " + differences(table, got, expected))
    return failures


def cassandra_state(session: Any, table: TableDef, consistency: Any = None) -> dict:
    """What ``SELECT * FROM ks.t`` returns, in the canonical form of support.expected."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    statement = SimpleStatement(
        f'SELECT JSON * FROM "{table.keyspace}"."{table.name}"',
        consistency_level=consistency if consistency is not None else ConsistencyLevel.ONE,
        fetch_size=1000,
    )
    columns = {c.name: c for c in table.partition_key + table.clustering + list(table.columns.values())}
    rows = []
    for (document,) in session.execute(statement, timeout=120):
        row = json.loads(document)
        rows.append({name: from_cassandra_json(columns[name].type, v) for name, v in row.items() if name in columns})
    return canonical_rows(table, rows)


# --------------------------------------------------------------------------------------------
# cdc_raw


class CdcRawMonitor:
    """Samples the size of a ``cdc_raw`` folder (what Cassandra weighs against cdc_total_space)
    every ``interval`` seconds in a thread, and notes every segment that ever appears there."""

    def __init__(self, cdc_raw: Path, interval: float = 0.05) -> None:
        self.cdc_raw = cdc_raw
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.segments: dict[str, int] = {}  # segment file -> largest size seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CdcRawMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.cdc_raw):
                    with contextlib.suppress(FileNotFoundError):
                        size = entry.stat().st_size
                        total += size
                        if entry.name.endswith(".log"):
                            self.segments[entry.name] = max(size, self.segments.get(entry.name, 0))
            self.samples.append((time.monotonic(), total))
            self._stop.wait(self.interval)

    @property
    def peak(self) -> int:
        return max((size for _, size in self.samples), default=0)

    def longest_above(self, limit: int) -> float:
        """The longest stretch of seconds the folder held more than ``limit`` bytes."""
        longest, since = 0.0, None
        for at, size in self.samples:
            if size > limit:
                since = at if since is None else since
                longest = max(longest, at - since)
            else:
                since = None
        return longest


def rejections_logged(node_dir: Path) -> list[str]:
    """Cassandra's own log lines about refused CDC writes."""
    log = node_dir / "logs" / "system.log"
    if not log.exists():
        return []
    return [line for line in log.read_text(errors="replace").splitlines() if "Rejecting mutation" in line]
