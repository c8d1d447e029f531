"""Segment files: names, descriptor headers, ``_cdc.idx`` side files and section walking.

A segment is read as a sequence of :class:`Section` objects, each a buffer of entries with its
logical position (the coordinates Cassandra reports, uncompressed even in compressed files).
"""

from __future__ import annotations

import json
import mmap
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cramjam

from cdcfast import _commitlog
from cdcfast.errors import EncryptedSegmentError, SegmentError

SEGMENT_NAME = re.compile(r"^CommitLog-(\d+)-(\d+)\.log$")
IDX_NAME = re.compile(r"^CommitLog-(\d+)-(\d+)(_cdc|-CDC)\.idx$")
MESSAGING_BY_DESCRIPTOR = {6: 11, 7: 12, 8: 13}
CASSANDRA_3 = 6  # the descriptor version of Cassandra 3.0-3.11, whose CDC writes no idx files
COMPRESSED_HEADER = 12  # sync marker (8) + uncompressed length (4)


@dataclass(frozen=True)
class CdcIndex:
    """A ``_cdc.idx`` as read: ``offset`` is None while it is empty or half-written."""

    offset: int | None
    completed: bool


def read_cdc_index(path: Path) -> CdcIndex:
    """Parse a ``_cdc.idx``. An empty or partly written file means "not known yet", not 0."""
    try:
        text = path.read_bytes().decode("ascii", errors="replace")
    except FileNotFoundError:
        return CdcIndex(None, False)
    lines = text.split("\n")
    completed = len(lines) > 1 and lines[1].strip() == "COMPLETED"
    first = lines[0].strip()
    # A rewrite in progress can leave a partial number; only a complete line (newline seen, or
    # nothing else written yet) is trusted. Cassandra writes "<offset>" then "\nCOMPLETED".
    if not first.isdigit():
        return CdcIndex(None, completed)
    return CdcIndex(int(first), completed)


@dataclass(frozen=True)
class Descriptor:
    version: int
    segment_id: int
    header_len: int
    params: dict
    compression: str | None  # short class name, e.g. "LZ4Compressor"

    @property
    def messaging_version(self) -> int:
        return MESSAGING_BY_DESCRIPTOR[self.version]


@dataclass(frozen=True)
class SegmentFile:
    path: Path
    version: int
    segment_id: int
    idx_path: Path | None

    @property
    def holds_cdc(self) -> bool:
        """Whether the segment in cdc_raw has CDC data. From 4.0 on, cdc_raw links every segment and
        Cassandra writes an idx once one holds CDC data; Cassandra 3.x writes no idx and moves only
        segments with CDC data there (docs: reference §7.2)."""
        return self.idx_path is not None or self.version == CASSANDRA_3

    def cdc_index(self) -> CdcIndex:
        """How far the segment is durable: its idx, or for Cassandra 3.x, all of it (a segment is
        moved into cdc_raw once discarded, complete and final). Nothing known without either."""
        if self.idx_path is not None:
            return read_cdc_index(self.idx_path)
        if self.version == CASSANDRA_3:
            try:
                return CdcIndex(self.path.stat().st_size, True)
            except FileNotFoundError:
                pass
        return CdcIndex(None, False)


def discover(paths: Iterable[str | Path]) -> list[SegmentFile]:
    """Segment files among ``paths`` (files or folders), ordered by segment id, never by mtime."""
    found: dict[Path, SegmentFile] = {}
    for raw in paths:
        path = Path(raw)
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        if not path.exists():
            raise SegmentError(str(path), 0, "no such file or folder")
        for candidate in candidates:
            match = SEGMENT_NAME.match(candidate.name)
            if not match:
                if not path.is_dir():
                    raise SegmentError(str(candidate), 0, "not a commit log segment name (CommitLog-<v>-<id>.log)")
                continue
            idx = None
            for suffix in ("_cdc.idx", "-CDC.idx"):
                sibling = candidate.with_name(candidate.name[: -len(".log")] + suffix)
                if sibling.exists():
                    idx = sibling
            found[candidate] = SegmentFile(candidate, int(match.group(1)), int(match.group(2)), idx)
    return sorted(found.values(), key=lambda s: s.segment_id)


