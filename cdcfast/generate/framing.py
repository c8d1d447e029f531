"""Writing commit log segments: descriptor header, sync-marker sections, entries, ``_cdc.idx``.

The inverse of :mod:`cdcfast.commitlog.segment`, byte for byte as Cassandra writes them (format
reference §1-§3, §7). Used by ``cdcfast generate`` and by tests that need segments of a given
shape (damaged ones included).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cramjam

from cdcfast import _commitlog

COMPRESSORS = ("LZ4Compressor", "SnappyCompressor", "DeflateCompressor", "ZstdCompressor")


def crc_ints(*values: int) -> int:
    """CRC of 32-bit values fed big-endian, the way Cassandra feeds ints into a checksum."""
    return _commitlog.crc_of(b"".join(struct.pack(">I", v & 0xFFFFFFFF) for v in values))


def descriptor_header(version: int, segment_id: int, params: dict | None = None) -> bytes:
    raw = json.dumps(params or {}, separators=(",", ":"), sort_keys=True).encode()
    crc = crc_ints(version, segment_id & 0xFFFFFFFF, segment_id >> 32, len(raw))
    crc = _commitlog.crc_of(raw, crc)
    return struct.pack(">iqH", version, segment_id, len(raw)) + raw + struct.pack(">I", crc)


def entry(mutation: bytes) -> bytes:
    """size, CRC(size), mutation, CRC(size + mutation) (§3)."""
    size = struct.pack(">i", len(mutation))
    size_crc = _commitlog.crc_of(size)
    return size + struct.pack(">I", size_crc) + mutation + struct.pack(">I", _commitlog.crc_of(mutation, size_crc))


def sync_marker(segment_id: int, offset: int, next_offset: int) -> bytes:
    return struct.pack(">iI", next_offset, _commitlog.marker_crc(segment_id, offset))


def compress(name: str, data: bytes) -> bytes:
    if name == "LZ4Compressor":
        return struct.pack("<i", len(data)) + bytes(cramjam.lz4.compress_block(data, store_size=False))
    if name == "SnappyCompressor":
        return bytes(cramjam.snappy.compress_raw(data))
    if name == "DeflateCompressor":
        return bytes(cramjam.zlib.compress(data))
    if name == "ZstdCompressor":
        return bytes(cramjam.zstd.compress(data))
    raise ValueError(f"unknown compressor {name}")


@dataclass
class SegmentBuilder:
    """Builds one segment in memory: add sections of mutations, then ``bytes()`` or ``write()``.

    ``positions`` records each mutation's CommitLogPosition (logical end of its entry), and
    ``logical_end`` what a ``_cdc.idx`` would hold after the last sync.
    """

    segment_id: int
    version: int = 7
    compression: str | None = None
    preallocate: int = 0  # plain segments: zero-fill the file to this size, as mmap segments are
    positions: list[int] = field(default_factory=list)
    _chunks: list[bytes] = field(default_factory=list)
    _file_len: int = 0
    logical_end: int = 0

    def __post_init__(self) -> None:
        params = {}
        if self.compression:
            params = {"compressionClass": self.compression, "compressionParameters": {}}
        header = descriptor_header(self.version, self.segment_id, params)
        self._chunks.append(header)
        self._file_len = self.logical_end = len(header)

    def add_section(self, mutations: Sequence[bytes]) -> None:
        data = b""
        for mutation in mutations:
            data += entry(mutation)
            self.positions.append(self.logical_end + 8 + len(data))
        marker_at = self._file_len
        if self.compression:
            payload = struct.pack(">i", len(data)) + compress(self.compression, data)
            self._chunks.append(sync_marker(self.segment_id, marker_at, marker_at + 8 + len(payload)) + payload)
            self._file_len += 8 + len(payload)
        else:
            self._chunks.append(sync_marker(self.segment_id, marker_at, marker_at + 8 + len(data)) + data)
            self._file_len += 8 + len(data)
        self.logical_end += 8 + len(data)

    def bytes(self) -> bytes:
        body = b"".join(self._chunks)
        if not self.compression:
            body += bytes(8)  # the zeroed marker that ends a plain chain
            if self.preallocate > len(body):
                body += bytes(self.preallocate - len(body))
        return body

    @property
    def name(self) -> str:
        return f"CommitLog-{self.version}-{self.segment_id}.log"

    def write(self, folder: Path, idx: str | None = "completed") -> Path:
        """Write the segment (and its idx: ``"completed"``, ``"offset"`` or None) into ``folder``."""
        path = folder / self.name
        path.write_bytes(self.bytes())
        if idx is not None:
            text = str(self.logical_end) + ("\nCOMPLETED" if idx == "completed" else "")
            (folder / self.name.replace(".log", "_cdc.idx")).write_text(text)
        return path
