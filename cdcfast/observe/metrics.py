"""Every metric cdcfast exports, defined once (:data:`SPECS`), and the helpers the pipeline calls.

Callers never touch prometheus objects: the parser calls :func:`record_read`, a writer
:func:`record_write`, the supervisor :func:`set_lag` and so on. Metric objects are built on first use.

Processes: the supervisor calls :func:`setup_multiprocess` with a folder under its state dir *before* it
starts any child. Children (spawned) inherit ``PROMETHEUS_MULTIPROC_DIR`` and write their values to
per-process files there; the supervisor's ``/metrics`` merges them (``MultiProcessCollector``):
counters and histograms are summed over every process that ever ran in this supervisor's life, so
they stay monotonic when a child is restarted. Gauges say how they merge (``multiprocess_mode``):

* ``livemax``: the largest value among live processes; the supervisor calls :func:`mark_dead` with
  the pid of every child that exits, which drops that child's live gauges.
* ``mostrecent``: the value set last by any process, dead or alive (the DLQ depth: a writer restarted
  by the supervisor does not make it vanish).

Labels are bounded sets only: ``sink`` (configured names), ``table`` (``keyspace.table``, bounded by the
schema), ``column`` (bounded by the schema), ``class``, ``classification``, ``kind``, ``process``.
Never a key, a value, a path or an error message.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ERROR_CLASSES = ("transient", "permanent", "poison")
CDC_TOTAL_SPACE_DEFAULT_MAX = 4096 << 20  # Cassandra: cdc_total_space defaults to min(4096 MiB, volume / 8)

GaugeMode = Literal["livemax", "mostrecent"]


@dataclass(frozen=True)
class MetricSpec:
    kind: Literal["counter", "gauge", "histogram"]
    name: str  # as written in PromQL: counters end in _total; histograms without _bucket/_sum/_count
    help: str
    labels: tuple[str, ...] = ()
    multiprocess_mode: GaugeMode | None = None  # gauges only
    buckets: tuple[float, ...] = ()  # histograms only


_SINK = ("sink",)
SPECS: tuple[MetricSpec, ...] = (
    # -- reading (parser workers) ---------------------------------------------------------------------
    MetricSpec(
        "counter",
        "cdcfast_events_read_total",
        "Change events decoded from the commit log for CDC-enabled tables, by keyspace.table.",
        ("table",),
    ),
    MetricSpec("counter", "cdcfast_bytes_read_total", "Commit log mutation bytes decoded."),
    MetricSpec(
        "counter",
        "cdcfast_read_issues_total",
        "Damaged or unreadable commit log data skipped, by kind (crc, entry, decode, section, header, "
        "missing, unknown_table, truncate_race_unavailable, other).",
        ("kind",),
    ),
    MetricSpec(
        "counter",
        "cdcfast_masked_fields_total",
        "Values masked before leaving the parser, by keyspace.table, column and classification (pii, phi).",
        ("table", "column", "classification"),
    ),
    # -- writing (one writer process per sink) --------------------------------------------------------
    MetricSpec(
        "counter",
        "cdcfast_events_written_total",
        "Change events applied to a sink (with their checkpoint), by sink and keyspace.table.",
        ("sink", "table"),
    ),
    MetricSpec("counter", "cdcfast_bytes_written_total", "Encoded size of the change events applied to a sink.", _SINK),
    MetricSpec(
        "histogram",
        "cdcfast_batch_size_events",
        "Change events per batch applied to a sink.",
        _SINK,
        buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000),
    ),
    MetricSpec(
        "histogram",
        "cdcfast_write_latency_seconds",
        "Seconds to apply one batch and its checkpoint to a sink.",
        _SINK,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    ),
    MetricSpec(
        "counter",
        "cdcfast_errors_total",
        "Errors writing to a sink, by class: transient (retried), permanent (stops the writer), poison "
        "(a change sent to the dead letter queue).",
        ("sink", "class"),
    ),
    MetricSpec("counter", "cdcfast_retries_total", "Writes to a sink retried after a transient error.", _SINK),
    MetricSpec(
        "gauge",
        "cdcfast_dlq_depth",
        "Changes waiting in a sink's dead letter queue.",
        _SINK,
        multiprocess_mode="mostrecent",
    ),
    # -- the supervisor -------------------------------------------------------------------------------
    MetricSpec(
        "gauge",
        "cdcfast_replication_lag_seconds",
        "Write time of the newest durable commit log data minus that of the newest data delivered to the "
        "sink (0 when the sink has everything).",
        _SINK,
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "gauge",
        "cdcfast_replication_lag_bytes",
        "Commit log bytes handed out for reading but not yet delivered to the sink.",
        _SINK,
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "gauge",
        "cdcfast_checkpoint_age_seconds",
        "Seconds since the sink's checkpoint last advanced while it had undelivered data (0 when it has "
        "everything): a growing value means replication to that sink is stalled.",
        _SINK,
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "gauge",
        "cdcfast_sink_up",
        "1 while the sink's writer is connected and applying, 0 while it is failing or restarting.",
        _SINK,
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "gauge",
        "cdcfast_cdc_raw_bytes",
        "Bytes in the node's cdc_raw directory (Cassandra rejects CDC writes at cdc_total_space).",
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "gauge",
        "cdcfast_cdc_total_space_bytes",
        "Cassandra's cdc_total_space for the node (configured, or its default: min(4096 MiB, volume / 8)).",
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "gauge",
        "cdcfast_segments_pending",
        "Commit log segments with CDC data in cdc_raw not yet delivered to every sink.",
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "counter",
        "cdcfast_process_restarts_total",
        "Pipeline restarts, by the process that failed (supervisor, parser-N, writer-<sink>).",
        ("process",),
    ),
)

METRIC_NAMES: frozenset[str] = frozenset(spec.name for spec in SPECS)
HISTOGRAM_NAMES: frozenset[str] = frozenset(spec.name for spec in SPECS if spec.kind == "histogram")
_BY_NAME = {spec.name: spec for spec in SPECS}
assert len(_BY_NAME) == len(SPECS), "a metric is defined twice"

_lock = threading.Lock()
_metrics: dict[str, Counter | Gauge | Histogram] = {}
_masked_seen: dict[tuple[str, str, str, str], int] = {}


# -- multiprocess mode ---------------------------------------------------------------------------------


def setup_multiprocess(directory: str | os.PathLike[str]) -> Path:
    """Make ``directory`` this process tree's metrics folder: create it, delete the value files of a
    previous run (``*.db``; nothing else), and set ``PROMETHEUS_MULTIPROC_DIR``. Call it in the supervisor
    before starting any child process: children inherit the variable."""
    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    with _lock:
        # prometheus_client picks its value class when it is imported; metrics built from now on
        # (all of ours: they are built on first use) write to files in ``folder``.
        values.ValueClass = values.MultiProcessValue()
        _metrics.clear()
        _masked_seen.clear()
    return folder


def shutdown_multiprocess() -> None:
    """Back to in-memory values, and children started from now on no longer write files (tests)."""
    os.environ.pop(MULTIPROC_ENV, None)
    with _lock:
        values.ValueClass = values.MutexValue
        _metrics.clear()
        _masked_seen.clear()


def multiprocess_directory() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def mark_dead(pid: int) -> None:
    """A child process exited: drop its ``livemax`` gauges (its counters stay in the sums)."""
    directory = multiprocess_directory()
    if directory is not None:
        mark_process_dead(pid, directory)


def render_metrics(directory: str | os.PathLike[str] | None = None) -> bytes:
    """The text exposition of every process' metrics (what ``/metrics`` serves). Without a multiprocess
    folder: this process' metrics only."""
    registry = CollectorRegistry(auto_describe=True)
    folder = directory if directory is not None else multiprocess_directory()
    if folder is not None:
        MultiProcessCollector(registry, path=str(folder))
    else:
        with _lock:
            built = list(_metrics.values())
        for metric in built:
            registry.register(metric)
    return generate_latest(registry)


