"""``cdcfast demo``: the whole pipeline on a generated live workload, on servers it starts itself.

1. Servers: a private PostgreSQL (:mod:`cdcfast.demo.servers`) with a database for the PostgreSQL
   sink and, when the extension is installed, one for the TimescaleDB sink; a private ClickHouse
   when one is installed. ``--sink DSN`` uses running servers instead.
2. The pipeline, as a node would run it: ``cdcfast generate --rate`` writes commit log segments into
   a ``cdc_raw`` and advances their ``_cdc.idx`` every second; ``cdcfast supervise`` follows it,
   masking PII/PHI (``masking.yaml``) before anything reaches a sink.
3. Every second a line: events generated, and per sink events delivered, events/s and lag (from the
   supervisor's ``/metrics``). When the stream ends, the sinks catch up (every segment delivered and
   deleted), the supervisor stops, and a summary follows: change-log rows per table in each warehouse
   next to what was generated, a few rows of each, and the commands to query them.
4. The servers stop and the folder goes, also after Ctrl-C (the first Ctrl-C ends the stream early
   and goes on to the summary; a second one stops at once). ``--keep`` leaves the servers running,
   with a ``stop.sh`` that stops them and removes the folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

import cdcfast
from cdcfast.commitlog.schema import Schema, TableDef, load_schema
from cdcfast.config import redact_dsn
from cdcfast.demo.servers import (
    ClickHouseServer,
    DemoError,
    PostgresServer,
    clickhouse_client,
    find_clickhouse,
    pg_execute,
)
from cdcfast.sinks import sink_kind

HERE = Path(__file__).resolve().parent
DEFAULT_SCHEMA = HERE / "schema.json"
DEFAULT_MASKING = HERE / "masking.yaml"
PG_DATABASE = "demo"
TS_DATABASE = "demo_ts"
SHOWCASE = "shop.users"  # the table whose rows the summary shows, when the schema has it
SEGMENT_SIZE = "1MiB"  # small segments: several per run, each deleted once every sink has it
SYNC_MS = 1000
CATCH_UP_TIMEOUT = 120.0
START_TIMEOUT = 180.0  # seconds for cdcfast supervise to have every writer ready
SHOWN_WIDTH = 30  # characters of a value shown in a row
SHOWCASE_COLUMNS = {"shop.users": ["user_id", "email", "full_name", "loyalty_tier", "tags"]}
SHOWCASE_FILTER = {"shop.users": "email IS NOT NULL"}  # rows that show masking
UNKNOWN_TABLE, UNKNOWN_DATABASE = 60, 81  # ClickHouse error codes
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
READABLE = ("postgresql", "timescaledb", "clickhouse")  # sinks whose rows the summary reads back


@dataclass
class DemoSettings:
    seconds: float = 30.0
    rate: float = 500.0
    schema: str | None = None  # default: the demo schema shipped in the package
    masking_rules: str | None = None  # default: the demo rules with the demo schema, none with another
    sinks: list[str] = field(default_factory=list)  # running servers instead of private ones
    keep: bool = False


@dataclass
class Sink:
    name: str  # as the supervisor names it (its kind, then kind-2, ...)
    kind: str  # postgresql, timescaledb, clickhouse
    dsn: str


@dataclass
class _Interrupt:
    """SIGINT, SIGTERM, SIGHUP: the first Ctrl-C during the stream ends it early; otherwise stop."""

    streaming: bool = False
    stop_stream: bool = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.streaming and not self.stop_stream and signum == signal.SIGINT:
            self.stop_stream = True
            return
        for other in HANDLED_SIGNALS:  # stopping: more Ctrl-Cs must not cut the cleanup short
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt


def sink_names(dsns: list[str]) -> list[Sink]:
    """The sinks as ``cdcfast supervise --sink ...`` names them."""
    out, seen = [], dict[str, int]()
    for dsn in dsns:
        kind = sink_kind(dsn)
        seen[kind] = seen.get(kind, 0) + 1
        out.append(Sink(kind if seen[kind] == 1 else f"{kind}-{seen[kind]}", kind, dsn))
    return out


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment for the generator and the supervisor, able to import this cdcfast."""
    env = dict(os.environ)
    root = str(Path(cdcfast.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _masking_secrets() -> dict[str, str]:
    """A random salt and key for this run, unless the environment has them."""
    out = {}
    for name in ("CDCFAST_PII_SALT", "CDCFAST_PHI_KEY"):
        if name not in os.environ and f"{name}_FILE" not in os.environ:
            out[name] = secrets.token_hex(32)
    return out


def parse_metrics(text: str) -> tuple[dict[str, int], dict[str, float]]:
    """(events written per sink, replication lag in seconds per sink) from a /metrics page."""
    written: dict[str, int] = {}
    lag: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"(cdcfast_events_written_total|cdcfast_replication_lag_seconds)\{([^}]*)\}\s+(\S+)", line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        sink, value = labels.get("sink", ""), float(match.group(3))
        if match.group(1) == "cdcfast_events_written_total":
            written[sink] = written.get(sink, 0) + int(value)
        else:
            lag[sink] = max(lag.get(sink, 0.0), value)
    return written, lag


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_show(k)}: {_show(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return str(value.isoformat(sep=" ", timespec="seconds") if hasattr(value, "hour") else value.isoformat())
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _cut(text: str, width: int = SHOWN_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def render_rows(columns: list[str], rows: list[tuple[Any, ...]], indent: str = "    ") -> list[str]:
    """An aligned text table of ``rows``."""
    cells = [[_cut(_show(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [indent + "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += [indent + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return lines


class Demo:
    def __init__(self, settings: DemoSettings, out: IO[str]) -> None:
        self.settings = settings
        self.out = out
        self.schema_path = Path(settings.schema) if settings.schema else DEFAULT_SCHEMA
        self.masking = settings.masking_rules or (str(DEFAULT_MASKING) if settings.schema is None else None)
        self.folder = Path(tempfile.mkdtemp(prefix="cdcfast-demo-"))
        os.chmod(self.folder, 0o711)  # the servers' users must be able to enter their own folders
        self.cdc_raw = self.folder / "cdc_raw"
        self.state = self.folder / "state"
        self.node = f"demo-{self.folder.name.removeprefix('cdcfast-demo-')}"
        self.postgres: PostgresServer | None = None
        self.clickhouse: ClickHouseServer | None = None
        self.sinks: list[Sink] = []
        self.generator: subprocess.Popen[bytes] | None = None
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.interrupt = _Interrupt()
        self.started = time.monotonic()
        self.metrics_url: str | None = None

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- servers ----------------------------------------------------------------------------------------

    def start_servers(self) -> None:
        if self.settings.sinks:
            self.sinks = sink_names(self.settings.sinks)
            for sink in self.sinks:
                self.say(f"  {sink.name + ':':<13}{redact_dsn(sink.dsn)} (given with --sink)")
            return
        command = find_clickhouse()
        if command is not None:  # it boots while PostgreSQL is set up
            self.clickhouse = ClickHouseServer(self.folder / "clickhouse", command, keep=self.settings.keep)
            try:
                self.clickhouse.launch()
            except DemoError as exc:
                self.say(f"  clickhouse:  skipped: {exc}")
                self.clickhouse = None
        self.postgres = PostgresServer(self.folder / "postgres", keep=self.settings.keep)
        self.postgres.start((PG_DATABASE,), TS_DATABASE)
        pg = self.postgres
        self.say(
            f"  postgresql:  {pg.version} ({pg.origin}: {pg.bin_dir}) on 127.0.0.1:{pg.port}, database {PG_DATABASE}"
        )
        self.sinks.append(Sink("postgresql", "postgresql", pg.dsn(PG_DATABASE)))
        if pg.timescaledb:
            version = pg_execute(
                pg.dsn(TS_DATABASE), "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            )
            self.say(f"  timescaledb: TimescaleDB {version[0][0][0]} in the same server, database {TS_DATABASE}")
            self.sinks.append(
                Sink("timescaledb", "timescaledb", "timescaledb://" + pg.dsn(TS_DATABASE).split("://")[1])
            )
        else:
            self.say(f"  timescaledb: skipped: {pg.timescaledb_note}")
        if self.clickhouse is None:
            if command is None:
                self.say("  clickhouse:  skipped: no clickhouse-server on this machine")
        else:
            try:
                self.clickhouse.wait()
            except DemoError as exc:
                first = str(exc).splitlines()[0]
                self.say(f"  clickhouse:  skipped: {first}")
                self.clickhouse.stop()
                self.clickhouse = None
            else:
                ch = self.clickhouse
                self.say(f"  clickhouse:  {ch.version} ({ch.command[0]}) on 127.0.0.1:{ch.port}")
                self.sinks.append(Sink("clickhouse", "clickhouse", ch.dsn()))

    def stop_servers(self) -> None:
        for server in (self.clickhouse, self.postgres):
            if server is not None:
                server.stop()

    # -- the pipeline -----------------------------------------------------------------------------------

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cdcfast.cli", *args]

    def _spawn(self, command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        from cdcfast.demo.servers import _die_with_parent

        with open(log, "wb") as handle:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
                start_new_session=True,  # a Ctrl-C reaches the demo only; it stops them in order
                preexec_fn=_die_with_parent,
            )

    def start_pipeline(self) -> None:
        env = _child_env(_masking_secrets() if self.masking else {})
        command = self._python(
            "supervise",
            "--cdc-raw",
            str(self.cdc_raw),
            "--schema",
            str(self.schema_path),
            "--state-dir",
            str(self.state),
            "--node",
            self.node,
            "--metrics-addr",
            "127.0.0.1:0",
            "--poll-interval",
            "0.2",
        )
        if self.masking:
            command += ["--masking-rules", self.masking]
        for sink in self.sinks:
            command += ["--sink", sink.dsn]
        self.cdc_raw.mkdir()
        self.supervisor = self._spawn(command, self.folder / "supervise.log", env)
        started = time.monotonic()
        shown = [redact_dsn(part) if "://" in part else part for part in command[3:]]
        self.say(f"  running:     cdcfast {shlex.join(shown)}")
        self.say("  starting cdcfast supervise: parsers, one writer per sink (tables created in each warehouse)")
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.state / "status.json").exists():  # written once every writer is ready
            self._check_supervisor()
            if time.monotonic() > deadline:
                raise DemoError(f"cdcfast supervise did not start within {START_TIMEOUT:.0f} s (log: supervise.log)")
            time.sleep(0.1)
        self.say(f"  supervise ready in {time.monotonic() - started:.1f} s; the stream starts")
        events = max(1, round(self.settings.rate * self.settings.seconds))
        self.generator = self._spawn(
            self._python(
                "generate",
                "--schema",
                str(self.schema_path),
                "--out",
                str(self.cdc_raw),
                "--rate",
                str(self.settings.rate),
                "--events",
                str(events),
                "--sync-ms",
                str(SYNC_MS),
                "--segment-size",
                SEGMENT_SIZE,
            ),
            self.folder / "generate.log",
            env,
        )

    def _generated(self) -> int:
        try:
            text = (self.folder / "generate.log").read_text(errors="replace")
        except OSError:
            return 0
        found = re.findall(r"MB, ([\d,]+) events,", text)
        return int(found[-1].replace(",", "")) if found else 0

    def _streaming(self) -> bool:
        """Whether the generator has its templates and writes."""
        try:
            return "events" in (self.folder / "generate.log").read_text(errors="replace")
        except OSError:
            return False

    def _metrics(self) -> tuple[dict[str, int], dict[str, float]]:
        if self.metrics_url is None:
            address = self.state / "run" / "metrics.addr"
            if not address.exists():
                return {}, {}
            self.metrics_url = address.read_text().strip()
        try:
            with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=2) as response:
                return parse_metrics(response.read().decode())
        except OSError:
            return {}, {}

    def _down(self) -> dict[str, str]:
        try:
            document = orjson.loads((self.state / "status.json").read_bytes())
            return {name: s.get("last_error") or s["down"] for name, s in document["sinks"].items() if s.get("down")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def _check_supervisor(self) -> None:
        assert self.supervisor is not None
        if self.supervisor.poll() is not None:
            tail = "\n".join((self.folder / "supervise.log").read_text(errors="replace").splitlines()[-20:])
            raise DemoError(f"cdcfast supervise exited with code {self.supervisor.returncode}:\n{tail}")

    def follow(self) -> tuple[int, float]:
        """Progress lines until the stream ends and every sink has caught up: (events, stream seconds)."""
        assert self.generator is not None
        while not self._streaming() and self.generator.poll() is None:
            self._check_supervisor()
            time.sleep(0.1)
        began = time.monotonic()
        stream_seconds = 0.0
        self.interrupt.streaming = True
        last_time, last_written = began, dict[str, int]()
        last_generated = 0
        deadline: float | None = None
        next_line = began + 1.0
        while True:
            time.sleep(max(0.0, next_line - time.monotonic()))
            next_line += 1.0
            self._check_supervisor()
            if self.interrupt.stop_stream and self.generator.poll() is None:
                self.say("  Ctrl-C: ending the stream (Ctrl-C again stops the demo at once)")
                self.generator.send_signal(signal.SIGINT)  # closes the segment, COMPLETED
                self.interrupt.stop_stream = False
                self.interrupt.streaming = False
            now = time.monotonic()
            generated = self._generated()
            written, lag = self._metrics()
            down = self._down()
            elapsed = max(now - last_time, 1e-6)
            parts = [
                f"  {now - began:4.0f}s  generated {generated:>7,} {(generated - last_generated) / elapsed:>6,.0f}/s"
            ]
            for sink in self.sinks:
                count = written.get(sink.name, 0)
                rate = (count - last_written.get(sink.name, 0)) / elapsed
                state = (
                    "DOWN" if sink.name in down else (f"lag {lag[sink.name]:4.1f}s" if sink.name in lag else "lag    -")
                )
                parts.append(f"{sink.name} {count:>7,} {rate:>6,.0f}/s {state}")
            self.say(" | ".join(parts))
            last_time, last_written, last_generated = now, written, generated
            if self.generator.poll() is None:
                continue
            if deadline is None:
                if self.generator.returncode not in (0, -signal.SIGINT):
                    tail = (self.folder / "generate.log").read_text(errors="replace")[-2000:]
                    raise DemoError(f"cdcfast generate exited with code {self.generator.returncode}:\n{tail}")
                stream_seconds = now - began
                self.interrupt.streaming = False
                deadline = now + CATCH_UP_TIMEOUT
                self.say(f"  stream done: {generated:,} events in {stream_seconds:.1f} s; the sinks catch up")
            pending = [p for p in self.cdc_raw.glob("*_cdc.idx")]
            if not pending and all(written.get(s.name, 0) >= generated for s in self.sinks):
                return generated, stream_seconds
            elif now > deadline:
                self.say(
                    f"  not every sink caught up within {CATCH_UP_TIMEOUT:.0f} s "
                    f"({len(pending)} segment(s) left; down: {', '.join(down) or 'none'}); summary of what arrived"
                )
                return generated, stream_seconds

    def stop_pipeline(self) -> None:
        for process, first in ((self.generator, signal.SIGINT), (self.supervisor, signal.SIGTERM)):
            if process is None or process.poll() is not None:
                continue
            process.send_signal(first)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    # -- the summary --------------------------------------------------------------------------------------

    def _manifest(self) -> dict[str, Any]:
        try:
            document: dict[str, Any] = orjson.loads((self.cdc_raw / "generated.json").read_bytes())
            return document
        except (OSError, ValueError):
            return {}

    def _showcase(self, schema: Schema, generated: dict[str, int]) -> tuple[TableDef, list[str], dict[str, str]]:
        """The table to show rows of, its columns (keys, masked ones first) and their masking labels."""
        tables = {t.qualified_name: t for t in schema.cdc_tables()}
        name = SHOWCASE if SHOWCASE in tables else max(tables, key=lambda n: generated.get(n, 0))
        table = tables[name]
        labels: dict[str, str] = {}
        if self.masking:
            from cdcfast.transform.masking import MaskingRules

            for rule in MaskingRules.load(self.masking, schema).describe():
                if rule.table == name:
                    labels[rule.target] = f"{rule.classification}: {rule.strategy}"
        if name in SHOWCASE_COLUMNS:
            return table, SHOWCASE_COLUMNS[name], labels
        keys = [c.name for c in table.partition_key + table.clustering]
        masked = [c for c in table.columns if c in labels]
        others = [c for c in table.columns if c not in labels]
        return table, keys + masked[:2] + others[: 4 - min(len(masked), 2)], labels

    def _queries(self, table: TableDef, columns: list[str], kind: str) -> tuple[str, str]:
        """(state query, change-log query) for a sink kind: the same text that is shown and printed."""
        where = f" WHERE source = '{self.node}'" if self.settings.sinks else ""
        final = " FINAL" if kind == "clickhouse" else ""
        quoted = ", ".join(columns)
        shown = SHOWCASE_FILTER.get(table.qualified_name)
        order = ", ".join(c.name for c in table.partition_key + table.clustering)  # the same rows each time
        state = (
            f"SELECT {quoted} FROM {table.qualified_name}{' WHERE ' + shown if shown else ''} ORDER BY {order} LIMIT 3"
        )
        changes = (
            f"SELECT op, change_time, key, cells FROM {table.qualified_name}_changes{final}{where} "
            "ORDER BY ts DESC LIMIT 3"
        )
        return state, changes

    def _read_postgres(
        self, sink: Sink, tables: list[str], queries: tuple[str, str]
    ) -> tuple[dict[str, int], list[tuple[str, list[str], list[tuple[Any, ...]]]]]:
        import asyncio

        import asyncpg

        dsn = sink.dsn if sink.kind != "timescaledb" else "postgresql://" + sink.dsn.split("://", 1)[1]

        async def read() -> tuple[dict[str, int], list[tuple[str, list[str], list[tuple[Any, ...]]]]]:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                counts = {}
                for name in tables:
                    ks, table = name.split(".", 1)
                    try:
                        counts[name] = int(
                            await conn.fetchval(
                                f'SELECT count(*) FROM "{ks}"."{table}_changes" WHERE source = $1', self.node
                            )
                        )
                    except asyncpg.UndefinedTableError:
                        counts[name] = 0
                shown = []
                for query in queries:
                    records = await conn.fetch(query)
                    names = list(records[0].keys()) if records else []
                    shown.append((query, names, [tuple(r) for r in records]))
                return counts, shown
            finally:
                await conn.close()

        return asyncio.run(read())

    def _read_clickhouse(
        self, sink: Sink, tables: list[str], queries: tuple[str, str]
    ) -> tuple[dict[str, int], list[tuple[str, list[str], list[tuple[Any, ...]]]]]:
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(sink.dsn)
        client: Any = clickhouse_client(
            parts.hostname or "127.0.0.1",
            parts.port or 9000,
            unquote(parts.username or "default"),
            unquote(parts.password or ""),
            parts.path.strip("/") or "default",
        )
        try:
            counts = {}
            for name in tables:
                ks, table = name.split(".", 1)
                try:
                    rows = client.execute(
                        f"SELECT count() FROM `{ks}`.`{table}_changes` FINAL WHERE source = %(node)s",
                        {"node": self.node},
                    )
                    counts[name] = int(rows[0][0])
                except Exception as exc:
                    if getattr(exc, "code", None) not in (UNKNOWN_TABLE, UNKNOWN_DATABASE):
                        raise
                    counts[name] = 0  # no event of the table arrived
            shown = []
            for query in queries:
                rows, types = client.execute(query, with_column_types=True)
                shown.append((query, [n for n, _ in types], [tuple(r) for r in rows]))
            return counts, shown
        finally:
            client.disconnect()

    def _command(self, sink: Sink, query: str) -> str:
        if sink.kind == "clickhouse":
            from urllib.parse import unquote, urlsplit

            parts = urlsplit(sink.dsn)
            command = ["clickhouse-client", "--host", parts.hostname or "127.0.0.1", "--port", str(parts.port or 9000)]
            if parts.username and parts.username != "default":
                command += ["--user", unquote(parts.username)]
            if parts.password:
                command += ["--password", "***"]
            database = parts.path.strip("/")
            if database and database != "default":
                command += ["--database", database]
            return shlex.join([*command, "-q", query])
        dsn = "postgresql://" + sink.dsn.split("://", 1)[1]
        psql = self.postgres.psql() if self.postgres is not None else "psql"
        return shlex.join([psql, redact_dsn(dsn), "-c", query])

    def summary(self, generated_total: int, stream_seconds: float) -> bool:
        """Print the summary; whether every sink has every generated event."""
        schema = load_schema(self.schema_path)
        manifest = self._manifest()
        generated = {name: int(t["events"]) for name, t in manifest.get("tables", {}).items()}
        tables = sorted(t.qualified_name for t in schema.cdc_tables())
        table, columns, labels = self._showcase(schema, generated)
        counts: dict[str, dict[str, int]] = {}
        samples: dict[str, list[tuple[str, list[str], list[tuple[Any, ...]]]]] = {}
        sinks = [s for s in self.sinks if s.kind in READABLE]
        for sink in sinks:
            queries = self._queries(table, columns, sink.kind)
            try:
                if sink.kind == "clickhouse":
                    counts[sink.name], samples[sink.name] = self._read_clickhouse(sink, tables, queries)
                else:
                    counts[sink.name], samples[sink.name] = self._read_postgres(sink, tables, queries)
            except Exception as exc:  # report and go on with the other sinks
                self.say(f"  {sink.name}: cannot read back: {exc}")
        total = sum(generated.values()) or generated_total
        rate = total / stream_seconds if stream_seconds else 0.0
        exact = all(counts.get(s.name, {}).get(t, -1) == generated.get(t, 0) for s in sinks for t in tables)
        self.say()
        verdict = "every one of them in every sink, exactly once" if exact else "NOT every sink has every event"
        self.say(f"Summary: {total:,} change events generated in {stream_seconds:.1f} s ({rate:,.0f}/s); {verdict}")
        operations = manifest.get("operations", {})
        if operations:
            mix = ", ".join(f"{op} {count:,}" for op, count in sorted(operations.items(), key=lambda kv: -kv[1]))
            self.say(f"  mutations written: {mix} (counters take increments as updates; ttl: INSERT ... USING TTL)")
        self.say("  change-log rows per table in each warehouse:")
        header = ["table", "generated", *(s.name for s in sinks)]
        rows: list[tuple[Any, ...]] = [
            (name, f"{generated.get(name, 0):,}", *(f"{counts.get(s.name, {}).get(name, 0):,}" for s in sinks))
            for name in tables
        ]
        rows.append(("total", f"{total:,}", *(f"{sum(counts.get(s.name, {}).values()):,}" for s in sinks)))
        for line in render_rows(header, rows):
            self.say(line)
        if labels:
            shown = ", ".join(f"{column} ({label})" for column, label in labels.items())
            self.say(f"  masked before leaving the parser, in {table.qualified_name}: {shown}")
        for sink in sinks:
            for query, names, records in samples.get(sink.name, []):
                self.say()
                self.say(f"{sink.name}: {query}")
                for line in render_rows(names, records):
                    self.say(line)
        self.say()
        if self.settings.keep and not self.settings.sinks:
            self.say("Query them (the servers keep running):")
        elif self.settings.sinks:
            self.say("Query them:")
        else:
            self.say("Query them like this (the servers stop now; `cdcfast demo --keep` leaves them running):")
        for sink in sinks:
            state_query, _ = self._queries(table, columns, sink.kind)
            self.say(f"  {self._command(sink, state_query)}")
        self.say(
            "  tables per CDC table ks.t: ks.t (current state, as SELECT * in Cassandra), ks.t_changes (one row per "
            "change); in PostgreSQL also ks.t_live and ks.t_as_of(time), TTL-expired values hidden"
        )
        return exact

    # -- keep ---------------------------------------------------------------------------------------------

    def write_stop_script(self) -> Path:
        lines = ["#!/bin/sh", "# Stops the servers `cdcfast demo --keep` left running, then removes their folder."]
        pids = []
        for server, first in ((self.postgres, "INT"), (self.clickhouse, "TERM")):  # PostgreSQL: fast shutdown
            if server is not None and server.process is not None:
                lines.append(f"kill -{first} {server.process.pid} 2>/dev/null")
                pids.append(str(server.process.pid))
        if pids:
            lines += [
                f"for pid in {' '.join(pids)}; do",
                "    n=0",
                '    while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 300 ]; do sleep 0.1; n=$((n + 1)); done',
                '    kill -KILL "$pid" 2>/dev/null',
                "done",
            ]
        lines += [f"rm -rf {shlex.quote(str(self.folder))}", f"echo {shlex.quote(f'stopped; {self.folder} removed')}"]
        script = self.folder / "stop.sh"
        script.write_text("\n".join(lines) + "\n")
        script.chmod(0o755)
        return script

    def remove_folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def _signals(handler: Any) -> Iterator[None]:
    previous = {s: signal.signal(s, handler) for s in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def run_demo(settings: DemoSettings, out: IO[str] = sys.stdout) -> int:
    """Run the demo; 0 when every sink got every event, 1 otherwise, 130 after Ctrl-C."""
    if settings.seconds <= 0 or settings.rate <= 0:
        raise DemoError("--seconds and --rate must be positive")
    schema = load_schema(Path(settings.schema) if settings.schema else DEFAULT_SCHEMA)
    if not schema.cdc_tables():
        raise DemoError(f"{schema.source}: no table has cdc = true")
    demo = Demo(settings, out)
    cdc = ", ".join(sorted(t.qualified_name for t in schema.cdc_tables()))
    demo.say(f"cdcfast demo: Cassandra CDC -> warehouses, live, in {demo.folder}")
    demo.say(f"  schema:      {demo.schema_path} (CDC tables: {cdc})")
    demo.say(f"  masking:     {demo.masking or 'none'}")
    code = 0
    kept = False
    with _signals(demo.interrupt):
        try:
            demo.start_servers()
            if not demo.sinks:
                raise DemoError("no sink to write to")
            demo.say(
                f"  stream:      {settings.rate:,.0f} events/s for {settings.seconds:g} s, commit log segments of "
                f"{SEGMENT_SIZE} synced every {SYNC_MS / 1000:g} s, followed by cdcfast supervise"
            )
            demo.say()
            demo.start_pipeline()
            events, seconds = demo.follow()
            demo.stop_pipeline()
            code = 0 if demo.summary(events, seconds) else 1
            if settings.keep and (demo.postgres is not None or demo.clickhouse is not None):
                script = demo.write_stop_script()
                kept = True
                demo.say(f"Stop the servers and remove {demo.folder}: sh {script}")
        except KeyboardInterrupt:
            demo.say("\ncdcfast demo: interrupted; stopping")
            code = 130
        finally:
            for signum in HANDLED_SIGNALS:  # cleaning up: bounded by the stop timeouts
                signal.signal(signum, signal.SIG_IGN)
            demo.stop_pipeline()
            if not kept:
                demo.stop_servers()
                demo.remove_folder()
    return code
