"""``cdcfast bench pipeline`` (into the null sink) and ``cdcfast bench e2e`` (into given sinks).

One run:

1. **Input**: a folder of segments (``--segments``, e.g. ``cdcfast generate``'s output), or segments
   generated for the run (``--size`` / ``--events``) into the work folder.
2. **Baseline, same run**: the single-process path, the parser workers' own code
   (:class:`~cdcfast.supervisor.parser.Parser`: decode, change events, CDC filter, masking if
   configured) over every segment in this process, no rings and no writers. Beside it, what the
   rings add per event, measured the same way: msgpack encoding of the batches (once per parser)
   and decoding them (once per writer). Counting the events also gives each section's events.
3. **The real pipeline**: ``cdcfast supervise`` in its own session, with a configuration written
   for the run (a fresh ``cdc_raw``, state dir and node name, ``DEBUG`` logs). Once its processes
   are up and idle, the input is released into the ``cdc_raw`` (:mod:`~cdcfast.benchmarks.replay`):
   all at once, every segment ``COMPLETED`` (throughput; the default), or with ``--rate``, one sync
   every ``--sync-ms`` as a node writing that many events per second would (latency at a load).
4. **When rows are visible**: each writer logs ``batch applied`` (sink, segment, position, events,
   a timestamp) right after the batch and its checkpoint are committed in its sink. The latency of
   a release is the time from its idx advance to the first checkpoint at or past it, per sink;
   percentiles are weighted by the events each release made durable. The run ends when every sink's
   checkpoint covers the last release; then the supervisor is stopped with SIGTERM.
5. **CPU**: per process (supervisor, parser-N, writer-<sink>), from ``/proc/<pid>/stat`` through the
   pid files in ``<state_dir>/run/``, counted from the moment the pipeline was up and idle to the
   moment the last checkpoint landed; the machine's busy CPU over the same window says how much
   went to others (load).
6. **Checks**: events per sink from the writers' logs and from the sink itself (the null sink's
   checkpoint file; change-log rows of this run's node in PostgreSQL, TimescaleDB, ClickHouse)
   against the events counted in the input (and the generator's manifest, when there is one).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cdcfast.benchmarks.procstat import ProcessSampler, cpu_model, machine_cpu, memory_bytes, tree_cpu
from cdcfast.benchmarks.replay import InputSegment, Release, Replay, input_segments
from cdcfast.benchmarks.watch import CheckpointWatch, Landing, LogWatch
from cdcfast.errors import ConfigError

RESULTS_FORMAT = 1
READY_TIMEOUT = 180.0  # seconds for the pipeline to start and settle
STOP_TIMEOUT = 120.0
PROGRESS_EVERY = 5.0
SAMPLE_EVERY = 0.5


@dataclass
class BenchSettings:
    kind: str  # "pipeline" (the null sink) or "e2e" (the given sinks)
    schema: str
    sinks: list[str]  # DSNs
    segments: Path | None = None  # an input folder; else generated
    size: int | None = None  # logical bytes to generate
    events: int | None = None  # change events to generate
    compression: str = "none"
    version: int = 8
    segment_size: int = 32 * 1024 * 1024
    seed: int = 0
    rate: float | None = None  # events/s released; None: everything at once
    sync_ms: int = 2000  # one idx advance per sync period (with --rate)
    parsers: int = 2
    batch_size: int = 5000
    poll_interval: float = 0.5
    work: Path | None = None  # where the run's folders go (default: a temporary folder)
    keep: bool = False  # keep the work folder
    timeout: float = 3600.0  # seconds for the pipeline to deliver everything
    count_rows: bool = True  # e2e: count this run's change-log rows in each sink
    watch_interval: float = 0.1  # seconds between polls of each sink's checkpoint
    servers: dict[str, int] = field(default_factory=dict)  # database servers' pids, for their CPU seconds
    progress: IO[str] | None = field(default_factory=lambda: sys.stderr)


# -- the input ------------------------------------------------------------------------------------------


def prepare_input(settings: BenchSettings, work: Path) -> tuple[Path, dict[str, Any] | None, bool]:
    """(segments folder, generator manifest or None, generated in this run)."""
    if settings.segments is not None:
        folder = Path(settings.segments)
        manifest_path = folder / "generated.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
        return folder, manifest, False
    from cdcfast.generate.run import GenerateSettings, generate
    from cdcfast.generate.workload import WorkloadSpec

    folder = work / "input"
    if folder.exists():
        shutil.rmtree(folder)
    manifest = generate(
        GenerateSettings(
            schema=settings.schema,
            out=folder,
            spec=WorkloadSpec(seed=settings.seed),
            size=settings.size,
            events=settings.events if settings.size is None else None,
            version=settings.version,
            compression=settings.compression,
            segment_size=settings.segment_size,
            sync_ms=settings.sync_ms,
            progress=settings.progress is not None,
        ),
        stderr=settings.progress,
    )
    return folder, manifest, True


def pipeline_config(settings: BenchSettings, cdc_raw: Path, state: Path, node: str) -> dict[str, Any]:
    from cdcfast.sinks import sink_kind

    sinks, names = [], {}  # type: ignore[var-annotated]
    for dsn in settings.sinks:
        kind = sink_kind(dsn)
        names[kind] = names.get(kind, 0) + 1
        name = kind if names[kind] == 1 else f"{kind}-{names[kind]}"
        if kind == "timescaledb" and dsn.startswith("timescaledb://"):
            dsn = "postgresql://" + dsn[len("timescaledb://") :]
        sinks.append({"kind": kind, "name": name, "dsn": dsn})
    schema = settings.schema if settings.schema.startswith("cassandra:") else str(Path(settings.schema).resolve())
    return {
        "sources": [{"node": node, "cdc_raw": str(cdc_raw), "schema": schema, "poll_interval": settings.poll_interval}],
        "sinks": sinks,
        "state_dir": str(state),
        "tuning": {"parser_workers": settings.parsers, "batch_size": settings.batch_size},
        "metrics_addr": "127.0.0.1:0",
    }


# -- the single-process baseline ------------------------------------------------------------------------


def single_process(config: Any, segments: list[InputSegment], batch_size: int) -> dict[str, Any]:
    """Decode + change events in this process (the parsers' code, no rings), segment by segment;
    counts each section's events on the way. Serialization for the rings is timed on its own. The
    cyclic collector is off, as in the parsers and writers (cdcfast.supervisor.collector): on, it
    made the writers' decoding look four times as costly as it is."""
    from cdcfast.supervisor.collector import Collector

    collector = Collector()
    try:
        return _single_process(config, segments, batch_size)
    finally:
        collector.resume()


def _single_process(config: Any, segments: list[InputSegment], batch_size: int) -> dict[str, Any]:
    from cdcfast.supervisor.messages import BATCH_DECODER, BATCH_ENCODER, EventBatch, WorkItem
    from cdcfast.supervisor.parser import Parser, split_at_mutations

    parser = Parser(config, 0)
    wall = cpu = encode_cpu = decode_cpu = 0.0
    events = mutation_bytes = 0
    for seq, segment in enumerate(segments):
        item = WorkItem(seq, str(segment.path), segment.version, segment.segment_id, 0, None)
        w0, c0 = time.perf_counter(), time.process_time()
        decoded = parser.events(item)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        events += len(decoded)
        mutation_bytes += segment.logical_bytes
        segment.count_events([e.position for e in decoded])
        parts = split_at_mutations(decoded, batch_size)
        c1 = time.process_time()
        messages = [
            BATCH_ENCODER.encode(EventBatch(seq, n, False, segment.segment_id, 0, part)) for n, part in enumerate(parts)
        ]
        c2 = time.process_time()
        for message in messages:
            BATCH_DECODER.decode(message)
        decode_cpu += time.process_time() - c2
        encode_cpu += c2 - c1
        del decoded, parts, messages
    logical = sum(s.logical_bytes for s in segments)
    return {
        "what": "single process: decode + change events (the parser workers' code), no rings, no writers",
        "events": events,
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "events_per_s": round(events / wall) if wall else None,
        "events_per_cpu_s": round(events / cpu) if cpu else None,
        "mb_per_s": round(logical / wall / 1e6, 1) if wall else None,
        "ring_serialization": {
            "what": "msgpack per event, as the rings carry it: encoded once per parser, decoded once per writer",
            "encode_cpu_seconds": round(encode_cpu, 3),
            "decode_cpu_seconds": round(decode_cpu, 3),
            "decode_events_per_cpu_s": round(events / decode_cpu) if decode_cpu else None,
        },
    }


# -- watching the pipeline ------------------------------------------------------------------------------


def covered_events(releases: list[Release], checkpoint: tuple[int, int]) -> int:
    """Events of the releases a checkpoint covers."""
    return sum(r.events for r in releases if r.key <= checkpoint)


def weighted_percentiles(samples: list[tuple[float, int]], points: tuple[float, ...]) -> list[float | None]:
    """Percentiles of values each standing for ``weight`` events (nearest rank)."""
    samples = sorted((v, w) for v, w in samples if w > 0)
    total = sum(w for _, w in samples)
    out: list[float | None] = []
    for p in points:
        if not total:
            out.append(None)
            continue
        rank, seen = p / 100 * total, 0
        value = samples[-1][0]
        for v, w in samples:
            seen += w
            if seen >= rank:
                value = v
                break
        out.append(value)
    return out


def latencies(releases: list[Release], landings: list[Landing]) -> list[tuple[float, int]]:
    """(seconds from each release (or section) to the first checkpoint covering it, its events);
    those not covered yet are left out."""
    out, i = [], 0
    ordered = sorted(releases, key=lambda r: r.key)
    for landing in sorted(landings, key=lambda x: (x.at, x.key)):
        while i < len(ordered) and ordered[i].key <= landing.key:
            out.append((max(0.0, landing.at - ordered[i].at), ordered[i].events))
            i += 1
    return out


def latency_summary(samples: list[tuple[float, int]]) -> dict[str, Any]:
    p50, p90, p99 = weighted_percentiles(samples, (50, 90, 99))
    total = sum(w for _, w in samples)
    mean = sum(v * w for v, w in samples) / total if total else None
    return {
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p90_ms": None if p90 is None else round(p90 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "max_ms": round(max(v for v, _ in samples) * 1000, 1) if samples else None,
        "mean_ms": None if mean is None else round(mean * 1000, 1),
        "sections": len(samples),
    }


# -- checks against the sinks themselves ----------------------------------------------------------------


def sink_side(kind: str, dsn: str, name: str, node: str, schema: Any, count_rows: bool) -> dict[str, Any]:
    """The sink's own checkpoint for ``node`` and the change-log rows it holds from ``node``."""
    import asyncio

    from cdcfast.sinks import open_sink

    if kind == "null":
        from cdcfast.sinks.null import parse_null_dsn, read_checkpoints

        state = read_checkpoints(parse_null_dsn(dsn)[0]).get(node, {})
        return {key: state.get(key) for key in ("checkpoint", "events", "duplicates")}

    async def checkpoint() -> Any:
        sink = open_sink(kind, dsn, name)
        await sink.connect()
        try:
            return await sink.checkpoint(node)
        finally:
            await sink.close()

    out: dict[str, Any] = {}
    try:
        found = asyncio.run(checkpoint())
        out["checkpoint"] = list(found) if found else None
        if count_rows:
            out["events"] = change_rows(kind, dsn, node, schema)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run is reported, not fatal
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def change_rows(kind: str, dsn: str, node: str, schema: Any) -> int:
    """Change-log rows written from ``node``, over every CDC table (ClickHouse: with FINAL)."""
    import asyncio

    tables = schema.cdc_tables()
    if kind == "clickhouse":
        from clickhouse_driver import Client

        from cdcfast.sinks.clickhouse import qualified as ch_qualified

        client = Client.from_url(dsn)
        existing = {(db, t) for db, t in client.execute("SELECT database, name FROM system.tables")}
        total = 0
        for table in tables:
            if (table.keyspace, f"{table.name}_changes") in existing:
                name = ch_qualified(table.keyspace, f"{table.name}_changes")
                total += client.execute(f"SELECT count() FROM {name} FINAL WHERE source = %(s)s", {"s": node})[0][0]
        client.disconnect()
        return int(total)

    import asyncpg

    from cdcfast.sinks.postgres import qualified as pg_qualified

    async def count() -> int:
        conn = await asyncpg.connect("postgresql://" + dsn.split("://", 1)[1])
        try:
            total = 0
            for table in tables:
                name = pg_qualified(table.keyspace, f"{table.name}_changes")
                if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
                    total += await conn.fetchval(f"SELECT count(*) FROM {name} WHERE source = $1", node)
            return int(total)
        finally:
            await conn.close()

    return asyncio.run(count())


# -- the run --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": round(memory_bytes() / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _package_env() -> dict[str, str]:
    """The child runs this very cdcfast (installed or not)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Bench:
    def __init__(self, settings: BenchSettings) -> None:
        if settings.kind not in ("pipeline", "e2e"):
            raise ConfigError(f"bench kind {settings.kind!r}: pipeline or e2e")
        if not settings.sinks:
            raise ConfigError("bench e2e: give at least one --sink DSN")
        if settings.rate is not None and settings.rate <= 0:
            raise ConfigError("--rate: events per second must be positive")
        self.settings = settings
        self.out = settings.progress

    def say(self, text: str) -> None:
        if self.out is not None:
            self.out.write(f"cdcfast bench: {text}\n")
            self.out.flush()

    def run(self) -> dict[str, Any]:
        settings = self.settings
        work = Path(settings.work) if settings.work else Path(tempfile.mkdtemp(prefix="cdcfast-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            return self._run(work)
        finally:
            if not settings.keep:
                for name in ("cdc_raw", "state", "input", "pipeline.yaml"):
                    target = work / name
                    if name == "input" and settings.segments is not None:
                        continue
                    if target.is_dir():
                        shutil.rmtree(target, ignore_errors=True)
                    elif target.exists():
                        target.unlink()
                if not settings.work:
                    shutil.rmtree(work, ignore_errors=True)

    def _run(self, work: Path) -> dict[str, Any]:
        from cdcfast.commitlog import load_schema
        from cdcfast.config import load_config, redact_dsn
        from cdcfast.sinks import open_sink

        settings = self.settings
        started = time.time()
        load_before = os.getloadavg()
        folder, manifest, generated = prepare_input(settings, work)
        segments = input_segments(folder)
        cdc_raw, state = work / "cdc_raw", work / "state"
        for path in (cdc_raw, state):
            if path.exists():
                shutil.rmtree(path)
        cdc_raw.mkdir(parents=True)
        node = f"bench-{uuid.uuid4().hex[:8]}"
        config_path = work / "pipeline.yaml"
        config_path.write_text(json.dumps(pipeline_config(settings, cdc_raw, state, node), indent=1))
        config_path.chmod(0o600)
        config = load_config(config_path)
        schema = load_schema(config.sources[0].schema)
        for spec in config.sinks:  # the sinks' modules, imported now (the checks at the end use them too)
            open_sink(spec.kind, spec.dsn, spec.name)

        total_bytes = sum(s.logical_bytes for s in segments)
        self.say(f"baseline: single process over {len(segments)} segment(s), {total_bytes / 1e6:,.1f} MB")
        baseline = single_process(config, segments, settings.batch_size)
        self.say(f"baseline: {baseline['events']:,} events, {baseline['events_per_s']:,} events/s")
        pipeline, errors = self._pipeline(config, segments, state, cdc_raw, config_path)
        checks = {
            spec.name: sink_side(spec.kind, spec.dsn, spec.name, node, schema, settings.count_rows)
            for spec in config.sinks
        }
        expected = baseline["events"]
        problems = list(errors)
        if manifest is not None and manifest["totals"]["events"] != expected:
            problems.append(f"the input holds {expected} events, its manifest says {manifest['totals']['events']}")
        for name, sink in pipeline["sinks"].items():
            check = checks[name]
            sink["events"] = check.get("events")  # what the sink itself holds from this run
            sink["sink_checkpoint"] = check.get("checkpoint")
            if check.get("duplicates") is not None:
                sink["duplicates"] = check["duplicates"]
            # (not events_acked: the supervisor counts only the last part of a work item split into
            # several batches, so status.json's events_written falls short whenever items are split)
            for what, count in (("the sink holds", sink["events"]), ("the checkpoint covers", sink["events_covered"])):
                if count is not None and count != expected:
                    problems.append(f"{name}: {what} {count} events of this run, expected {expected}")
            if "error" in check:
                problems.append(f"{name}: {check['error']}")
        pipeline_rate = pipeline.get("events_per_s")
        result = {
            "format": RESULTS_FORMAT,
            "benchmark": settings.kind,
            "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
            "command": [redact_dsn(a) if "://" in a else a for a in sys.argv],
            "machine": {
                **machine_info(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            },
            "input": {
                "folder": str(folder),
                "generated": generated,
                "schema": settings.schema,
                "segments": len(segments),
                "sections": sum(len(s.section_ends) for s in segments),
                "events": expected,
                "manifest_events": manifest["totals"]["events"] if manifest else None,
                "mutations": manifest["totals"]["mutations"] if manifest else None,
                "logical_bytes": total_bytes,
                "file_bytes": sum(s.file_bytes for s in segments),
                "compression": manifest["settings"]["compression"] if manifest else None,
                "version": manifest["settings"]["version"] if manifest else None,
            },
            "settings": {
                "release": "paced" if settings.rate else "all at once",
                "rate": settings.rate,
                "sync_ms": settings.sync_ms,
                "parser_workers": settings.parsers,
                "batch_size": settings.batch_size,
                "poll_interval": settings.poll_interval,
                "sinks": [{"name": s.name, "kind": s.kind} for s in config.sinks],
                "node": node,
            },
            "baseline": baseline,
            "pipeline": pipeline,
            "ratio_to_baseline": (
                round(pipeline_rate / baseline["events_per_s"], 3)
                if pipeline_rate and baseline["events_per_s"]
                else None
            ),
            "complete": not problems,
            "problems": problems,
        }
        return result

    def _pipeline(
        self, config: Any, segments: list[InputSegment], state: Path, cdc_raw: Path, config_path: Path
    ) -> tuple[dict[str, Any], list[str]]:
        settings = self.settings
        node = config.sources[0].node
        sinks = [s.name for s in config.sinks]
        sampler = ProcessSampler(state / "run")
        expected = {"supervisor", *(f"parser-{p}" for p in range(settings.parsers)), *(f"writer-{s}" for s in sinks)}
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = [sys.executable, "-m", "cdcfast.cli", "supervise", "--config", str(config_path)]
        self.say(f"starting the pipeline: {len(sinks)} sink(s) ({', '.join(sinks)}), {settings.parsers} parser(s)")
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_package_env(),
            start_new_session=True,
        )
        assert proc.stderr is not None
        logs = LogWatch(proc.stderr)
        logs.start()
        watches = {s.name: CheckpointWatch(s.kind, s.dsn, s.name, node, settings.watch_interval) for s in config.sinks}
        errors: list[str] = []
        acked: dict[str, Any] = {}
        try:
            idle = self._settle(proc, logs, sampler, expected)
            for watch in watches.values():
                watch.start()
            replay = Replay(segments, cdc_raw)
            cpu_start = sampler.sample()
            machine_start = machine_cpu()
            servers_start = tree_cpu(settings.servers)
            self_start = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.time()
            if settings.rate is None:
                replay.release_all()
                self.say(f"released {replay.total_events:,} events at once")
            finished = self._follow(proc, logs, sampler, replay, watches, t0, errors)
            t_end = time.time()
            cpu_end = sampler.sample()
            machine_end = machine_cpu()
            servers_end = tree_cpu(settings.servers)
            self_end = resource.getrusage(resource.RUSAGE_SELF)
            if finished:  # the acks reach status.json at the supervisor's next poll
                time.sleep(2 * settings.poll_interval + 0.3)
                acked = read_status(state)
        finally:
            for watch in watches.values():
                watch.stop.set()
            self._stop(proc)
            logs.join(10)
            for watch in watches.values():
                if watch.is_alive():
                    watch.join(10)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        children_cpu = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
        self_cpu = (self_end.ru_utime - self_start.ru_utime) + (self_end.ru_stime - self_start.ru_stime)
        errors.extend(logs.errors[:10])
        if not finished and not logs.errors:
            errors.append("log tail:\n" + "\n".join(logs.tail))

        cpu = {name: round(cpu_end.get(name, 0.0) - cpu_start.get(name, 0.0), 3) for name in cpu_end}
        ours = sum(cpu.values())
        servers = {n: round(servers_end[n] - servers_start[n], 3) for n in servers_end if n in servers_start}
        busy = machine_end[0] - machine_start[0]
        elapsed = t_end - t0
        per_sink: dict[str, Any] = {}
        for name, watch in watches.items():
            last = watch.landings[-1].at if watch.landings else None
            done = bool(replay.releases) and watch.checkpoint >= replay.releases[-1].key
            seconds = (last - t0) if (last and done) else None
            samples = latencies(replay.sections, watch.landings)
            per_sink[name] = {
                "events_covered": covered_events(replay.sections, watch.checkpoint),
                "events_acked": acked.get(name, {}).get("events_written"),
                "checkpoint": list(watch.checkpoint),
                "checkpoints_seen": len(watch.landings),
                "seconds": None if seconds is None else round(seconds, 3),
                "events_per_s": round(replay.total_events / seconds) if seconds else None,
                "mb_per_s": round(replay.total_bytes / seconds / 1e6, 2) if seconds else None,
                "latency": latency_summary(samples),
                "watch": {"polls": watch.polls, "last_error": watch.last_error},
            }
        slowest = max((s["seconds"] or 0.0 for s in per_sink.values()), default=0.0)
        result = {
            "what": (
                "cdcfast supervise: parser workers -> shared-memory rings -> one writer per sink, "
                "exactly once (each batch with its checkpoint)"
            ),
            "latency_from": (
                "each idx advance (one per sync period) to the checkpoint covering each section it made "
                "durable, first seen in the sink"
                if settings.rate
                else "the release of the whole input (a backlog: time until each part is visible)"
            ),
            "latency_resolution": (
                f"null sink: its commit time; other sinks: polled every {settings.watch_interval} s"
            ),
            "seconds": round(slowest, 3),
            "events": replay.total_events,
            "events_per_s": round(replay.total_events / slowest) if slowest and finished else None,
            "mb_per_s": round(replay.total_bytes / slowest / 1e6, 2) if slowest and finished else None,
            "idx_advances": len(replay.releases),
            "released_events_per_s": (
                round(replay.released_events / (replay.releases[-1].at - t0), 1)
                if settings.rate and replay.releases and replay.releases[-1].at > t0
                else None
            ),
            "sinks": per_sink,
            "cpu_seconds": {**cpu, "total": round(ours, 3)},
            "cpu_cores_used": round(ours / elapsed, 2) if elapsed else None,
            "cpu_seconds_all_descendants": round(children_cpu, 3),
            "idle_cpu_per_s": idle,
            "bench_cpu_seconds": round(self_cpu, 3),
            "server_cpu_seconds": servers,
            "machine_busy_cpu_seconds": round(busy, 3),
            "others_cpu_seconds": round(max(0.0, busy - ours - self_cpu - sum(servers.values())), 3),
            "window_seconds": round(elapsed, 3),
            "finished": finished,
        }
        return result, errors

    def _settle(self, proc: subprocess.Popen, logs: LogWatch, sampler: ProcessSampler, expected: set[str]) -> dict:
        """Wait for every process to be up with nothing to do; returns the idle CPU per second of each."""
        deadline = time.monotonic() + READY_TIMEOUT
        previous: dict[str, float] | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                logs.join(5)
                raise ConfigError("cdcfast supervise exited at start:\n" + "\n".join(logs.tail))
            time.sleep(SAMPLE_EVERY)
            now = sampler.sample()
            ready = logs.resumed.is_set() and expected <= set(now)
            parsers_idle = previous is not None and all(
                now[n] - previous.get(n, 0.0) < 0.02 for n in now if n.startswith("parser-")
            )
            if ready and parsers_idle:
                time.sleep(1.0)
                after = sampler.sample()
                return {n: round(after[n] - now.get(n, 0.0), 3) for n in sorted(after)}
            previous = now
        raise ConfigError("cdcfast supervise did not come up in time:\n" + "\n".join(logs.tail))

    def _follow(
        self,
        proc: subprocess.Popen,
        logs: LogWatch,
        sampler: ProcessSampler,
        replay: Replay,
        watches: dict[str, CheckpointWatch],
        t0: float,
        errors: list[str],
    ) -> bool:
        """Release (paced) and follow the checkpoints until every sink has everything."""
        settings = self.settings
        sync = settings.sync_ms / 1000
        next_tick = t0 + sync
        next_sample = next_report = time.monotonic()
        while True:
            now = time.time()
            if settings.rate and not replay.done and now >= next_tick:
                replay.release_until(settings.rate * (now - t0))
                while next_tick <= now:
                    next_tick += sync
            if replay.done and replay.releases:
                last = replay.releases[-1].key
                if all(watch.checkpoint >= last for watch in watches.values()):
                    return True
            if proc.poll() is not None:
                errors.append(f"cdcfast supervise exited with code {proc.returncode} before the end")
                return False
            if now - t0 > settings.timeout:
                errors.append(f"timed out after {settings.timeout:.0f} s: not every sink has everything")
                return False
            if time.monotonic() >= next_sample:
                sampler.sample()
                next_sample = time.monotonic() + SAMPLE_EVERY
            if time.monotonic() >= next_report:
                if now > t0 + 0.5:
                    self._report(now - t0, replay, watches, sampler)
                next_report = time.monotonic() + PROGRESS_EVERY
            time.sleep(0.02)

    def _report(
        self, elapsed: float, replay: Replay, watches: dict[str, CheckpointWatch], sampler: ProcessSampler
    ) -> None:
        parts = []
        for name, watch in watches.items():
            covered = covered_events(replay.sections, watch.checkpoint)
            trouble = f" [checkpoint not readable: {watch.last_error}]" if watch.last_error and not covered else ""
            parts.append(f"{name} {covered:,} ({covered / elapsed:,.0f}/s){trouble}")
        cpu = sum(sampler.totals().values())
        self.say(
            f"{elapsed:,.0f} s: released {replay.released_events:,} of {replay.total_events:,} events; "
            f"visible: {', '.join(parts)}; pipeline CPU {cpu:,.1f} s; load {os.getloadavg()[0]:.1f}"
        )

    def _stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def read_status(state: Path) -> dict[str, Any]:
    """The supervisor's ``status.json``: per sink, the events its writer acknowledged."""
    try:
        return dict(json.loads((state / "status.json").read_text())["sinks"])
    except (OSError, ValueError, KeyError):
        return {}


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Run one benchmark; returns the results (see ``docs/benchmarks.md``)."""
    return Bench(settings).run()


def render(result: dict[str, Any]) -> str:
    """The results for people."""
    base, pipe, inp = result["baseline"], result["pipeline"], result["input"]
    machine = result["machine"]
    lines = [
        f"cdcfast bench {result['benchmark']}: {inp['events']:,} events, {inp['logical_bytes'] / 1e6:,.1f} MB in "
        f"{inp['segments']} segment(s); release {result['settings']['release']}"
        + (
            f" at {result['settings']['rate']:,.0f} events/s, one sync every {result['settings']['sync_ms']} ms"
            if result["settings"]["rate"]
            else ""
        ),
        f"machine: {machine['cpus']} CPU {machine['cpu']}, {machine['memory_gb']} GB; load "
        f"{machine['loadavg_before'][0]} before, {machine['loadavg_after'][0]} after; others used "
        f"{pipe['others_cpu_seconds']:,.1f} CPU s of the machine's {pipe['machine_busy_cpu_seconds']:,.1f} meanwhile",
        f"baseline (single process, decode + events): {base['events_per_s']:,} events/s, {base['mb_per_s']} MB/s, "
        f"{base['cpu_seconds']} CPU s",
    ]
    if pipe["events_per_s"]:
        lines.append(
            f"pipeline (slowest sink): {pipe['events_per_s']:,} events/s, {pipe['mb_per_s']} MB/s "
            f"in {pipe['seconds']} s = {result['ratio_to_baseline']}x the baseline; {pipe['cpu_cores_used']} cores busy"
        )
    for name, sink in pipe["sinks"].items():
        lat = sink["latency"]
        rate = f"{sink['events_per_s']:,} events/s" if sink["events_per_s"] else "-"
        held = f"{sink['events']:,}" if sink.get("events") is not None else "?"
        lines.append(
            f"  {name}: {held} events held, {rate}; latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
            f"max {lat['max_ms']} ms ({lat['sections']} sections)"
        )
    lines.append("CPU seconds: " + ", ".join(f"{k} {v}" for k, v in pipe["cpu_seconds"].items()))
    if pipe.get("server_cpu_seconds"):
        servers = pipe["server_cpu_seconds"].items()
        lines.append("database servers, CPU seconds: " + ", ".join(f"{k} {v}" for k, v in servers))
    lines.append(f"latency measured from {pipe['latency_from']}")
    if result["problems"]:
        lines.append("PROBLEMS:")
        lines.extend(f"  {p}" for p in result["problems"])
    return "\n".join(lines)