def _metric(name: str) -> Counter | Gauge | Histogram:
    metric = _metrics.get(name)
    if metric is not None:
        return metric
    spec = _BY_NAME[name]
    with _lock:
        metric = _metrics.get(name)
        if metric is None:
            built: Counter | Gauge | Histogram
            if spec.kind == "counter":
                built = Counter(spec.name, spec.help, spec.labels, registry=None)
            elif spec.kind == "gauge":
                built = Gauge(
                    spec.name, spec.help, spec.labels, registry=None, multiprocess_mode=spec.multiprocess_mode or "all"
                )
            else:
                built = Histogram(spec.name, spec.help, spec.labels, registry=None, buckets=spec.buckets)
            metric = _metrics[name] = built
    return metric


def _counter(name: str) -> Counter:
    metric = _metric(name)
    assert isinstance(metric, Counter)
    return metric


def _gauge(name: str) -> Gauge:
    metric = _metric(name)
    assert isinstance(metric, Gauge)
    return metric


def _histogram(name: str) -> Histogram:
    metric = _metric(name)
    assert isinstance(metric, Histogram)
    return metric


# -- helpers: what the pipeline calls ------------------------------------------------------------------


class _HasTable(Protocol):
    @property
    def keyspace(self) -> str: ...

    @property
    def table(self) -> str: ...


