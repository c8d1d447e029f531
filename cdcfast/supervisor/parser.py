"""Parser worker process: decodes the work items it is handed, masks, and publishes batches.

Each worker has one ring per writer; a full ring blocks it, which is how a slow sink slows reading
instead of growing memory.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import msgspec

from cdcfast.commitlog import CommitLogReader, ReadRange, SegmentFile, discover, load_schema
from cdcfast.commitlog.reader import NOT_FATAL
from cdcfast.config import PipelineConfig
from cdcfast.events import TRUNCATE, ChangeEvent, events_from_batch
from cdcfast.log import get_logger
from cdcfast.observe import metrics, tracing
from cdcfast.supervisor.collector import Collector
from cdcfast.supervisor.messages import (
    BATCH_ENCODER,
    WHOLE_SEGMENT,
    EventBatch,
    WorkItem,
    decoded_table_ids,
    schema_fingerprint,
)
from cdcfast.supervisor.ring import Ring
from cdcfast.supervisor.schema_watch import SchemaWatcher
from cdcfast.supervisor.signals import become_child_process

AUDIT_INTERVAL = 60.0  # seconds between masking audit records
SCHEMA_RECHECK = 30.0  # seconds before an unknown table id makes the parser read the schema again
SCHEMA_POLL = 3.0  # seconds between cheap looks at the schema source (cdc switched on, new tables)


class Parser:
    def __init__(self, config: PipelineConfig, worker: int) -> None:
        self.config = config
        self.source = config.sources[0]
        self.log = get_logger("parser", worker=worker, node=self.source.node)
        self.schema = load_schema(self.source.schema)
        self.fingerprint = schema_fingerprint(self.schema)
        self.masker = None
        if config.masking is not None:
            from cdcfast.transform.masking import Masker, MaskingRules, MaskingSecrets

            self.masker = Masker(MaskingRules.load(config.masking.rules, self.schema), MaskingSecrets.from_env())
        self.batch_size = config.tuning.batch_size
        self.audited_at = time.monotonic()
        self.cdc_tables: set[tuple[str, str]] | None = None  # computed from the schema on first use
        self.unknown_checked: dict[str, float] = {}  # unknown table id -> when the schema was last read for it
        self.watcher = SchemaWatcher(self.source.schema)
        self.watched_at = time.monotonic()
        # Tables whose cdc was seen switched off: when it was noticed (µs). Their changes written
        # before that were made while cdc may still have been on, and are still captured.
        self.cdc_off_since: dict[tuple[str, str], int] = {}

    def reload_schema(self) -> None:
        """Read the schema again; tables it no longer has stay known (their late mutations decode)."""
        before = {(t.keyspace, t.name) for t in self.schema.cdc_tables()}
        self.schema = self.watcher.reload(self.schema)
        self.fingerprint = schema_fingerprint(self.schema)
        self.cdc_tables = None
        now = {(t.keyspace, t.name) for t in self.schema.cdc_tables()}
        noticed = int(time.time() * 1_000_000)
        for table in before - now:
            self.cdc_off_since.setdefault(table, noticed)
        for table in now:
            self.cdc_off_since.pop(table, None)

    def follow_schema(self) -> None:
        """A cheap look at the schema source now and then: changes that bring no unknown id (cdc
        switched on or off, a new table) are noticed too."""
        now = time.monotonic()
        if now - self.watched_at >= SCHEMA_POLL:
            self.watched_at = now
            if self.watcher.changed():
                self.log.info("schema source changed: reading it again")
                self.reload_schema()

    def events(self, item: WorkItem) -> list[ChangeEvent]:
        segment = SegmentFile(Path(item.path), item.version, item.segment_id, None)
        self.follow_schema()
        for attempt in range(2):
            reader = CommitLogReader(self.schema, policy=self.source.on_error)
            with tracing.span("cdcfast.read", segment=item.segment_id, after=item.after) as read:
                events = [
                    event
                    for batch in reader.read_segment(segment, ReadRange(item.after, item.limit))
                    for event in events_from_batch(batch)
                ]
                events = self._captured(events)
                read.set(events=len(events), bytes=reader.stats.mutation_bytes)
            if attempt or not self._schema_may_be_stale(reader):
                break
            # A table or column created since the schema was read: read the schema again, then the item.
            self.reload_schema()
            self.watcher.seen = self.watcher.signature()
        for table_id, count in reader.stats.unknown_tables.items():
            self.log.warning(
                "mutations of a table not in the schema skipped",
                table_id=table_id,
                count=count,
                segment=item.segment_id,
            )
        metrics.record_read(metrics.events_by_table(events), reader.stats.mutation_bytes)
        for issue in reader.issues:  # of the attempt kept, so a re-read item is reported once
            if issue.kind not in NOT_FATAL:
                self.log.warning("skipped damaged data", issue=str(issue), segment=item.segment_id)
                metrics.record_read_issue(issue.kind)
        if reader.stats.unknown_tables:
            metrics.record_read_issue("unknown_table", sum(reader.stats.unknown_tables.values()))
        if self.masker is not None:
            with tracing.span("cdcfast.mask", events=len(events)):
                events = [self.masker.mask(e) for e in events]
            metrics.record_masking_audit(self.masker.audit)
            if time.monotonic() - self.audited_at > AUDIT_INTERVAL:
                self.audit()
        if any(e.op == TRUNCATE for e in events):
            events = self._with_raced(events, item)
        return events

    def _with_raced(self, events: list[ChangeEvent], item: WorkItem) -> list[ChangeEvent]:
        """Each truncation with the writes that raced it (docs/truncate.md): this node's changes of the
        table after its recorded position and before its record, read in this work item or, when the
        recorded position is before it, read again from the segments (masked like the rest)."""
        out: list[ChangeEvent] = []
        for event in events:
            if event.op == TRUNCATE:
                recorded = (event.truncated_segment_id, event.truncated_position)
                raced = self._read_again(event, recorded, item) if recorded < (item.segment_id, item.after) else []
                raced += [
                    e
                    for e in out
                    if e.op != TRUNCATE
                    and (e.keyspace, e.table) == (event.keyspace, event.table)
                    and (e.segment_id, e.position) > recorded
                ]
                self.log.info(
                    "TRUNCATE: applied to the sinks",
                    keyspace=event.keyspace,
                    table=event.table,
                    segment=event.segment_id,
                    position=event.position,
                    recorded=list(recorded),
                    raced=len(raced),
                    truncated_at_ms=event.truncated_at,
                )
                event = msgspec.structs.replace(event, raced=raced)
            out.append(event)
        return out

    def _read_again(self, truncation: ChangeEvent, recorded: tuple[int, int], item: WorkItem) -> list[ChangeEvent]:
        """The table's changes between ``recorded`` and the start of ``item`` (earlier work items'),
        read again from the segments still in cdc_raw. A segment gone already is reported: the writes
        that raced the TRUNCATE there are then missing from the sinks."""
        folder = Path(item.path).parent
        segments = {s.segment_id: s for s in discover([folder]) if recorded[0] <= s.segment_id <= item.segment_id}
        segments.setdefault(item.segment_id, SegmentFile(Path(item.path), item.version, item.segment_id, None))
        out: list[ChangeEvent] = []
        for segment_id in range(recorded[0], item.segment_id + 1):
            segment = segments.get(segment_id)
            if segment is None:
                if segment_id == recorded[0]:
                    metrics.record_read_issue("truncate_race_unavailable")
                    self.log.warning(
                        "TRUNCATE: the segment of its recorded position is gone; writes that raced it may be "
                        "missing from the sinks",
                        keyspace=truncation.keyspace,
                        table=truncation.table,
                        segment=segment_id,
                        position=recorded[1],
                    )
                continue
            start = recorded[1] if segment_id == recorded[0] else 0
            limit = item.after if segment_id == item.segment_id else None
            reader = CommitLogReader(self.schema, policy="skip")
            out += [
                e
                for batch in reader.read_segment(segment, ReadRange(start, limit))
                for e in events_from_batch(batch)
                if (e.keyspace, e.table) == (truncation.keyspace, truncation.table)
                and e.op != TRUNCATE
                and recorded < (e.segment_id, e.position) <= (item.segment_id, item.after)
            ]
        if self.masker is not None:
            out = [self.masker.mask(e) for e in out]
        return out

    def _schema_may_be_stale(self, reader: CommitLogReader) -> bool:
        """True for a column the schema does not know, or a table id not looked up again lately
        (system tables are never in the schema: do not read it again for each of their mutations)."""
        if any(issue.kind == "decode" and issue.schema_may_be_stale for issue in reader.issues):
            return True
        now = time.monotonic()
        fresh = [t for t in reader.stats.unknown_tables if now - self.unknown_checked.get(t, -1e9) > SCHEMA_RECHECK]
        for table_id in fresh:
            self.unknown_checked[table_id] = now
        return bool(fresh)

    def audit(self) -> None:
        """Log what was masked since the last audit: table, column, classification, count; never a value."""
        if self.masker is not None:
            self.masker.audit_log(self.log, reset=True)
        self.audited_at = time.monotonic()

    def _captured(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        """The changes of CDC tables. Changes of a user table without cdc make the parser look at the
        schema source first: ``cdc = true`` may have come since its last look, and the writes right
        after it must not be lost waiting for the next poll."""
        kept: list[ChangeEvent] = []
        user_table_skipped = False
        for event in events:
            if self._is_cdc(event):
                kept.append(event)
            elif not event.keyspace.startswith("system"):
                user_table_skipped = True
        if user_table_skipped:
            if self.watcher.changed():
                self.log.info("schema source changed: reading it again")
                self.reload_schema()
                kept = [e for e in events if self._is_cdc(e)]
        return kept

    def _is_cdc(self, event: ChangeEvent) -> bool:
        if self.cdc_tables is None:
            self.cdc_tables = {(t.keyspace, t.name) for t in self.schema.cdc_tables()}
        table = (event.keyspace, event.table)
        if table in self.cdc_tables:
            return True
        off_since = self.cdc_off_since.get(table)
        return off_since is not None and event.ts < off_since

    def batches(self, item: WorkItem) -> list[EventBatch]:
        with tracing.span("cdcfast.batch", seq=item.seq, segment=item.segment_id, after=item.after) as span:
            events = self.events(item)
            span.set(events=len(events))
            trace = tracing.context(span)
        end = item.limit if item.limit is not None else WHOLE_SEGMENT
        parts = split_at_mutations(events, self.batch_size)
        out = []
        for number, part in enumerate(parts):
            final = number == len(parts) - 1
            position = end if final else part[-1].position
            ids = decoded_table_ids(part, self.schema)
            batch = EventBatch(item.seq, number, final, item.segment_id, position, part, trace, self.fingerprint, ids)
            out.append(batch)
        return out


def split_at_mutations(events: list[ChangeEvent], size: int) -> list[list[ChangeEvent]]:
    """Parts of about ``size`` events that never split one mutation: events of one mutation share
    its position, and a checkpoint at that position must cover all of them."""
    parts: list[list[ChangeEvent]] = [[]]
    for event in events:
        if len(parts[-1]) >= size and parts[-1][-1].position != event.position:
            parts.append([])
        parts[-1].append(event)
    return parts


def parser_main(config: PipelineConfig, worker: int, work: mp.Queue, ring_names: list[str]) -> None:
    from cdcfast.supervisor.supervisor import write_pid

    write_pid(config, f"parser-{worker}")
    become_child_process()
    tracing.setup(f"parser-{worker}")
    parser = Parser(config, worker)
    rings = [Ring(name) for name in ring_names]
    collector = Collector()  # the events built hold no cycles (see .collector)
    try:
        while True:
            item = work.get()
            if item is None:
                break
            for batch in parser.batches(item):
                message = BATCH_ENCODER.encode(batch)
                for ring in rings:
                    ring.put(message)
            collector.now_and_then()
        parser.audit()
    finally:
        collector.resume()
        parser.watcher.close()
        tracing.shutdown()
        for ring in rings:
            ring.close()