def read_descriptor(path: Path, data: bytes | mmap.mmap) -> Descriptor:
    """The descriptor header (§1.2), with its CRC checked and the file name cross-checked."""
    if len(data) < 18:
        raise SegmentError(str(path), 0, f"file of {len(data)} bytes is too short for a descriptor header")
    version, segment_id, plen = struct.unpack_from(">iqH", data, 0)
    if version not in MESSAGING_BY_DESCRIPTOR:
        raise SegmentError(str(path), 0, f"unsupported descriptor version {version} (expected 6, 7 or 8)")
    if len(data) < 18 + plen:
        raise SegmentError(str(path), 14, "descriptor parameters run past the end of the file")
    params_bytes = bytes(data[14 : 14 + plen])
    crc = 0
    for word in (version, segment_id & 0xFFFFFFFF, (segment_id >> 32) & 0xFFFFFFFF, plen):
        crc = _commitlog.crc_of(struct.pack(">I", word & 0xFFFFFFFF), crc)
    crc = _commitlog.crc_of(params_bytes, crc)
    (stored,) = struct.unpack_from(">I", data, 14 + plen)
    if stored != crc:
        raise SegmentError(
            str(path), 14 + plen, f"descriptor header CRC mismatch (stored {stored:#010x}, computed {crc:#010x})"
        )
    name = SEGMENT_NAME.match(path.name)
    if name and int(name.group(2)) != segment_id:
        raise SegmentError(str(path), 4, f"header segment id {segment_id} differs from the file name's")
    try:
        params = json.loads(params_bytes.decode("utf-8")) if plen else {}
    except ValueError as exc:
        raise SegmentError(str(path), 14, f"descriptor parameters are not JSON: {exc}") from exc
    params = params or {}
    if params.get("encCipher") and params.get("encKeyAlias"):
        raise EncryptedSegmentError(
            str(path),
            14,
            f"segment is encrypted ({params['encCipher']}, key alias {params['encKeyAlias']!r}); "
            "cdcfast does not read transparent-data-encryption segments: disable commit log encryption "
            "for CDC nodes",
        )
    compression = params.get("compressionClass")
    if compression:
        compression = compression.rsplit(".", 1)[-1]
    return Descriptor(version, segment_id, 18 + plen, params, compression)


@dataclass(frozen=True)
class Section:
    """One section's entries: ``data[start:end]``, whose byte ``data[0]`` sits at ``logical_base``."""

    data: bytes | bytearray | memoryview | mmap.mmap
    start: int
    end: int
    logical_base: int
    file_offset: int  # where the section's sync marker is in the file


class _Decompressor:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        if name not in ("LZ4Compressor", "SnappyCompressor", "DeflateCompressor", "ZstdCompressor", "NoopCompressor"):
            raise SegmentError(str(path), 0, f"unsupported commit log compressor {name}")

    def __call__(self, payload: memoryview, size: int) -> bytes | bytearray:
        if self.name == "NoopCompressor":
            return bytes(payload)
        out = bytearray(size)
        if self.name == "LZ4Compressor":
            (prefix,) = struct.unpack_from("<i", payload, 0)
            if prefix != size:
                raise ValueError(f"LZ4 length prefix {prefix} differs from the section length {size}")
            written = cramjam.lz4.decompress_block_into(payload[4:], out, output_len=size)
        elif self.name == "SnappyCompressor":
            written = cramjam.snappy.decompress_raw_into(payload, out)
        elif self.name == "DeflateCompressor":
            written = cramjam.zlib.decompress_into(payload, out)
        else:
            written = cramjam.zstd.decompress_into(payload, out)
        if written != size:
            raise ValueError(f"decompressed {written} bytes, the section says {size}")
        return out


@dataclass
class SectionWalk:
    """The sections of one segment, and how the walk ended (a :class:`ReadIssue` detail or None)."""

    descriptor: Descriptor
    sections: list[Section]
    problem: tuple[int, str] | None  # (offset, what went wrong)


