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
from typing import Any

from cdcfast.commitlog import load_schema
from cdcfast.config import PipelineConfig
from cdcfast.events import ChangeEvent
from cdcfast.log import get_logger
from cdcfast.observe import metrics, tracing
from cdcfast.sinks import open_sink
from cdcfast.sinks.errors import ErrorClass, classify
from cdcfast.sinks.migrate import reload_schema
from cdcfast.supervisor.isolate import Isolation, apply_isolating
from cdcfast.supervisor.messages import BATCH_DECODER, EventBatch, as_decoded, schema_fingerprint
from cdcfast.supervisor.ring import Ring, RingClosed
from cdcfast.supervisor.signals import become_child_process


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """A random delay in [0, min(cap, base * 2**attempt)] (AWS's "full jitter")."""
    return random.uniform(0, min(cap, base * 2**attempt))


class Writer:
    def __init__(self, config: PipelineConfig, sink_index: int, status: mp.Queue) -> None:
        spec = config.sinks[sink_index]
        self.name = spec.name
        self.source = config.sources[0]
        self.node = self.source.node
        self.tuning = config.tuning
        self.sink = open_sink(
            spec.kind,
            spec.dsn,
            spec.name,
            hypertables=getattr(spec, "hypertables", None),
            dropped_columns=spec.dropped_columns,
            auto_migrate=spec.auto_migrate,
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
        """(Re)connect, create missing tables and read the checkpoint the sink really has."""
        await self.disconnect()
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
    async def apply(self, batch: EventBatch) -> None:
        done = self.checkpoint or (-1, -1)
        events = [e for e in batch.events if (e.segment_id, e.position) > done]  # already delivered: skip
        tables = self.tables()
        if batch.schema not in self.fingerprints or any((e.keyspace, e.table) not in tables for e in events):
            # The parser decoded with a schema this writer has not seen: a table or column created
            # since, cdc switched on, a table dropped or re-created. Tables gone from the schema stay
            # (their late mutations still apply); the sink creates, migrates and marks its tables
            # before the first event that needs them.
            self.schema = reload_schema(self.source.schema, self.schema)
            self.fingerprints |= {batch.schema, schema_fingerprint(self.schema)}
            tables = self.tables()
            await self.sink.prepare(self.schema)
        events = as_decoded(events, batch.table_ids, self.schema)
        position = (batch.segment_id, batch.position)
        if position > done:
            started = time.monotonic()
            self.sink.dead_lettered = []  # what an earlier, failed attempt stored was rolled back or is kept again
            isolation = None
            with tracing.span("cdcfast.write", parent=batch.trace, sink=self.name, events=len(events)):
                try:
                    await self.sink.apply(events, tables, self.node, position)  # with its checkpoint
                except Exception as exc:  # noqa: BLE001 - classified; only poison is handled here
                    if classify(exc) is not ErrorClass.POISON:
                        raise
                    # A change the warehouse itself refused: find it, dead-letter it, apply the rest.
                    isolation = await apply_isolating(self.sink, events, tables, self.node, position, exc, self.log)
            self.checkpoint = position
            written = await self._count_dead_letters(events, batch, isolation)
            metrics.record_write(self.name, metrics.events_by_table(written), 0, time.monotonic() - started)
            self.log.debug(
                "batch applied",
                events=len(events),
                seconds=round(time.monotonic() - started, 3),
                segment=batch.segment_id,
                position=batch.position,
            )
            self.item_events += len(written)
        if batch.final:
            self.status.put(("applied", self.name, batch.seq, position, self.item_events))
            self.item_events = 0

    async def _count_dead_letters(
        self, events: list[ChangeEvent], batch: EventBatch, isolation: Isolation | None
    ) -> list[ChangeEvent]:
        """Report the changes this batch sent to the dead letter queue (one warning, with what
        isolating them took if the warehouse refused them at apply time; the poison error count; the
        queue's depth); the others, which were written."""
        # By event id: parts rolled back while poison was isolated may have stored some twice.
        letters = list({d.event.event_id: d for d in self.sink.dead_lettered}.values())
        if not letters:
            return events
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
            segment=batch.segment_id,
            position=batch.position,
            **isolated,
        )
        dead = {d.event.event_id for d in letters}
        return [e for e in events if e.event_id not in dead]

    async def apply_with_retries(self, batch: EventBatch) -> None:
        """Apply, retrying transient failures; if they persist (or the failure is not transient), the
        sink goes down and this batch waits in cdc_raw for the catch-up."""
        for attempt in range(self.tuning.retry_attempts):
            try:
                if not self.connected:
                    await self.connect()
                await self.apply(batch)
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
                    segment=batch.segment_id,
                    position=batch.position,
                )
                await self.disconnect()
                await asyncio.sleep(delay)

    async def run(self, rings: list[Ring]) -> None:
        """Apply batches in work-item order, whichever parser's ring they arrive in."""
        await self.start()
        pending: list[tuple[int, int, EventBatch]] = []
        next_seq = 0
        open_rings = list(rings)
        while open_rings or pending:
            progressed = False
            for ring in list(open_rings):
                try:
                    message = ring.get(timeout=0)
                except RingClosed:
                    open_rings.remove(ring)
                    continue
                if message is not None:
                    batch = BATCH_DECODER.decode(message)
                    heapq.heappush(pending, (batch.seq, batch.part, batch))
                    progressed = True
            while pending and pending[0][0] == next_seq:
                _, _, batch = heapq.heappop(pending)
                if self.down is None:
                    await self.apply_with_retries(batch)
                # else: dropped here, kept in cdc_raw: the sink's checkpoint is still before it
                if batch.final:
                    next_seq += 1
                    self.item_events = 0  # also when dropped while the sink is down
                progressed = True
            if self.down is not None:
                await self.probe()
            if not open_rings and pending and pending[0][0] != next_seq:
                self.log.error("work items missing at shutdown", expected=next_seq, pending=pending[0][0])
                break
            if not progressed:
                await asyncio.sleep(0.002)
        await self.disconnect()


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
