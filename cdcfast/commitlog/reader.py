"""Read commit log segments into :class:`~cdcfast.commitlog.batch.Batch` objects.

Durability: a segment with a ``_cdc.idx`` is read up to the idx offset, or to the end of its
sync-marker chain once the idx says COMPLETED (format reference §7.3). A segment without an idx is
read to the end of its chain unless ``require_idx`` is set (a live ``cdc_raw``: no idx, nothing
durable known yet).

Damage never stops the reader by default (policy ``skip``): every skipped entry, section or
mutation becomes a :class:`ReadIssue` naming file, segment, offset and, when known, the table.
Policy ``stop`` raises :class:`SegmentError` at the first one instead.

Mutations of tables missing from the schema are skipped and counted per table id. ``system.local``
is always known (:mod:`cdcfast.commitlog.system`: it carries truncation records); a system.local
mutation that still does not decode (a column a newer Cassandra added) is skipped as a
``system_table`` issue, which never stops a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cdcfast import _commitlog
from cdcfast.commitlog.batch import Batch, ReadIssue
from cdcfast.commitlog.schema import Schema
from cdcfast.commitlog.segment import (
    SegmentFile,
    discover,
    open_segment,
    read_descriptor,
    walk_sections,
)
from cdcfast.commitlog.system import SYSTEM_LOCAL_ID, with_system_tables
from cdcfast.errors import ConfigError, EncryptedSegmentError, SegmentError

POLICIES = ("skip", "stop")
NOT_FATAL = ("unknown_table", "system_table")  # skipped under every policy: not damage


@dataclass
class ReadStats:
    segments: int = 0
    mutations: int = 0
    mutation_bytes: int = 0
    issues: int = 0
    unknown_tables: dict[str, int] = field(default_factory=dict)  # table id -> mutations skipped


@dataclass(frozen=True)
class ReadRange:
    """What to read of one segment: entries ending after ``start`` and at most at ``limit``."""

    start: int = 0
    limit: int | None = None  # None: the whole marker chain


class CommitLogReader:
    def __init__(
        self,
        schema: Schema,
        policy: str = "skip",
        batch_mutations: int = 8192,
        require_idx: bool = False,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"error policy {policy!r}: expected one of {', '.join(POLICIES)}")
        self.schema = schema
        self.policy = policy
        self.batch_mutations = batch_mutations
        self.require_idx = require_idx
        self.decoder_schema = _commitlog.DecoderSchema(with_system_tables(schema))
        self.decoder = _commitlog.Decoder(self.decoder_schema)
        self.stats = ReadStats()
        self.issues: list[ReadIssue] = []  # what was skipped, in order (policy "skip")

    # -- public API ----------------------------------------------------------------------------
    def read_paths(self, paths: Iterable[str | Path]) -> Iterator[Batch]:
        """Every durable mutation of the segments in ``paths`` (files or folders), in order."""
        for segment in discover(paths):
            yield from self.read_segment(segment)

    def durable_range(self, segment: SegmentFile) -> ReadRange | None:
        """How far ``segment`` is durable, from its idx; None when nothing is known yet."""
        if not segment.holds_cdc:
            return None if self.require_idx else ReadRange()
        idx = segment.cdc_index()
        if idx.completed:
            return ReadRange()
        if idx.offset is None:
            return None
        return ReadRange(limit=idx.offset)

    def read_segment(self, segment: SegmentFile, read_range: ReadRange | None = None) -> Iterator[Batch]:
        if read_range is None:
            read_range = self.durable_range(segment)
            if read_range is None:
                return
        self.stats.segments += 1
        path = segment.path
        try:
            data = open_segment(path)
        except FileNotFoundError:
            self._issue(ReadIssue("missing", str(path), segment.segment_id, 0, -1, "segment deleted before reading"))
            return
        try:
            if len(data) >= 12 and bytes(data[:12]) == bytes(12):
                return  # pre-allocated and never written
            try:
                descriptor = read_descriptor(path, data)
            except EncryptedSegmentError:
                raise
            except SegmentError as exc:
                self._issue(ReadIssue("header", str(path), segment.segment_id, exc.offset, -1, exc.reason))
                return
            limit = read_range.limit if read_range.limit is not None else 2**62
            for item in walk_sections(path, data, descriptor, read_range.limit, read_range.start):
                if isinstance(item, tuple):
                    offset, detail = item
                    self._issue(ReadIssue("section", str(path), descriptor.segment_id, offset, -1, detail))
                    break
                _, clean = self.decoder.decode_region(
                    item.data,
                    item.start,
                    item.end,
                    item.logical_base,
                    descriptor.segment_id,
                    descriptor.version,
                    descriptor.messaging_version,
                    limit,
                    read_range.start,
                )
                self._collect_issues(path, descriptor.segment_id)
                if self.decoder.pending_mutations >= self.batch_mutations:
                    yield self._take()
            if self.decoder.pending_mutations:
                yield self._take()
        finally:
            if hasattr(data, "close"):
                data.close()

    # -- internals ------------------------------------------------------------------------------
    def _take(self) -> Batch:
        batch = Batch.from_buffers(self.decoder_schema.tables, self.decoder.take())
        self.stats.mutations += batch.mutation_count
        self.stats.mutation_bytes = self.decoder.mutation_bytes
        return batch

    def _collect_issues(self, path: Path, segment_id: int) -> None:
        for kind, offset, position, detail, table in self.decoder.take_issues():
            table_name = self.decoder_schema.tables[table].qualified_name if table >= 0 else ""
            if kind == "decode" and table >= 0 and self.decoder_schema.tables[table].id == SYSTEM_LOCAL_ID:
                kind = "system_table"  # node metadata cdcfast does not know all of: nothing to replicate
            if kind == "unknown_table":
                self.stats.unknown_tables[detail] = self.stats.unknown_tables.get(detail, 0) + 1
                detail = f"mutation of unknown table id {detail} skipped"
            self._issue(ReadIssue(kind, str(path), segment_id, offset, position, detail, table_name))

    def _issue(self, issue: ReadIssue) -> None:
        self.stats.issues += 1
        if self.policy == "stop" and issue.kind not in NOT_FATAL:
            raise SegmentError(issue.path, issue.offset, f"{issue.kind}: {issue.detail}")
        self.issues.append(issue)
