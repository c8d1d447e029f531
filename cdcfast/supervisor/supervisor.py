"""The supervisor: watches ``cdc_raw`` (woken when an idx is written: :mod:`.folder_watch`), hands
durable stretches of segments to parser workers, owns the processes, and deletes what every sink
has. It never decodes and never writes SQL.

Work items: each stretch is cut at section ends (sync markers) into items of about
``tuning.work_item_bytes``, which the parsers decode in parallel (:func:`plan_items`); finding the
cuts reads the marker chain only.

Order and checkpoints: work items are numbered and writers apply them in that order, so a sink's
checkpoint ``(segment, position)`` always means "everything before is delivered". A segment is
handed out only once every older segment that holds CDC data (has an idx, or is a Cassandra 3.x
segment, moved in complete) is COMPLETED: Cassandra closes a segment before the next one syncs, so
this costs nothing and keeps checkpoints honest.

Resume: writers report their sink's checkpoint when they start; reading restarts from the oldest
of them, and each writer skips what its sink already has.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import signal
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cdcfast.commitlog import discover, load_schema
from cdcfast.commitlog.schema import durable_writes_warnings
from cdcfast.commitlog.segment import section_bounds
from cdcfast.config import PipelineConfig
from cdcfast.errors import SegmentError
from cdcfast.log import get_logger
from cdcfast.observe import metrics
from cdcfast.observe.http import HealthState, start_server
from cdcfast.supervisor.folder_watch import FolderWatch
from cdcfast.supervisor.messages import WHOLE_SEGMENT, WorkItem
from cdcfast.supervisor.parser import parser_main
from cdcfast.supervisor.restart import RestartPolicy
from cdcfast.supervisor.ring import Ring, remove_stale_rings, ring_name
from cdcfast.supervisor.writer import writer_main

CDC_RAW_WARNING = 0.8  # warn when cdc_raw holds this share of cdc_total_space
START_TIMEOUT = 120.0  # seconds for every writer to connect and report its checkpoint
UNTIL_IDLE_OUTAGE_LIMIT = 300.0  # --until-idle: seconds to wait for a sink that is down, once the others are done


class PipelineFailed(Exception):
    """A child process failed; the pipeline is restarted (with backoff) or, if it keeps failing in
    --until-idle mode, the supervisor exits with this error. ``killed``: the child was killed by a
    signal from outside (kill -9, the OOM killer), which says nothing about the next attempt."""

    def __init__(self, message: str, killed: bool = False, process: str = "") -> None:
        super().__init__(message)
        self.killed = killed
        self.process = process  # parser-N or writer-<sink>, when a child failed


class SinkRecovered(Exception):
    """A sink that was down answers again: restart the pipeline from the oldest checkpoint, which
    catches it up (the other sinks skip what they have)."""

    def __init__(self, sink: str) -> None:
        super().__init__(f"sink {sink} is reachable again")
        self.sink = sink


@dataclass
class SinkDown:
    error_class: str  # transient (retries ran out) or permanent (needs an operator)
    reason: str
    since: float = field(default_factory=time.monotonic)


@dataclass
class Tracked:
    path: Path
    version: int
    segment_id: int
    dispatched: int  # logical position handed out so far (WHOLE_SEGMENT: all of it)
    holds_cdc: bool = False  # seen with CDC data (an idx): its disappearance before delivery is a loss


@dataclass
class Progress:
    dispatched_seq: int = 0  # next work item number
    acked: dict[str, int] = field(default_factory=dict)  # sink -> last work item applied
    delivered: dict[str, tuple[int, int]] = field(default_factory=dict)  # sink -> checkpoint
    events: dict[str, int] = field(default_factory=dict)  # sink -> events written this run
    last_error: dict[str, str] = field(default_factory=dict)  # sink (or process) -> last error
    down: dict[str, SinkDown] = field(default_factory=dict)  # sinks not written at the moment
    started: float = field(default_factory=time.time)


class Stretch(NamedTuple):
    """One work item's share of a segment: entries ending after ``after``, up to ``limit`` (None: to
    the end of the marker chain); ``end`` is where it ends in logical bytes, when known."""

    after: int
    limit: int | None
    end: int | None


def plan_items(path: Path, after: int, limit: int | None, item_bytes: int) -> list[Stretch]:
    """The work items of one durable stretch of ``path`` (after ``after``, up to ``limit``; None: a
    COMPLETED segment's whole marker chain), in order.

    The stretch is cut at section ends (:func:`section_bounds`: no entry spans two sections, so the
    items partition its entries exactly) into items of at most about ``item_bytes`` logical bytes,
    as even as the sections allow, for the parsers to decode in parallel. Only the last item keeps
    the stretch's ``limit``: a checkpoint at an earlier item's end is a real position, never
    ``WHOLE_SEGMENT``. A segment whose sections cannot be found (a damaged chain, an unreadable or
    encrypted header, a file gone) stays one item: its parser reports what is wrong, as for any item.
    """
    if limit is not None and limit - after <= item_bytes:
        return [Stretch(after, limit, limit)]
    try:
        bounds = section_bounds(path, limit, after)
    except (OSError, SegmentError):
        return [Stretch(after, limit, limit)]
    end = limit if limit is not None else (bounds[-1] if bounds else after)
    inside = [b for b in bounds if b < end]  # where a cut leaves something on both sides
    pieces = -(-(end - after) // item_bytes)
    cuts: list[int] = []
    for number in range(1, pieces):
        target = after + (end - after) * number // pieces
        i = bisect_left(inside, target)
        nearest = min(inside[max(0, i - 1) : i + 1], key=lambda b: abs(b - target), default=None)
        if nearest is not None and nearest > (cuts[-1] if cuts else after):
            cuts.append(nearest)
    starts, ends = [after, *cuts], [*cuts, end]
    return [Stretch(a, b, b) for a, b in zip(starts[:-1], ends)] + [Stretch(starts[-1], limit, end)]


def write_pid(config: PipelineConfig, name: str) -> None:
    """Each process records its pid in ``<state_dir>/run/<name>.pid`` (for ``cdcfast status`` and
    for operators)."""
    folder = Path(config.state_dir) / "run"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.pid").write_text(str(os.getpid()))


class Supervisor:
    def __init__(self, config: PipelineConfig, until_idle: bool = False) -> None:
        if len(config.sources) != 1:
            raise ValueError("one source per supervisor: run one cdcfast next to each Cassandra node")
        self.config = config
        self.source = config.sources[0]
        self.cdc_raw = Path(self.source.cdc_raw)
        self.until_idle = until_idle
        self.log = get_logger("supervisor", node=self.source.node)
        self.stopping = False
        self.made_progress = False  # in the current run: a failure after progress restarts the count
        self.warned_cdc_raw = False

    # -- processes ------------------------------------------------------------------------------
    def _start(self, ctx: Any) -> dict[str, Any]:
        tuning = self.config.tuning
        sinks = [s.name for s in self.config.sinks]
        rings = {
            (p, s): Ring(ring_name(os.getpid(), p, s), capacity=int(tuning.ring_buffer_size), create=True)
            for p in range(tuning.parser_workers)
            for s in sinks
        }
        status: Any = ctx.Queue()
        work: Any = ctx.Queue()
        writers = {
            name: ctx.Process(
                target=writer_main,
                name=f"cdcfast-writer-{name}",
                args=(self.config, i, [rings[(p, name)].name for p in range(tuning.parser_workers)], status),
            )
            for i, name in enumerate(sinks)
        }
        for name, process in writers.items():
            process.start()
            self.health.starting(f"writer-{name}")
        return {"rings": rings, "status": status, "work": work, "writers": writers, "parsers": [], "ctx": ctx}

    def _start_parsers(self, run: dict[str, Any]) -> None:
        ctx, tuning = run["ctx"], self.config.tuning
        for p in range(tuning.parser_workers):
            names = [ring.name for (worker, _), ring in run["rings"].items() if worker == p]
            process = ctx.Process(
                target=parser_main, name=f"cdcfast-parser-{p}", args=(self.config, p, run["work"], names)
            )
            process.start()
            run["parsers"].append(process)
            self.health.ok(f"parser-{p}")

    def _stop(self, run: dict[str, Any], graceful: bool) -> None:
        parsers, writers, rings = run["parsers"], run["writers"], run["rings"]
        if graceful:
            for _ in parsers:
                run["work"].put(None)
            for process in parsers:
                process.join(60)
        for ring in rings.values():
            ring.close_writing()
        for process in writers.values():
            process.join(120 if graceful else 5)
        for process in [*parsers, *writers.values()]:
            if process.is_alive():
                process.kill()
                process.join(5)
        for ring in rings.values():
            ring.close()
        for process in [*parsers, *writers.values()]:
            if process.pid is not None:
                metrics.mark_dead(process.pid)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        # Metrics are written by every process into one folder; /metrics sums them (before any child starts).
        directory = metrics.setup_multiprocess(Path(self.config.state_dir) / "metrics")
        self.health = HealthState()
        server = start_server(self.config.metrics_addr, self.health, directory)
        (Path(self.config.state_dir) / "run").mkdir(parents=True, exist_ok=True)
        (Path(self.config.state_dir) / "run" / "metrics.addr").write_text(server.url)
        self.log.info("serving /metrics, /health and /ready", url=server.url)
        for sink in self.config.sinks:
            metrics.init_sink(sink.name)
        self.health.ok("supervisor")
        self._check_schema()
        for name in remove_stale_rings():
            self.log.warning("removed a ring left by a supervisor that was killed", ring=name)
        self.watch = FolderWatch(self.cdc_raw)
        try:
            return self._supervise()
        finally:
            self.watch.close()
            server.close()

    def _check_schema(self) -> None:
        """Start-up warnings about the schema (the parsers and writers read it themselves)."""
        try:
            schema = load_schema(self.source.schema)
        except Exception as exc:  # noqa: BLE001 - the children report it, with their restarts
            self.log.warning("could not read the schema for start-up checks", error=str(exc))
            return
        for table, message in durable_writes_warnings(schema):
            self.log.warning(message, keyspace=table.keyspace, table=table.name)

    def _supervise(self) -> int:
        policy = RestartPolicy(give_up_after=3 if self.until_idle else None)
        while True:
            self.made_progress = False
            try:
                return self._run_once()
            except SinkRecovered as recovered:
                self.log.info("restarting the pipeline to catch the sink up", sink=recovered.sink)
                if self.stopping:
                    return 0
            except PipelineFailed as exc:
                if exc.process:
                    metrics.record_restart(exc.process)
                    self.health.failing(exc.process, str(exc))
                    if exc.process.startswith("writer-"):
                        metrics.set_sink_up(exc.process.removeprefix("writer-"), False)
                wait = policy.after_failure(exc.killed, self.made_progress)
                if wait is None:
                    self.log.error("giving up", error=str(exc), attempts=policy.failures)
                    return 1
                self.log.error("pipeline failed; restarting", error=str(exc), attempt=policy.failures, backoff=wait)
                time.sleep(wait)
                if self.stopping:
                    return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.log.info("stopping: finishing in-flight batches", signal=signum)
        self.stopping = True

    def _run_once(self) -> int:
        write_pid(self.config, "supervisor")
        ctx = mp.get_context("spawn")
        run = self._start(ctx)
        progress = Progress()
        self.lag = metrics.LagTracker([s.name for s in self.config.sinks])  # work items restart at 0
        try:
            checkpoints = self._wait_ready(run, progress)
            resume = min((c or (-1, -1) for c in checkpoints.values()), default=(-1, -1))
            progress.delivered = {k: v or (-1, -1) for k, v in checkpoints.items()}
            self.log.info(
                "resuming", checkpoints={k: list(v) if v else None for k, v in checkpoints.items()}, resume=list(resume)
            )
            self._start_parsers(run)
            tracked: dict[int, Tracked] = {}
            self._check_resume_segment(resume)
            idle_polls = 0
            while not self.stopping:
                dispatched = self._dispatch(run, tracked, resume, progress)
                self._drain_status(run, progress)
                self._check_children(run)
                self._clean(tracked, resume, progress)
                self._write_status(run, progress)
                self._publish(tracked, progress)
                caught_up = all(
                    progress.acked.get(s.name, -1) == progress.dispatched_seq - 1
                    for s in self.config.sinks
                    if s.name not in progress.down
                )
                idle_polls = idle_polls + 1 if (not dispatched and caught_up) else 0
                if self.until_idle and idle_polls >= 2:
                    if progress.down:
                        if self._give_up_on_down_sinks(progress):
                            self._stop(run, graceful=True)
                            return 1
                    else:
                        self.log.info("idle: everything durable is delivered", events=progress.events)
                        break
                self.watch.wait(self.source.poll_interval)  # woken early when an idx is written
            self._stop(run, graceful=True)
            self._drain_status(run, progress)
            return 0
        except SinkRecovered:
            self._stop(run, graceful=True)  # let the other sinks finish what they were given
            raise
        except BaseException:
            self._stop(run, graceful=False)
            raise

    def _wait_ready(self, run: dict[str, Any], progress: Progress) -> dict[str, tuple[int, int] | None]:
        """Every writer's checkpoint; a sink that is down at start counts with the checkpoint it had
        last time (``status.json``): cleanup never passes it, and reading resumes from it."""
        checkpoints: dict[str, tuple[int, int] | None] = {}
        remembered = self._remembered_checkpoints()
        deadline = time.monotonic() + START_TIMEOUT
        while len(checkpoints) < len(self.config.sinks):
            try:
                message = run["status"].get(timeout=0.5)
            except queue.Empty:
                self._check_children(run)
                if time.monotonic() > deadline:
                    raise PipelineFailed("writers did not start in time") from None
                continue
            if message[0] == "ready":
                _, sink, checkpoint, reachable = message
                if reachable:
                    checkpoints[sink] = tuple(checkpoint) if checkpoint else None
                    self.health.ok(f"writer-{sink}", reachable=True)
                    metrics.set_sink_up(sink, True)
                else:
                    checkpoints[sink] = remembered.get(sink)
            else:
                self._on_message(message, progress)
        return checkpoints

    def _remembered_checkpoints(self) -> dict[str, tuple[int, int]]:
        try:
            document = json.loads((Path(self.config.state_dir) / "status.json").read_text())
            return {name: tuple(sink["checkpoint"]) for name, sink in document["sinks"].items()}  # type: ignore[misc]
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _give_up_on_down_sinks(self, progress: Progress) -> bool:
        """--until-idle with the other sinks done: a sink down for good (or for too long) ends the run."""
        for sink, down in progress.down.items():
            waited = time.monotonic() - down.since
            if down.error_class != "transient" or waited > UNTIL_IDLE_OUTAGE_LIMIT:
                self.log.error(
                    "giving up: a sink is down; the others have everything durable",
                    sink=sink,
                    error=down.reason,
                    error_class=down.error_class,
                    down_for_seconds=round(waited),
                )
                return True
        return False

    def _dispatch(
        self, run: dict[str, Any], tracked: dict[int, Tracked], resume: tuple[int, int], progress: Progress
    ) -> bool:
        """Hand out newly durable stretches, oldest segment first, each as the work items
        :func:`plan_items` cuts it into. True if anything was handed out."""
        handed = False
        segments = discover([self.cdc_raw]) if self.cdc_raw.exists() else []
        self._report_vanished(tracked, {s.segment_id for s in segments})
        for segment in segments:
            if segment.segment_id < resume[0]:
                continue
            start = resume[1] if segment.segment_id == resume[0] else 0
            state = tracked.setdefault(
                segment.segment_id, Tracked(segment.path, segment.version, segment.segment_id, start)
            )
            if state.dispatched >= WHOLE_SEGMENT:
                continue
            if not segment.holds_cdc:
                continue  # no CDC data in it (yet)
            state.holds_cdc = True
            idx = segment.cdc_index()
            if idx.offset is None:
                break  # being rewritten: not known yet; later segments wait for it
            limit = None if idx.completed else idx.offset
            if limit is not None and limit <= state.dispatched:
                break  # nothing new; newer segments wait until this one completes
            written_at = (segment.idx_path or segment.path).stat().st_mtime  # a 3.x segment has no idx
            for stretch in plan_items(segment.path, state.dispatched, limit, self.config.tuning.work_item_bytes):
                item = WorkItem(
                    progress.dispatched_seq,
                    str(segment.path),
                    segment.version,
                    segment.segment_id,
                    stretch.after,
                    stretch.limit,
                )
                run["work"].put(item)
                progress.dispatched_seq += 1
                self.lag.dispatched(item.seq, max(0, self._item_end(segment.path, stretch) - stretch.after), written_at)
                self.log.debug(
                    "work item handed out", seq=item.seq, segment=item.segment_id, after=item.after, limit=item.limit
                )
            state.dispatched = WHOLE_SEGMENT if limit is None else limit
            handed = True
            if limit is not None:
                break  # still being written: newer segments wait
        return handed

    @staticmethod
    def _item_end(path: Path, stretch: Stretch) -> int:
        """Where a work item ends, for the lag in bytes; a segment whose sections could not be found
        (its parser reports why) counts its file's size."""
        if stretch.end is not None:
            return stretch.end
        try:
            return path.stat().st_size
        except OSError:
            return stretch.after

    def _report_vanished(self, tracked: dict[int, Tracked], present: set[int]) -> None:
        """Segments with CDC data gone from cdc_raw before all of them was handed out: Cassandra 4.1+
        with ``cdc_block_writes: false`` deletes the oldest CDC segments when cdc_raw is full (an
        operator may, too). Their changes after what was handed out are lost to the sinks: said and
        counted, never passed over silently. Every segment gone is forgotten: a 4.0+ node's links of
        segments without CDC data come and go all day."""
        for state in [t for t in tracked.values() if t.segment_id not in present]:
            if state.holds_cdc and state.dispatched < WHOLE_SEGMENT:
                self._lost(state.segment_id, state.dispatched)
            del tracked[state.segment_id]

    def _check_resume_segment(self, resume: tuple[int, int]) -> None:
        """The segment the sinks' oldest checkpoint is in the middle of must still be there: cdcfast
        deletes a segment only once every sink has all of it."""
        if resume[0] < 0 or resume[1] >= WHOLE_SEGMENT or not self.cdc_raw.exists():
            return
        if resume[0] not in {s.segment_id for s in discover([self.cdc_raw])}:
            self._lost(resume[0], resume[1])

    def _lost(self, segment_id: int, after: int) -> None:
        metrics.record_read_issue("segment_deleted")
        self.log.error(
            "segment deleted before it was delivered: its changes after this position, if any, are lost to "
            "the sinks (Cassandra deletes CDC segments when cdc_raw is full and cdc_block_writes is false)",
            segment=segment_id,
            lost_after=after,
        )

    def _drain_status(self, run: dict[str, Any], progress: Progress) -> None:
        while True:
            try:
                message = run["status"].get_nowait()
            except queue.Empty:
                return
            self._on_message(message, progress, run)

    def _on_message(self, message: tuple, progress: Progress, run: dict[str, Any] | None = None) -> None:
        kind, sink = message[0], message[1]
        if kind == "applied":
            _, _, seq, position, count = message
            self.made_progress = True
            self.lag.applied(sink, seq)
            progress.acked[sink] = seq
            progress.delivered[sink] = tuple(position)
            progress.events[sink] = progress.events.get(sink, 0) + count
        elif kind == "down":
            _, _, error_class, reason = message
            progress.down[sink] = SinkDown(error_class, reason)
            progress.last_error[sink] = reason
            self.health.failing(f"writer-{sink}", reason, reachable=False)
            metrics.set_sink_up(sink, False)
            self.log.error("sink down: the other sinks go on", sink=sink, error=reason, error_class=error_class)
        elif kind == "recovered":
            raise SinkRecovered(sink)
        elif kind == "error":
            progress.last_error[sink] = message[2]
            self.health.failing(f"writer-{sink}", message[2], reachable=False)
            metrics.set_sink_up(sink, False)
            if run is not None:
                self._write_status(run, progress)
            raise PipelineFailed(f"sink {sink}: {message[2]}")

    def _publish(self, tracked: dict[int, Tracked], progress: Progress) -> None:
        self.health.beat("supervisor")
        self.lag.publish()
        for sink in self.config.sinks:
            self.health.update(f"writer-{sink.name}", lag_seconds=self.lag.lag(sink.name)[0])
        used, total = metrics.cdc_raw_usage(self.cdc_raw, self.source.cdc_total_space)
        metrics.set_cdc_raw(used, total)
        filling = used > CDC_RAW_WARNING * total
        if filling and not self.warned_cdc_raw:
            self.log.warning(
                "cdc_raw is filling: Cassandra refuses writes to CDC tables once it is full",
                used_bytes=used,
                cdc_total_space=total,
                percent=round(100 * used / total, 1),
            )
        self.warned_cdc_raw = filling
        # Pending: holds CDC data some sink's checkpoint is not past yet (what keeps it in cdc_raw).
        floor = min(progress.delivered.values(), default=(-1, -1))
        metrics.set_segments_pending(
            sum(1 for t in tracked.values() if t.holds_cdc and (t.segment_id, WHOLE_SEGMENT) > floor)
        )

    def _write_status(self, run: dict[str, Any], progress: Progress) -> None:
        """``<state_dir>/status.json``, what ``cdcfast status`` shows next to the sinks' own state."""
        processes = [*run["parsers"], *run["writers"].values()]
        document = {
            "node": self.source.node,
            "updated_at": time.time(),
            "started_at": progress.started,
            "supervisor_pid": os.getpid(),
            "processes": [{"name": p.name, "pid": p.pid, "alive": p.is_alive()} for p in processes],
            "sinks": {
                s.name: {
                    "checkpoint": list(progress.delivered.get(s.name, (-1, -1))),
                    "events_written": progress.events.get(s.name, 0),
                    "events_per_s": round(progress.events.get(s.name, 0) / max(1.0, time.time() - progress.started), 1),
                    "last_error": progress.last_error.get(s.name),
                    "down": progress.down[s.name].error_class if s.name in progress.down else None,
                }
                for s in self.config.sinks
            },
            "work_items": progress.dispatched_seq,
        }
        path = Path(self.config.state_dir) / "status.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document))
        temporary.replace(path)

    def _check_children(self, run: dict[str, Any]) -> None:
        for process in [*run["parsers"], *run["writers"].values()]:
            if not process.is_alive():
                code = process.exitcode
                name = process.name.removeprefix("cdcfast-")
                raise PipelineFailed(
                    f"{process.name} exited with code {code}", killed=code is not None and code < 0, process=name
                )

    def _clean(self, tracked: dict[int, Tracked], resume: tuple[int, int], progress: Progress) -> None:
        """Delete segments that are COMPLETED and delivered to every sink."""
        if not progress.delivered:
            return
        floor = min(progress.delivered.values())
        for segment in discover([self.cdc_raw]) if self.cdc_raw.exists() else []:
            if not segment.holds_cdc or (segment.segment_id, WHOLE_SEGMENT) > floor:
                continue
            if not segment.cdc_index().completed:
                continue
            for path in [p for p in (segment.path, segment.idx_path) if p is not None]:  # 3.x: no idx
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            tracked.pop(segment.segment_id, None)
            self.log.info("segment delivered to every sink: deleted", segment=segment.segment_id)
