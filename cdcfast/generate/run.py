"""``cdcfast generate``: a workload written as CDC commit log segments, with a ``generated.json`` manifest.

Two modes:

* **batch** (default): as fast as possible. Write timestamps follow a simulated clock (about 1000
  writes per second from ``start``); a section is synced every ``sync_ms`` of that clock, and the
  ``_cdc.idx`` files are written when segments close (``COMPLETED``; the last one can be left open,
  its idx holding only the offset of the last sync).
* **live** (``rate``): ``rate`` events per second on the wall clock, timestamps from the wall clock;
  every ``sync_ms`` the new entries become one section and the idx advances, as on a node, so that
  ``cdcfast supervise`` can follow the folder. The byte templates are filled before the clock
  starts, so the rate holds from the first second. Runs until the target is reached, or until
  SIGINT or SIGTERM when there is none (the current segment is then closed, COMPLETED).

``size`` counts logical commit log bytes (uncompressed: headers, sync markers, entries), what the
idx offsets and Cassandra's segment size count; ``events`` counts change events as cdcfast reads
them (a row, a static row, a partition or range deletion each).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from cdcfast.commitlog.schema import Schema, load_schema
from cdcfast.errors import ConfigError
from cdcfast.generate.segments import SegmentStream
from cdcfast.generate.workload import Workload, WorkloadSpec, select_tables

COMPRESSIONS: dict[str, str | None] = {
    "none": None,
    "lz4": "LZ4Compressor",
    "snappy": "SnappyCompressor",
    "deflate": "DeflateCompressor",
    "zstd": "ZstdCompressor",
}
DEFAULT_START = "2026-01-01T00:00:00Z"
SEGMENT_NAME = re.compile(r"^CommitLog-\d+-(\d+)\.log$")
MANIFEST = "generated.json"
SIMULATED_STEP_US = 1000  # batch mode: the mean gap between two writes on the simulated clock


@dataclass
class GenerateSettings:
    schema: str
    out: Path
    spec: WorkloadSpec = field(default_factory=WorkloadSpec)
    size: int | None = None  # logical bytes
    events: int | None = None
    version: int = 8
    compression: str = "none"  # a key of COMPRESSIONS
    segment_size: int = 32 * 1024 * 1024
    rate: float | None = None  # events per second: live mode
    sync_ms: int = 2000
    start: str = DEFAULT_START  # ISO time of the first write, or "now" (batch mode)
    leave_open: bool = False
    progress: bool = True


def parse_start(text: str) -> int:
    """Microseconds since the epoch of an ISO time (``Z`` or an offset), or of ``now``."""
    if text == "now":
        return time.time_ns() // 1000
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--start: expected an ISO time such as {DEFAULT_START} or 'now', got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1_000_000)


def first_segment_id(folder: Path, start_us: int) -> int:
    """Cassandra's id allocation: max(start in ms, largest id present + 1), plus one per segment."""
    present = [int(m.group(1)) for p in folder.iterdir() if (m := SEGMENT_NAME.match(p.name))]
    return max([start_us // 1000, *(i + 1 for i in present)]) + 1


def latest_drop(schema: Schema, settings: GenerateSettings) -> int:
    """The newest drop time of a re-added column: writes must come after it to be kept."""
    drops = [
        c.dropped_at_us
        for t in select_tables(schema, settings.spec.keyspaces, settings.spec.tables)
        for c in t.columns.values()
        if c.dropped_at_us is not None
    ]
    return max(drops, default=0)


class _Tally:
    """Counts per (table, operation, events of the mutation): one dict update per mutation."""

    def __init__(self) -> None:
        self.mutations = 0
        self.events = 0
        self.counts: dict[tuple[str, str, tuple[str, ...]], int] = {}

    def tables(self) -> dict[str, dict[str, Counter]]:
        out: dict[str, dict[str, Counter]] = {}
        for (table, operation, events), count in self.counts.items():
            per = out.setdefault(table, {"operations": Counter(), "events": Counter()})
            per["operations"][operation] += count
            for event in events:
                per["events"][event] += count
        return out


class _Progress:
    """A line on stderr about every second: MB written, events, rate."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.next_at = self.started + 1.0

    def maybe(self, segments: SegmentStream, tally: _Tally, final: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (now < self.next_at and not final):
            return
        self.next_at = now + 1.0
        elapsed = max(now - self.started, 1e-9)
        mb = segments.logical_bytes / 1e6
        self.stream.write(
            f"cdcfast generate: {mb:,.1f} MB, {tally.events:,} events, {len(segments.segments)} segment(s), "
            f"{mb / elapsed:,.1f} MB/s, {tally.events / elapsed:,.0f} events/s{' (done)' if final else ''}\n"
        )
        self.stream.flush()


class _StopFlag:
    """Set by SIGINT/SIGTERM while a run is going (main thread only); restores the handlers after."""

    def __init__(self) -> None:
        self.stopped = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.stopped = True

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def generate(settings: GenerateSettings, stderr: IO[str] | None = sys.stderr) -> dict[str, Any]:
    """Run the workload into ``settings.out``; returns the manifest (also written as generated.json)."""
    if settings.version not in (7, 8):
        raise ConfigError(f"--version: 7 (Cassandra 4.x, 5.0 compatibility mode) or 8 (5.0), not {settings.version}")
    if settings.compression not in COMPRESSIONS:
        raise ConfigError(f"--compression: one of {', '.join(COMPRESSIONS)}, not {settings.compression!r}")
    if settings.rate is not None and settings.rate <= 0:
        raise ConfigError("--rate: events per second must be positive")
    if settings.size is None and settings.events is None and settings.rate is None:
        settings.events = 10_000
    schema = load_schema(settings.schema)
    workload = Workload(schema, settings.spec, settings.version)
    live = settings.rate is not None
    start = time.time_ns() // 1000 if live else parse_start(settings.start)
    start = max(start, latest_drop(schema, settings) + 1_000_000)
    settings.out.mkdir(parents=True, exist_ok=True)
    segments = SegmentStream(
        settings.out,
        settings.version,
        COMPRESSIONS[settings.compression],
        settings.segment_size,
        first_segment_id(settings.out, start),
        idx_every_sync=live,
    )
    if settings.spec.row_size and settings.spec.row_size > segments.max_mutation:
        raise ConfigError(
            f"--row-size {settings.spec.row_size}: a mutation must fit in half a segment "
            f"({segments.max_mutation} bytes with --segment-size {settings.segment_size})"
        )
    prepared = time.monotonic()
    if live:  # a paced stream must not slow down while the templates fill: fill them first
        if stderr is not None and settings.progress:
            stderr.write("cdcfast generate: preparing templates\n")
            stderr.flush()
        workload.prepare(start, start // 1_000_000)
    prepared = time.monotonic() - prepared
    tally = _Tally()
    progress = _Progress(stderr if settings.progress else None)
    began = time.monotonic()
    with _StopFlag() as stop:
        if live:
            _live(settings, workload, segments, tally, progress, stop)
        else:
            _batch(settings, workload, segments, tally, progress, stop, start)
        segments.close_segment(completed=not settings.leave_open or stop.stopped)
    elapsed = time.monotonic() - began
    progress.maybe(segments, tally, final=True)
    manifest = _manifest(settings, workload, segments, tally, elapsed, start, stop.stopped)
    manifest["run"]["prepare_seconds"] = round(prepared, 3)
    (settings.out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _done(settings: GenerateSettings, segments: SegmentStream, tally: _Tally) -> bool:
    if settings.events is not None and tally.events >= settings.events:
        return True
    return settings.size is not None and segments.logical_bytes >= settings.size


def _remaining(settings: GenerateSettings, tally: _Tally) -> int | None:
    return None if settings.events is None else settings.events - tally.events


def _one(workload: Workload, segments: SegmentStream, tally: _Tally, ts: int, remaining: int | None) -> None:
    table, operation, mutation, events = workload.next(ts, ts // 1_000_000, remaining)
    segments.append(mutation, len(events))
    key = (table.qualified_name, operation, events)
    counts = tally.counts
    counts[key] = counts.get(key, 0) + 1
    tally.mutations += 1
    tally.events += len(events)


def _batch(
    settings: GenerateSettings,
    workload: Workload,
    segments: SegmentStream,
    tally: _Tally,
    progress: _Progress,
    stop: _StopFlag,
    start: int,
) -> None:
    step = random.Random(settings.spec.seed ^ 0x5EED).random
    spread = 2 * SIMULATED_STEP_US - 1
    sync_us = settings.sync_ms * 1000
    ts = start
    next_sync = start + sync_us
    while not stop.stopped and not _done(settings, segments, tally):
        ts += 1 + int(step() * spread)
        if ts >= next_sync:
            segments.sync()
            while next_sync <= ts:
                next_sync += sync_us
        _one(workload, segments, tally, ts, _remaining(settings, tally))
        if tally.mutations & 1023 == 0:
            progress.maybe(segments, tally)


def _live(
    settings: GenerateSettings,
    workload: Workload,
    segments: SegmentStream,
    tally: _Tally,
    progress: _Progress,
    stop: _StopFlag,
) -> None:
    assert settings.rate is not None
    began = time.monotonic()
    sync_s = settings.sync_ms / 1000
    next_sync = began + sync_s
    last_ts = 0
    while not stop.stopped and not _done(settings, segments, tally):
        now = time.monotonic()
        due = settings.rate * (now - began)
        while tally.events < due and not _done(settings, segments, tally) and not stop.stopped:
            last_ts = max(last_ts + 1, time.time_ns() // 1000)
            _one(workload, segments, tally, last_ts, _remaining(settings, tally))
            if time.monotonic() >= next_sync:
                break
        if time.monotonic() >= next_sync:
            segments.sync()
            next_sync += sync_s * max(1, int((time.monotonic() - next_sync) / sync_s) + 1)
        progress.maybe(segments, tally)
        time.sleep(max(0.0, min(0.01, next_sync - time.monotonic())))


def _manifest(
    settings: GenerateSettings,
    workload: Workload,
    segments: SegmentStream,
    tally: _Tally,
    elapsed: float,
    start: int,
    interrupted: bool,
) -> dict[str, Any]:
    operations: Counter = Counter()
    events: Counter = Counter()
    tables = {}
    per_table = tally.tables()
    for name in sorted(per_table):
        per = per_table[name]
        operations.update(per["operations"])
        events.update(per["events"])
        tables[name] = {
            "mutations": sum(per["operations"].values()),
            "events": sum(per["events"].values()),
            "operations": dict(sorted(per["operations"].items())),
            "event_ops": dict(sorted(per["events"].items())),
        }
    spec = settings.spec
    return {
        "schema": settings.schema,
        "seed": spec.seed,
        "settings": {
            "mode": "live" if settings.rate is not None else "batch",
            "version": settings.version,
            "messaging_version": 13 if settings.version == 8 else 12,
            "compression": settings.compression,
            "segment_size": settings.segment_size,
            "size": settings.size,
            "events": settings.events,
            "rate": settings.rate,
            "sync_ms": settings.sync_ms,
            "start_us": start,
            "row_size": spec.row_size,
            "mix": dict(spec.mix),
            "effective_mix": {op: round(share, 6) for op, share in workload.effective_mix.items()},
            "unsupported_operations": workload.unsupported,
            "keyspaces": list(spec.keyspaces),
            "tables": list(spec.tables),
            "templates": spec.templates,
            "leave_open": settings.leave_open,
        },
        "totals": {
            "mutations": tally.mutations,
            "events": tally.events,
            "logical_bytes": segments.logical_bytes,
            "file_bytes": segments.file_bytes,
            "segments": len(segments.segments),
        },
        "operations": dict(sorted(operations.items())),
        "event_ops": dict(sorted(events.items())),
        "tables": tables,
        "segments": [asdict(s) for s in segments.segments],
        "run": {
            "seconds": round(elapsed, 3),
            "mb_per_s": round(segments.logical_bytes / max(elapsed, 1e-9) / 1e6, 2),
            "fresh_mutations": workload.fresh,
            "templated_mutations": workload.reused,
            "interrupted": interrupted,
        },
    }
