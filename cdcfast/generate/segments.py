"""Writing a stream of mutations into commit log segments on disk, the way a node does.

:class:`SegmentStream` appends entries to the current segment and writes them as one section per
:meth:`~SegmentStream.sync` (Cassandra's periodic sync): the section's data, then its sync marker,
then, with ``idx_every_sync``, the segment's ``_cdc.idx`` with the new durable offset. A segment is
closed when the next entry would not fit in ``segment_size`` logical bytes (its idx then says
``COMPLETED``) and the next one opens with the next id.

* Plain segments are created at their full size (sparse zeros, like Cassandra's memory-mapped
  segments); a zero marker ends the chain until the next section is written over it.
* Compressed segments grow one section at a time: marker, uncompressed length, compressed data
  (format reference §2.4). Offsets (idx, positions) are logical, in uncompressed terms.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cdcfast import _commitlog
from cdcfast.errors import ConfigError
from cdcfast.generate.framing import compress, descriptor_header, sync_marker

SYNC_MARKER = 8
_SIZE = struct.Struct(">i")
_CRC = struct.Struct(">I")


def framed(mutation: bytes) -> bytes:
    """One commit log entry: size, CRC(size), mutation, CRC(size + mutation) (§3)."""
    size = _SIZE.pack(len(mutation))
    size_crc = _commitlog.crc_of(size)
    return b"".join((size, _CRC.pack(size_crc), mutation, _CRC.pack(_commitlog.crc_of(mutation, size_crc))))


@dataclass
class SegmentInfo:
    """What one written segment holds."""

    name: str
    segment_id: int
    logical_bytes: int = 0  # the idx offset: header, markers and entries, uncompressed
    file_bytes: int = 0
    sections: int = 0
    mutations: int = 0
    events: int = 0
    completed: bool = False


@dataclass
class _Open:
    info: SegmentInfo
    fd: int
    path: Path
    idx_path: Path
    file_len: int
    logical_end: int
    pending: list[bytes] = field(default_factory=list)
    pending_len: int = 0
    pending_mutations: int = 0
    pending_events: int = 0


class SegmentStream:
    """Mutations -> segments in ``folder`` (``CommitLog-<version>-<id>.log`` and ``_cdc.idx``)."""

    def __init__(
        self,
        folder: Path,
        version: int = 8,
        compression: str | None = None,
        segment_size: int = 32 * 1024 * 1024,
        first_id: int = 1,
        idx_every_sync: bool = False,
    ) -> None:
        self.folder = folder
        self.version = version
        self.compression = compression
        self.segment_size = segment_size
        self.next_id = first_id
        self.idx_every_sync = idx_every_sync
        self.segments: list[SegmentInfo] = []
        self.closed_logical = 0  # logical bytes of closed segments
        self.closed_file = 0
        self._current: _Open | None = None
        params = {"compressionClass": compression, "compressionParameters": {}} if compression else {}
        self._header_len = len(descriptor_header(version, 0, params))
        self.max_mutation = (segment_size - self._header_len - 3 * SYNC_MARKER) // 2 - 12

    # -- totals -----------------------------------------------------------------------------------
    @property
    def logical_bytes(self) -> int:
        """Logical bytes written so far, pending entries included (what a ``--size`` counts)."""
        current = self._current
        if current is None:
            return self.closed_logical
        return self.closed_logical + current.logical_end + (SYNC_MARKER + current.pending_len if current.pending else 0)

    @property
    def file_bytes(self) -> int:
        current = self._current
        return self.closed_file + (self._file_size(current) if current is not None else 0)

    # -- writing ----------------------------------------------------------------------------------
    def append(self, mutation: bytes, events: int = 1) -> None:
        if len(mutation) > self.max_mutation:
            raise ConfigError(
                f"a mutation of {len(mutation)} bytes does not fit in half a segment of {self.segment_size} bytes "
                "(Cassandra's max_mutation_size): give a larger --segment-size"
            )
        entry = framed(mutation)
        current = self._current
        if current is not None and (
            current.logical_end + SYNC_MARKER + current.pending_len + len(entry) + SYNC_MARKER > self.segment_size
        ):
            self.close_segment(completed=True)
            current = None
        if current is None:
            current = self._open()
        current.pending.append(entry)
        current.pending_len += len(entry)
        current.pending_mutations += 1
        current.pending_events += events

    def sync(self) -> None:
        """Write what was appended since the last sync as one section (and the idx, if asked)."""
        current = self._current
        if current is None or not current.pending:
            return
        data = b"".join(current.pending)
        marker_at = current.file_len
        if self.compression:
            payload = _SIZE.pack(len(data)) + compress(self.compression, data)
            end = marker_at + SYNC_MARKER + len(payload)
            os.pwrite(current.fd, sync_marker(current.info.segment_id, marker_at, end) + payload, marker_at)
        else:
            end = marker_at + SYNC_MARKER + len(data)
            # data first, then the marker that makes it reachable (the next marker is still zeros)
            os.pwrite(current.fd, data, marker_at + SYNC_MARKER)
            os.pwrite(current.fd, sync_marker(current.info.segment_id, marker_at, end), marker_at)
        current.file_len = end
        current.logical_end += SYNC_MARKER + len(data)
        info = current.info
        info.sections += 1
        info.mutations += current.pending_mutations
        info.events += current.pending_events
        info.logical_bytes = current.logical_end
        info.file_bytes = self._file_size(current)
        current.pending, current.pending_len = [], 0
        current.pending_mutations = current.pending_events = 0
        if self.idx_every_sync:
            self._write_idx(current, completed=False)

    def close_segment(self, completed: bool = True) -> None:
        """Sync, then close the current segment; its idx says COMPLETED, or only the offset."""
        current = self._current
        if current is None:
            return
        self.sync()
        self._write_idx(current, completed)
        os.close(current.fd)
        current.info.completed = completed
        self.closed_logical += current.logical_end
        self.closed_file += current.info.file_bytes
        self._current = None

    # -- internals --------------------------------------------------------------------------------
    def _open(self) -> _Open:
        segment_id = self.next_id
        self.next_id += 1
        params = {"compressionClass": self.compression, "compressionParameters": {}} if self.compression else {}
        header = descriptor_header(self.version, segment_id, params)
        name = f"CommitLog-{self.version}-{segment_id}.log"
        path = self.folder / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(fd, header, 0)
        if not self.compression:
            os.ftruncate(fd, self.segment_size)  # zero-filled (sparse), as a memory-mapped segment
        info = SegmentInfo(name, segment_id, len(header), len(header))
        self.segments.append(info)
        current = _Open(info, fd, path, self.folder / name.replace(".log", "_cdc.idx"), len(header), len(header))
        info.file_bytes = self._file_size(current)
        self._current = current
        return current

    def _file_size(self, current: _Open) -> int:
        return self.segment_size if not self.compression else current.file_len

    def _write_idx(self, current: _Open, completed: bool) -> None:
        # As Cassandra does: rewritten in place, the offset, then "\nCOMPLETED" once the segment is closed.
        text = str(current.logical_end) + ("\nCOMPLETED" if completed else "")
        with open(current.idx_path, "w") as handle:
            handle.write(text)