def table_name(keyspace: str, table: str) -> str:
    """The ``table`` label value."""
    return f"{keyspace}.{table}"


def events_by_table(events: Iterable[_HasTable]) -> dict[str, int]:
    """Change events counted by ``keyspace.table`` (for :func:`record_read` and :func:`record_write`)."""
    counts: dict[str, int] = {}
    for event in events:
        name = f"{event.keyspace}.{event.table}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def record_read(events_by_table: Mapping[str, int], nbytes: int) -> None:
    """Parser: a work item decoded: events per ``keyspace.table`` and the mutation bytes read."""
    read = _counter("cdcfast_events_read_total")
    for table, count in events_by_table.items():
        if count:
            read.labels(table=table).inc(count)
    if nbytes:
        _counter("cdcfast_bytes_read_total").inc(nbytes)


def record_read_issue(kind: str, count: int = 1) -> None:
    """Parser: damaged data skipped (``ReadIssue.kind``; ``unknown_table`` for mutations of tables not in
    the schema). Anything that is not a short identifier is counted as ``other``."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", kind):
        kind = "other"
    if count:
        _counter("cdcfast_read_issues_total").labels(kind=kind).inc(count)


def record_masked(table: str, column: str, classification: str, count: int = 1) -> None:
    """Parser: ``count`` values of ``table.column`` masked (``classification``: pii or phi)."""
    if count:
        masked = _counter("cdcfast_masked_fields_total")
        masked.labels(table=table, column=column, classification=classification).inc(count)


def record_masking_audit(audit: Mapping[tuple[str, str, str, str], int]) -> None:
    """Parser: a :attr:`Masker.audit <cdcfast.transform.masking.Masker.audit>` snapshot ((table, column,
    classification, strategy) -> values masked so far). Only what is new since the previous snapshot
    is counted; a count lower than before means the audit was reset, and counts as new."""
    for key, total in audit.items():
        seen = _masked_seen.get(key, 0)
        new = total - seen if total >= seen else total
        _masked_seen[key] = total
        table, column, classification, _strategy = key
        record_masked(table, column, classification, new)


def record_write(sink: str, events_by_table: Mapping[str, int], nbytes: int, seconds: float) -> None:
    """Writer: one batch applied to ``sink`` with its checkpoint: events per ``keyspace.table``, the
    batch's encoded size, and the seconds the sink took."""
    written = _counter("cdcfast_events_written_total")
    total = 0
    for table, count in events_by_table.items():
        if count:
            written.labels(sink=sink, table=table).inc(count)
            total += count
    if nbytes:
        _counter("cdcfast_bytes_written_total").labels(sink=sink).inc(nbytes)
    _histogram("cdcfast_batch_size_events").labels(sink=sink).observe(total)
    _histogram("cdcfast_write_latency_seconds").labels(sink=sink).observe(seconds)


