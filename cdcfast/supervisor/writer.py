"""Writer process: one per warehouse. Drains its rings in commit log order and applies each batch
with its checkpoint, reporting progress to the supervisor.

Sink failures are classified (:mod:`cdcfast.sinks.errors`). A transient error retries the batch
with full-jitter backoff, reconnecting (re-reading the checkpoint, so a commit whose reply was lost
is not applied twice). A poison error (a change the warehouse refused) is isolated: the refused
changes go to the dead-letter queue and the rest of the batch is applied (:mod:`.isolate`). If the
retries run out, or the error is permanent, the sink is *down*: the
writer tells the supervisor, keeps draining its rings without applying (so the other sinks keep
flowing and memory stays flat; the sink's checkpoint holds and cdc_raw keeps the data), and probes
the sink with growing delays. When a probe gets through, it reports "recovered" and the supervisor
restarts the pipeline from the oldest checkpoint, which catches this sink up.
"""

from __future__ import annotations

import asyncio
import heapq
import multiprocessing as mp
import random
import time
from collections.abc import Awaitable
from typing import Any, NamedTuple

from cdcfast.commitlog import load_schema
from cdcfast.config import PipelineConfig
from cdcfast.events import ChangeEvent
from cdcfast.log import get_logger
from cdcfast.observe import metrics, tracing
from cdcfast.sinks import cut, open_sink
from cdcfast.sinks.errors import ErrorClass, classify, unanswered
from cdcfast.sinks.migrate import reload_schema
from cdcfast.supervisor.collector import Collector
from cdcfast.supervisor.isolate import Isolation, apply_isolating
from cdcfast.supervisor.messages import BATCH_DECODER, EventBatch, as_decoded, schema_fingerprint
from cdcfast.supervisor.ring import Ring, RingClosed
from cdcfast.supervisor.signals import become_child_process


class Watch(NamedTuple):
    """What the writers' watch logs about work running long: each period, and when it cuts."""

    running: str
    cut: str


WRITING = Watch("sink write still running", "sink not answering: cutting the write's connection")
CONNECTING = Watch("sink still connecting", "sink not answering: cutting the connection being made")


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """A random delay in [0, min(cap, base * 2**attempt)] (AWS's "full jitter")."""
    return random.uniform(0, min(cap, base * 2**attempt))


def undelivered(events: list[ChangeEvent], done: tuple[int, int]) -> list[ChangeEvent]:
    """The events after the checkpoint ``done`` (all of them, without a look at each, when the first is)."""
    if not events or (events[0].segment_id, events[0].position) > done:
        return events  # in commit log order: the first after the checkpoint, all are
    return [e for e in events if (e.segment_id, e.position) > done]


