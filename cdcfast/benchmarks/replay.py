"""Segments made durable one sync at a time in a fresh ``cdc_raw``, as a node's commit log does.

The input is a folder of finished segments (``cdcfast generate``'s). Each segment's sections (one
per sync of the generator's clock) are found by walking its sync-marker chain. :class:`Replay`
hard-links a segment into the target folder when its first section is released and then rewrites
its ``_cdc.idx`` as Cassandra does at each sync: the logical offset of the last released section,
then ``COMPLETED`` once the whole segment is out. Every release is recorded with its wall-clock
time and the number of change events it made durable, and so is each section it released (a
section's events are all delivered once a checkpoint reaches its end): latency is measured from
there, section by section.
"""

from __future__ import annotations

import bisect
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from cdcfast.commitlog.segment import discover, section_bounds
from cdcfast.errors import ConfigError
from cdcfast.supervisor.messages import WHOLE_SEGMENT


@dataclass
class InputSegment:
    """One segment of the input: its sections' logical ends and change events per section."""

    path: Path
    version: int
    segment_id: int
    section_ends: list[int]  # logical offsets, ascending; the last one is the segment's end
    file_bytes: int
    section_events: list[int] = field(default_factory=list)  # filled in by counting the events

    @property
    def logical_bytes(self) -> int:
        return self.section_ends[-1] if self.section_ends else 0

    @property
    def events(self) -> int:
        return sum(self.section_events)

    def count_events(self, positions: list[int]) -> None:
        """Events per section from the (ascending) positions of the segment's events."""
        counts, previous = [], 0
        for end in self.section_ends:
            upto = bisect.bisect_right(positions, end)
            counts.append(upto - previous)
            previous = upto
        counts[-1] += len(positions) - previous  # none expected: positions never pass the chain's end
        self.section_events = counts


def input_segments(folder: Path) -> list[InputSegment]:
    """The segments of ``folder`` in order, with their sections (events are counted later)."""
    out = []
    for segment in discover([folder]):
        ends = section_bounds(segment.path)
        if ends:
            out.append(
                InputSegment(segment.path, segment.version, segment.segment_id, ends, segment.path.stat().st_size)
            )
    if not out:
        raise ConfigError(f"{folder}: no commit log segments with data")
    return out


@dataclass(frozen=True)
class Release:
    """One idx advance: at ``at`` (epoch seconds), segment ``segment_id`` durable up to ``position``
    (``WHOLE_SEGMENT`` when COMPLETED), making ``events`` more change events readable."""

    at: float
    segment_id: int
    position: int
    events: int
    logical_bytes: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.segment_id, self.position)


class Replay:
    """Releases the input into ``target`` (an empty folder the pipeline watches as its cdc_raw)."""

    def __init__(self, segments: list[InputSegment], target: Path) -> None:
        self.segments = segments
        self.target = target
        self.target.mkdir(parents=True, exist_ok=True)
        self.releases: list[Release] = []  # one per idx advance
        self.sections: list[Release] = []  # one per section made durable, keyed by its end
        self.total_events = sum(s.events for s in segments)
        self.total_bytes = sum(s.logical_bytes for s in segments)
        self.released_events = 0
        self._segment = 0  # index of the segment being released
        self._section = 0  # sections of it released so far
        self._linked: set[int] = set()

    @property
    def done(self) -> bool:
        return self._segment >= len(self.segments)

    def release_all(self) -> None:
        """Everything at once, every segment COMPLETED (a backlog, for throughput)."""
        while not self.done:
            segment = self.segments[self._segment]
            self._release(segment, len(segment.section_ends), completed=True)

    def release_until(self, events: float) -> None:
        """Whole sections, in order, until ``events`` change events are durable in total (a sync)."""
        while not self.done:
            segment = self.segments[self._segment]
            count = self._section
            upto = self.released_events
            while count < len(segment.section_ends) and upto + segment.section_events[count] <= events:
                upto += segment.section_events[count]
                count += 1
            if count == self._section:
                return
            self._release(segment, count, completed=count == len(segment.section_ends))

    def _release(self, segment: InputSegment, count: int, completed: bool) -> None:
        first = self._section
        if segment.segment_id not in self._linked:
            link(segment.path, self.target / segment.path.name)
            self._linked.add(segment.segment_id)
        end = segment.section_ends[count - 1]
        start = segment.section_ends[first - 1] if first else 0
        write_idx(self.target / segment.path.name.replace(".log", "_cdc.idx"), end, completed)
        events = sum(segment.section_events[first:count])
        at = time.time()
        self.releases.append(Release(at, segment.segment_id, WHOLE_SEGMENT if completed else end, events, end - start))
        for n in range(first, count):
            section_start = segment.section_ends[n - 1] if n else 0
            ends_at = segment.section_ends[n]
            self.sections.append(
                Release(at, segment.segment_id, ends_at, segment.section_events[n], ends_at - section_start)
            )
        self.released_events += events
        self._section = count
        if completed:
            self._segment += 1
            self._section = 0


def link(source: Path, target: Path) -> None:
    """Hard link (no copy, and deleting the link keeps the input); a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_idx(path: Path, offset: int, completed: bool) -> None:
    """The idx as Cassandra leaves it after a sync (``COMPLETED`` once the segment is closed);
    replaced atomically, so the pipeline never reads half of it."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(str(offset) + ("\nCOMPLETED" if completed else ""))
    os.replace(temporary, path)