def record_error(sink: str, error_class: str, count: int = 1) -> None:
    """Writer: ``count`` errors writing to ``sink``; ``error_class`` is one of :data:`ERROR_CLASSES`
    (poison: one per change sent to the dead letter queue)."""
    if error_class not in ERROR_CLASSES:
        raise ValueError(f"error class {error_class!r}: expected one of {', '.join(ERROR_CLASSES)}")
    _counter("cdcfast_errors_total").labels(sink, error_class).inc(count)


def record_retry(sink: str, count: int = 1) -> None:
    """Writer: a write to ``sink`` retried."""
    _counter("cdcfast_retries_total").labels(sink=sink).inc(count)


def set_dlq_depth(sink: str, depth: int) -> None:
    """Writer: changes now waiting in ``sink``'s dead letter queue."""
    _gauge("cdcfast_dlq_depth").labels(sink=sink).set(depth)


def init_sink(sink: str) -> None:
    """Supervisor (at start): zero-valued series for ``sink``'s error classes, retries and bytes written,
    so that rates and alerts see them before the first error."""
    errors = _counter("cdcfast_errors_total")
    for error_class in ERROR_CLASSES:
        errors.labels(sink, error_class)
    _counter("cdcfast_retries_total").labels(sink=sink)
    _counter("cdcfast_bytes_written_total").labels(sink=sink)


def set_lag(sink: str, seconds: float, nbytes: int) -> None:
    """Supervisor: ``sink``'s replication lag in seconds and in commit log bytes (see :class:`LagTracker`)."""
    _gauge("cdcfast_replication_lag_seconds").labels(sink=sink).set(seconds)
    _gauge("cdcfast_replication_lag_bytes").labels(sink=sink).set(nbytes)


def set_checkpoint_age(sink: str, seconds: float) -> None:
    """Supervisor: seconds since ``sink``'s checkpoint last advanced while it had undelivered data."""
    _gauge("cdcfast_checkpoint_age_seconds").labels(sink=sink).set(seconds)


def set_sink_up(sink: str, up: bool) -> None:
    """Supervisor: ``sink``'s writer reported ready (True), or failed (False)."""
    _gauge("cdcfast_sink_up").labels(sink=sink).set(1 if up else 0)


def set_cdc_raw(bytes_used: int, total: int) -> None:
    """Supervisor: bytes in cdc_raw and Cassandra's cdc_total_space (see :func:`cdc_raw_usage`)."""
    _gauge("cdcfast_cdc_raw_bytes").set(bytes_used)
    _gauge("cdcfast_cdc_total_space_bytes").set(total)


def set_segments_pending(count: int) -> None:
    """Supervisor: segments with CDC data in cdc_raw not yet delivered to every sink."""
    _gauge("cdcfast_segments_pending").set(count)


def record_restart(process: str) -> None:
    """Supervisor: the pipeline is restarted because ``process`` (supervisor, parser-N, writer-<sink>)
    failed."""
    _counter("cdcfast_process_restarts_total").labels(process=process).inc()