def walk_sections(
    path: Path, data: bytes | mmap.mmap, descriptor: Descriptor, limit: int | None, after: int = 0
) -> Iterator[Section | tuple[int, str]]:
    """Yield the sections whose data lies before the logical ``limit`` (None: the whole chain).

    Compressed sections that end at or before ``after`` are skipped without decompressing them.
    A problem ends the walk and is yielded as ``(offset, detail)``: a damaged marker, an
    impossible length or a failed decompression. Everything before it has been yielded.
    """
    compressed = descriptor.compression is not None
    markers, end = _commitlog.walk_sync_markers(
        data, descriptor.segment_id, descriptor.header_len, len(data), compressed
    )
    view = memoryview(data)
    logical = descriptor.header_len
    decompress = _Decompressor(descriptor.compression, path) if descriptor.compression else None
    for marker, nxt in markers:
        if limit is not None and logical >= limit:
            return
        if decompress is None:
            yield Section(data, marker + 8, nxt, 0, marker)
            logical = nxt
            continue
        (size,) = struct.unpack_from(">i", data, marker + 8)
        if size < 0:
            yield marker, f"negative section length {size}"
            return
        if logical + 8 + size <= after:
            logical += 8 + size
            continue
        try:
            chunk = decompress(view[marker + COMPRESSED_HEADER : nxt], size)
        except (ValueError, cramjam.DecompressionError) as exc:
            yield marker, f"{descriptor.compression} section does not decompress: {exc}"
            return
        yield Section(chunk, 0, size, logical + 8, marker)
        logical += 8 + size
    if isinstance(end, tuple):
        yield _chain_break(end)


def _chain_break(end: tuple[str, int]) -> tuple[int, str]:
    """Where and why the marker chain ended early (``walk_sync_markers``' ``(kind, offset)``)."""
    kind, offset = end
    return offset, "sync marker CRC mismatch" if kind == "bad_crc" else "sync marker points outside the file"


def section_bounds(path: Path, limit: int | None = None, after: int = 0) -> list[int]:
    """The logical positions where ``path``'s sections end, after ``after`` and at most at ``limit``
    (None: to the end of the marker chain), ascending.

    No entry spans two sections, so reads between consecutive bounds (``ReadRange(a, b)``) partition
    a read of the whole stretch exactly: this is where work items may be cut. Only the descriptor,
    the sync markers and, in compressed segments, each section's uncompressed length are read;
    nothing is decompressed or decoded.

    Raises :class:`SegmentError` for an unreadable descriptor, an encrypted segment, or a damaged
    marker or impossible length before ``limit`` (damage after it is not this stretch's), and
    ``OSError`` when the file cannot be opened.
    """
    data = open_segment(path)
    try:
        descriptor = read_descriptor(path, data)  # a pre-allocated (zeroed) file fails here too
        compressed = descriptor.compression is not None
        markers, end = _commitlog.walk_sync_markers(
            data, descriptor.segment_id, descriptor.header_len, len(data), compressed
        )
        bounds: list[int] = []
        logical = descriptor.header_len
        for marker, nxt in markers:
            if limit is not None and logical >= limit:
                return bounds  # the rest of the chain is beyond the stretch
            if compressed:
                (size,) = struct.unpack_from(">i", data, marker + 8)
                if size < 0:
                    raise SegmentError(str(path), marker, f"negative section length {size}")
                logical += 8 + size
            else:
                logical = nxt
            if after < logical and (limit is None or logical <= limit):
                bounds.append(logical)
        if isinstance(end, tuple) and (limit is None or logical < limit):
            raise SegmentError(str(path), *_chain_break(end))
        return bounds
    finally:
        if hasattr(data, "close"):
            data.close()


def open_segment(path: Path) -> bytes | mmap.mmap:
    """Memory-map a segment (read-only); tiny files are simply read."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        if size < 4096:
            handle.seek(0)
            return handle.read()
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def raw_entries(path: Path) -> Iterator[tuple[int, bytes]]:
    """(position, mutation bytes) of every CRC-valid entry along the marker chain (not the hot
    path: for diagnosis, dead letters and re-encoding checks)."""
    data = open_segment(path)
    descriptor = read_descriptor(path, data)
    for section in walk_sections(path, data, descriptor, None):
        if isinstance(section, tuple):
            return
        buf, p = section.data, section.start
        while section.end - p >= 8:
            (size,) = struct.unpack_from(">i", buf, p)
            if size < 10 or p + 12 + size > section.end:
                break
            mutation = bytes(buf[p + 8 : p + 8 + size])
            (stored,) = struct.unpack_from(">I", buf, p + 8 + size)
            if _commitlog.crc_of(mutation, _commitlog.crc_of(struct.pack(">i", size))) == stored:
                yield section.logical_base + p + 12 + size, mutation
            p += 12 + size