class Writer:
    def __init__(self, config: PipelineConfig, sink_index: int, status: mp.Queue) -> None:
        spec = config.sinks[sink_index]
        self.name = spec.name
        self.source = config.sources[0]
        self.node = self.source.node
        self.tuning = config.tuning
        self.write_limit = spec.batch_size or config.tuning.write_batch_size  # most events per write
        self.sink = open_sink(
            spec.kind,
            spec.dsn,
            spec.name,
            hypertables=getattr(spec, "hypertables", None),
            dropped_columns=spec.dropped_columns,
            auto_migrate=spec.auto_migrate,
            tcp_timeout_seconds=config.tuning.tcp_timeout_seconds,
        )
        self.status = status
        self.log = get_logger("writer", sink=spec.name, node=self.node)
        self.schema = load_schema(self.source.schema)
        self.fingerprints = {schema_fingerprint(self.schema)}  # schemas this writer has caught up with
        self.checkpoint: tuple[int, int] | None = None
        self.connected = False
        self.down: ErrorClass | None = None  # why the sink is down, while it is
        self.probes = 0
        self.next_probe = 0.0
        self.recovered = False
        self.item_events = 0  # events of the current work item's parts so far (acked with its final part)

    def tables(self) -> dict[tuple[str, str], Any]:
        return {(t.keyspace, t.name): t for t in self.schema.tables.values()}

    # -- the sink's connection ------------------------------------------------------------------
    async def connect(self) -> None:
        """(Re)connect, create missing tables and read the checkpoint the sink really has; watched
        as a write is (a server that accepts connections and never answers)."""
        await self.disconnect()
        await self._watched(self._connect(), CONNECTING)

    async def _connect(self) -> None:
        await self.sink.connect()
        self.connected = True
        await self.sink.prepare(self.schema)
        self.checkpoint = await self.sink.checkpoint(self.node)
        metrics.set_dlq_depth(self.name, await self.sink.dlq_depth())

    async def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            try:
                await self.sink.close()
            except Exception:  # noqa: BLE001 - closing a broken connection: nothing to save
                pass

    async def start(self) -> None:
        try:
            await self.connect()
        except Exception as exc:  # noqa: BLE001 - every sink error is classified
            await self.go_down(exc, classify(exc))
            self.status.put(("ready", self.name, None, False))
            return
        self.status.put(("ready", self.name, self.checkpoint, True))

    async def go_down(self, exc: BaseException, kind: ErrorClass) -> None:
        await self.disconnect()
        self.down = kind
        self.probes = 0
        self.next_probe = time.monotonic() + full_jitter(0, 1.0, self.tuning.retry_cap_seconds) + 1.0
        reason = f"{type(exc).__name__}: {exc}"
        metrics.record_error(self.name, kind.value)
        self.log.error(
            "sink down: holding its checkpoint, the other sinks go on",
            error=reason,
            error_class=kind.value,
            checkpoint=list(self.checkpoint) if self.checkpoint else None,
        )
        self.status.put(("down", self.name, kind.value, reason))

    async def probe(self) -> None:
        """While down: try the sink again now and then; report when it answers."""
        if self.recovered or time.monotonic() < self.next_probe:
            return
        try:
            await self.connect()
        except Exception as exc:  # noqa: BLE001 - still down
            await self.disconnect()
            self.probes += 1
            delay = full_jitter(self.probes, 1.0, self.tuning.retry_cap_seconds)
            self.next_probe = time.monotonic() + max(1.0, delay)
            self.log.warning("sink still down", error=f"{type(exc).__name__}: {exc}", next_probe_in=round(delay, 1))
            return
        self.recovered = True
        self.log.info("sink reachable again", checkpoint=list(self.checkpoint) if self.checkpoint else None)
        self.status.put(("recovered", self.name, self.checkpoint))

    # -- applying batches -------------------------------------------------------------------------
    async def apply(self, batches: list[EventBatch]) -> None:
        """Write consecutive batches as one write, with the checkpoint of the last; then acknowledge
        each work item whose final part is among them."""
        done = self.checkpoint or (-1, -1)
        tables = self.tables()
        if any(b.schema not in self.fingerprints for b in batches) or any(
            (e.keyspace, e.table) not in tables for b in batches for e in b.events
        ):
            # A parser decoded with a schema this writer has not seen: a table or column created
            # since, cdc switched on, a table dropped or re-created. Tables gone from the schema stay
            # (their late mutations still apply); the sink creates, migrates and marks its tables
            # before the first event that needs them.
            self.schema = reload_schema(self.source.schema, self.schema)
            self.fingerprints |= {b.schema for b in batches} | {schema_fingerprint(self.schema)}
            tables = self.tables()
            await self.sink.prepare(self.schema)
        parts = [  # each batch's events not delivered yet, as their parser decoded them
            as_decoded(undelivered(b.events, done), b.table_ids, self.schema) for b in batches
        ]
        events = [e for part in parts for e in part]
        last = batches[-1]
        position = (last.segment_id, last.position)
        dead: set[bytes] = set()
        if position > done:
            started = time.monotonic()
            self.sink.dead_lettered = []  # what an earlier, failed attempt stored was rolled back or is kept again
            isolation = None
            # the work items whose batches this write takes together with the last one's
            linked = list(dict.fromkeys(b.trace for b in batches if b.trace != last.trace))
            with tracing.span("cdcfast.write", parent=last.trace, links=linked, sink=self.name, events=len(events)):
                try:
                    await self.sink.apply(events, tables, self.node, position)  # with its checkpoint
                except Exception as exc:  # noqa: BLE001 - classified; only poison is handled here
                    if classify(exc) is not ErrorClass.POISON:
                        raise
                    # A change the warehouse itself refused: find it, dead-letter it, apply the rest.
                    isolation = await apply_isolating(self.sink, events, tables, self.node, position, exc, self.log)
            self.checkpoint = position
            dead = await self._count_dead_letters(events, last, isolation)
            written = [e for e in events if e.event_id not in dead] if dead else events
            metrics.record_write(self.name, metrics.events_by_table(written), 0, time.monotonic() - started)
            self.log.debug(
                "batch applied",
                events=len(events),
                batches=len(batches),
                seconds=round(time.monotonic() - started, 3),
                segment=last.segment_id,
                position=last.position,
            )
        for batch, part in zip(batches, parts):
            self.item_events += sum(e.event_id not in dead for e in part) if dead else len(part)
            if batch.final:
                self.status.put(("applied", self.name, batch.seq, (batch.segment_id, batch.position), self.item_events))
                self.item_events = 0

    async def _count_dead_letters(
        self, events: list[ChangeEvent], last: EventBatch, isolation: Isolation | None
    ) -> set[bytes]:
        """Report the changes this write sent to the dead letter queue (one warning, with what
        isolating them took if the warehouse refused them at apply time; the poison error count; the
        queue's depth); their event ids."""
        # By event id: parts rolled back while poison was isolated may have stored some twice.
        letters = list({d.event.event_id: d for d in self.sink.dead_lettered}.values())
        if not letters:
            return set()
        self.sink.dead_lettered = []
        metrics.record_error(self.name, ErrorClass.POISON.value, len(letters))
        metrics.set_dlq_depth(self.name, await self.sink.dlq_depth())
        isolated = {} if isolation is None else {"parts": isolation.parts, "isolation_seconds": isolation.seconds}
        self.log.warning(
            "changes sent to the dead letter queue (cdcfast dlq list)",
            count=len(letters),
            events=len(events),
            tables=sorted({f"{d.event.keyspace}.{d.event.table}" for d in letters}),
            refused=[f"{d.event.qualified_table}@{d.event.segment_id}:{d.event.position}" for d in letters[:10]],
            reason=letters[0].reason,
            segment=last.segment_id,
            position=last.position,
            **isolated,
        )
        return {d.event.event_id for d in letters}

    async def apply_with_retries(self, batches: list[EventBatch]) -> None:
        """Apply, retrying transient failures; if they persist (or the failure is not transient), the
        sink goes down and these batches wait in cdc_raw for the catch-up."""
        for attempt in range(self.tuning.retry_attempts):
            try:
                if not self.connected:
                    await self.connect()
                context = {
                    "events": sum(len(b.events) for b in batches),
                    "segment": batches[-1].segment_id,
                    "position": batches[-1].position,
                }
                await self._watched(self.apply(batches), WRITING, **context)
                return
            except Exception as exc:  # noqa: BLE001 - every sink error is classified
                kind = classify(exc)
                if kind is not ErrorClass.TRANSIENT or attempt == self.tuning.retry_attempts - 1:
                    await self.go_down(exc, kind)
                    return
                metrics.record_error(self.name, kind.value)
                metrics.record_retry(self.name)
                delay = full_jitter(attempt, self.tuning.retry_base_seconds, self.tuning.retry_cap_seconds)
                self.log.warning(
                    "sink write failed: retrying",
                    error=f"{type(exc).__name__}: {exc}",
                    attempt=attempt + 1,
                    retry_in=round(delay, 2),
                    segment=batches[-1].segment_id,
                    position=batches[-1].position,
                )
                await self.disconnect()
                await asyncio.sleep(delay)

    async def _watched(self, work: Awaitable[None], watch: Watch, **context: Any) -> None:
        """``work`` (a write, a connection being made), reported while it runs longer than
        ``write_watch_seconds``: each period a warning with what the sink says it waits on (a
        PostgreSQL lock: who holds it). A sink that cannot say within the period (a frozen server, a
        network dropping everything) has the work's connection cut: the work fails as transient, and
        the retry policy takes over."""
        task = asyncio.ensure_future(work)
        period = self.tuning.write_watch_seconds
        started = time.monotonic()
        try:
            while not (await asyncio.wait({task}, timeout=period))[0]:
                seconds = round(time.monotonic() - started, 1)
                try:
                    waits_on = await asyncio.wait_for(self.sink.waiting_on(), period)
                except Exception as exc:  # noqa: BLE001 - what the server said, or that it said nothing
                    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    if unanswered(exc):
                        if not task.done():
                            self.log.error(watch.cut, error=reason, seconds=seconds, **context)
                            cut(self.sink, task)
                        continue
                    waits_on = {"unknown": reason}  # it answered, with an error: it is there
                self.log.warning(watch.running, sink_waits_on=waits_on, seconds=seconds, **context)
            if task.cancelled():
                raise TimeoutError(f"{watch.cut} after {round(time.monotonic() - started, 1)} s")
            task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def run(self, rings: list[Ring]) -> None:
        """Apply batches in work-item order, whichever parser's ring they arrive in; the batches
        waiting meanwhile go together, up to ``write_limit`` events per write."""
        await self.start()
        collector = Collector()
        pending: list[tuple[int, int, EventBatch]] = []
        group: list[EventBatch] = []  # the next write: consecutive batches, in order
        group_events = 0
        next_seq = 0
        open_rings = list(rings)
        try:
            while open_rings or pending or group:
                collector.now_and_then()
                received = self._receive(open_rings, pending)
                while pending and pending[0][0] == next_seq:
                    size = len(pending[0][2].events)
                    if group and group_events + size > self.write_limit:
                        break
                    _, _, batch = heapq.heappop(pending)
                    group.append(batch)
                    group_events += size
                    if batch.final:
                        next_seq += 1
                full = bool(pending) and pending[0][0] == next_seq  # the next batch waits for another write
                wrote = bool(group) and (full or not received)  # nothing else has arrived: write what is here
                if wrote:
                    if self.down is None:
                        await self.apply_with_retries(group)
                    else:  # dropped here, kept in cdc_raw: the sink's checkpoint is still before it
                        self.item_events = 0
                    group, group_events = [], 0
                if self.down is not None:
                    await self.probe()
                if not open_rings and pending and pending[0][0] != next_seq:
                    self.log.error("work items missing at shutdown", expected=next_seq, pending=pending[0][0])
                    break
                if not (received or wrote):
                    await asyncio.sleep(0.002)
        finally:
            collector.resume()
        await self.disconnect()

    @staticmethod
    def _receive(open_rings: list[Ring], pending: list[tuple[int, int, EventBatch]]) -> bool:
        """One batch from each ring that has one, into ``pending`` (a closed ring leaves
        ``open_rings``); True if any came."""
        received = False
        for ring in list(open_rings):
            try:
                message = ring.get(timeout=0)
            except RingClosed:
                open_rings.remove(ring)
                continue
            if message is not None:
                batch = BATCH_DECODER.decode(message)
                heapq.heappush(pending, (batch.seq, batch.part, batch))
                received = True
        return received


def writer_main(config: PipelineConfig, sink_index: int, ring_names: list[str], status: mp.Queue) -> None:
    from cdcfast.supervisor.supervisor import write_pid

    write_pid(config, f"writer-{config.sinks[sink_index].name}")
    become_child_process()
    tracing.setup(f"writer-{config.sinks[sink_index].name}")
    writer = Writer(config, sink_index, status)
    rings = [Ring(name) for name in ring_names]
    try:
        asyncio.run(writer.run(rings))
    except Exception as exc:
        metrics.record_error(writer.name, "permanent")
        writer.log.error("writer stopped", error=str(exc), error_type=type(exc).__name__)
        status.put(("error", writer.name, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from exc
    finally:
        tracing.shutdown()
        for ring in rings:
            ring.close()