def cdc_raw_usage(path: str | os.PathLike[str], total_space: int | None = None) -> tuple[int, int]:
    """(bytes in the files of ``path``, cdc_total_space). Without ``total_space``: Cassandra's default,
    min(4096 MiB, 1/8 of the volume holding ``path``). A missing folder uses nothing."""
    folder = Path(path)
    used = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        used += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # deleted while listing (delivered, or Cassandra's own cleanup)
                    continue
    except FileNotFoundError:
        pass
    if total_space is None:
        probe = folder if folder.exists() else folder.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        total_space = min(CDC_TOTAL_SPACE_DEFAULT_MAX, shutil.disk_usage(probe).total // 8)
    return used, total_space


# -- replication lag bookkeeping (supervisor) ----------------------------------------------------------


@dataclass
class _SinkProgress:
    acked: int = -1  # last work item applied (this run)
    delivered_at: float | None = None  # write time of the newest data delivered (this run)
    waiting_since: float | None = None  # clock when it last advanced while behind; None: caught up


class LagTracker:
    """The supervisor's view of each sink's lag, from work items handed out and acknowledged.

    * :meth:`dispatched` for every work item put on the work queue: its number, the commit log bytes it
      covers and the write time of its newest data (the mtime of the segment's ``_cdc.idx`` when it was
      read: Cassandra rewrites it at every sync).
    * :meth:`applied` for every ``applied`` status message.
    * :meth:`publish` once per loop: sets ``cdcfast_replication_lag_*`` and
      ``cdcfast_checkpoint_age_seconds`` for every sink.

    Lag in seconds is the newest durable write time minus the newest delivered one (before a sink has
    delivered anything in this run: minus the oldest undelivered one); 0 when the sink has every item.
    Checkpoint age is the time since the sink last advanced while it had undelivered items; 0 when it
    has them all (idle is not stalled). One tracker per pipeline run: work item numbers restart at 0.
    """

    def __init__(self, sinks: Iterable[str], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._items: dict[int, tuple[int, float]] = {}  # seq -> (bytes, write time of its newest data)
        self._newest: float | None = None
        self._last_seq = -1
        self._progress = {sink: _SinkProgress() for sink in sinks}

    @property
    def pending_items(self) -> int:
        return len(self._items)

    def dispatched(self, seq: int, nbytes: int, written_at: float) -> None:
        self._items[seq] = (max(nbytes, 0), written_at)
        self._last_seq = max(self._last_seq, seq)
        self._newest = written_at if self._newest is None else max(self._newest, written_at)
        now = self.clock()
        for progress in self._progress.values():
            if progress.waiting_since is None and progress.acked < seq:
                progress.waiting_since = now

    def applied(self, sink: str, seq: int) -> None:
        progress = self._progress.setdefault(sink, _SinkProgress())
        if seq <= progress.acked:
            return
        for number in range(progress.acked + 1, seq + 1):
            item = self._items.get(number)
            if item is not None:
                before = progress.delivered_at
                progress.delivered_at = item[1] if before is None else max(before, item[1])
        progress.acked = seq
        progress.waiting_since = self.clock() if seq < self._last_seq else None
        floor = min(p.acked for p in self._progress.values())
        for number in [n for n in self._items if n <= floor]:
            del self._items[number]

    def lag(self, sink: str) -> tuple[float, int]:
        """(seconds, commit log bytes) ``sink`` is behind."""
        progress = self._progress.get(sink) or _SinkProgress()
        pending = [item for seq, item in self._items.items() if seq > progress.acked]
        if not pending or self._newest is None:
            return 0.0, 0
        delivered = progress.delivered_at
        if delivered is None:
            delivered = min(written for _, written in pending)
        return max(0.0, self._newest - delivered), sum(nbytes for nbytes, _ in pending)

    def checkpoint_age(self, sink: str) -> float:
        progress = self._progress.get(sink)
        if progress is None or progress.waiting_since is None:
            return 0.0
        return max(0.0, self.clock() - progress.waiting_since)

    def publish(self) -> None:
        for sink in self._progress:
            seconds, nbytes = self.lag(sink)
            set_lag(sink, seconds, nbytes)
            set_checkpoint_age(sink, self.checkpoint_age(sink))
