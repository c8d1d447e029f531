"""Writer process: one per warehouse. Drains its rings in commit log order and applies each batch
with its checkpoint, reporting progress to the supervisor."""

from __future__ import annotations

import asyncio
import heapq
import multiprocessing as mp
import time
from typing import Any

from cdcfast.commitlog import load_schema
from cdcfast.config import PipelineConfig
from cdcfast.log import get_logger
from cdcfast.observe import metrics
from cdcfast.sinks import open_sink
from cdcfast.supervisor.messages import BATCH_DECODER, EventBatch
from cdcfast.supervisor.ring import Ring, RingClosed
from cdcfast.supervisor.signals import ignore_stop_signals


class Writer:
    def __init__(self, config: PipelineConfig, sink_index: int, status: mp.Queue) -> None:
        spec = config.sinks[sink_index]
        self.name = spec.name
        self.source = config.sources[0]
        self.node = self.source.node
        self.sink = open_sink(spec.kind, spec.dsn, spec.name)
        self.status = status
        self.log = get_logger("writer", sink=spec.name, node=self.node)
        self.schema = load_schema(self.source.schema)
        self.checkpoint: tuple[int, int] | None = None

    def tables(self) -> dict[tuple[str, str], Any]:
        return {(t.keyspace, t.name): t for t in self.schema.tables.values()}

    async def start(self) -> None:
        await self.sink.connect()
        await self.sink.prepare(self.schema)
        self.checkpoint = await self.sink.checkpoint(self.node)
        self.status.put(("ready", self.name, self.checkpoint))

    async def apply(self, batch: EventBatch) -> None:
        done = self.checkpoint or (-1, -1)
        events = [e for e in batch.events if (e.segment_id, e.position) > done]  # already delivered: skip
        tables = self.tables()
        if any((e.keyspace, e.table) not in tables for e in events):
            self.schema = load_schema(self.source.schema)  # a table created since start
            tables = self.tables()
        position = (batch.segment_id, batch.position)
        if position > done:
            started = time.monotonic()
            await self.sink.apply(events, tables, self.node, position)
            self.checkpoint = position
            metrics.record_write(self.name, metrics.events_by_table(events), 0, time.monotonic() - started)
            self.log.debug(
                "batch applied",
                events=len(events),
                seconds=round(time.monotonic() - started, 3),
                segment=batch.segment_id,
                position=batch.position,
            )
        if batch.final:
            self.status.put(("applied", self.name, batch.seq, position, len(events)))

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
                await self.apply(batch)
                if batch.final:
                    next_seq += 1
                progressed = True
            if not open_rings and pending and pending[0][0] != next_seq:
                self.log.error("work items missing at shutdown", expected=next_seq, pending=pending[0][0])
                break
            if not progressed:
                await asyncio.sleep(0.002)
        await self.sink.close()


def writer_main(config: PipelineConfig, sink_index: int, ring_names: list[str], status: mp.Queue) -> None:
    from cdcfast.supervisor.supervisor import write_pid

    write_pid(config, f"writer-{config.sinks[sink_index].name}")
    ignore_stop_signals()
    writer = Writer(config, sink_index, status)
    rings = [Ring(name) for name in ring_names]
    try:
        asyncio.run(writer.run(rings))
    except Exception as exc:
        metrics.record_error(writer.name, "transient" if isinstance(exc, (OSError, TimeoutError)) else "permanent")
        writer.log.error("writer stopped", error=str(exc), error_type=type(exc).__name__)
        status.put(("error", writer.name, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from exc
    finally:
        for ring in rings:
            ring.close()
