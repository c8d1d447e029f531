"""``section_bounds``: where a segment's sections end, found from the marker chain alone. The
supervisor cuts work items there, so reads between consecutive bounds must partition a whole read."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, Corpus
from support.segments import build_segment, real_mutations

from cdcfast import _commitlog
from cdcfast.commitlog import CommitLogReader, ReadRange, discover, load_schema
from cdcfast.commitlog.reference import reference_lines
from cdcfast.commitlog.segment import COMPRESSED_HEADER, open_segment, read_descriptor, section_bounds
from cdcfast.errors import EncryptedSegmentError, SegmentError
from cdcfast.generate.framing import descriptor_header


def read(reader: CommitLogReader, segment, start: int, limit: int | None) -> list[dict]:  # noqa: ANN001
    return [line for batch in reader.read_segment(segment, ReadRange(start, limit)) for line in reference_lines(batch)]


def markers(path: Path) -> list[tuple[int, int]]:
    """(marker offset, next) along the chain."""
    data = open_segment(path)
    descriptor = read_descriptor(path, data)
    found, _ = _commitlog.walk_sync_markers(
        data, descriptor.segment_id, descriptor.header_len, len(data), descriptor.compression is not None
    )
    return found


@pytest.fixture(scope="module")
def mutations(corpus_scratch: Path) -> list[bytes]:
    if not (CORPUS_ROOT / "c50-v7-plain").exists():
        pytest.skip("corpus missing")
    return real_mutations(Corpus("c50-v7-plain", corpus_scratch).cdc_raw, 600, skip=2500)


def test_reads_between_bounds_partition_a_whole_segment_read(corpus: Corpus) -> None:
    """Compressed (lz4, snappy) and plain corpus segments: every entry once, in order, none lost."""
    reader = CommitLogReader(load_schema(corpus.schema_dir))
    checked = 0
    for segment in discover([corpus.cdc_raw]):
        if segment.idx_path is None:
            continue  # pre-allocated, never written
        whole = read(reader, segment, 0, None)
        bounds = section_bounds(segment.path)
        assert bounds == sorted(set(bounds)) and len(bounds) == len(markers(segment.path))
        assert bounds[-1] >= whole[-1]["position"]  # the last section holds the last entry
        starts, limits = [0, *bounds[:-1]], [*bounds[:-1], None]
        pieces = [read(reader, segment, start, limit) for start, limit in zip(starts, limits, strict=True)]
        assert [line for piece in pieces for line in piece] == whole, segment.path.name
        assert sum(1 for piece in pieces if piece) > len(pieces) // 2  # real cuts, not empty slices
        checked += 1
    assert checked >= 3
    assert not [i for i in reader.issues if i.kind not in ("unknown_table", "system_table")]


def test_bounds_of_a_stretch_are_the_section_ends_inside_it(corpus: Corpus) -> None:
    segment = next(s for s in discover([corpus.cdc_raw]) if s.idx_path is not None)
    every = section_bounds(segment.path)
    after, limit = every[3] - 1, every[-4] + 1  # neither at a section end
    assert section_bounds(segment.path, limit, after) == [b for b in every if after < b <= limit]
    assert section_bounds(segment.path, every[-4], every[3]) == every[4:-3]
    assert section_bounds(segment.path, None, every[-1]) == []


def test_bounds_never_decompress(mutations: list[bytes], tmp_path: Path) -> None:
    """A section whose compressed bytes are garbage still has its end found: only markers and the
    sections' length fields are read."""
    builder = build_segment(mutations, sections=6, compression="LZ4Compressor")
    path = builder.write(tmp_path)
    expected = section_bounds(path)
    marker, nxt = markers(path)[2]
    data = bytearray(path.read_bytes())
    data[marker + COMPRESSED_HEADER : nxt] = b"\xff" * (nxt - marker - COMPRESSED_HEADER)
    path.write_bytes(data)
    assert section_bounds(path) == expected
    reader = CommitLogReader(load_schema(CORPUS_ROOT / "c50-v7-plain" / "schema"))
    list(reader.read_paths([path]))
    assert any(i.kind == "section" and "decompress" in i.detail for i in reader.issues)  # it is damaged


def test_a_damaged_marker_is_an_error_only_inside_the_stretch(mutations: list[bytes], tmp_path: Path) -> None:
    builder = build_segment(mutations, sections=6, preallocate=1 << 20)
    path = builder.write(tmp_path)
    every = section_bounds(path)
    data = bytearray(path.read_bytes())
    damaged_at = every[3]  # the marker of the fifth section (plain: logical = file offset)
    data[damaged_at + 4] ^= 0xFF  # its CRC
    path.write_bytes(data)
    with pytest.raises(SegmentError) as raised:
        section_bounds(path)
    assert raised.value.offset == damaged_at
    assert section_bounds(path, every[3]) == every[:4]  # the stretch ends before the damage
    with pytest.raises(SegmentError):
        section_bounds(path, every[4])


def test_negative_compressed_length_is_an_error(mutations: list[bytes], tmp_path: Path) -> None:
    path = build_segment(mutations, sections=3, compression="LZ4Compressor").write(tmp_path)
    second = markers(path)[1][0]
    data = bytearray(path.read_bytes())
    struct.pack_into(">i", data, second + 8, -5)
    path.write_bytes(data)
    with pytest.raises(SegmentError, match="negative"):
        section_bounds(path)


def test_unreadable_segments_raise(mutations: list[bytes], tmp_path: Path) -> None:
    preallocated = tmp_path / "CommitLog-7-1800000000001.log"
    preallocated.write_bytes(bytes(1 << 20))
    with pytest.raises(SegmentError):
        section_bounds(preallocated)
    tiny = tmp_path / "CommitLog-7-1800000000002.log"
    tiny.write_bytes(b"\x00\x00\x00\x07")
    with pytest.raises(SegmentError):
        section_bounds(tiny)
    params = {"encCipher": "AES/CBC/PKCS5Padding", "encIV": "00" * 16, "encKeyAlias": "testing:1"}
    encrypted = tmp_path / "CommitLog-7-1800000000003.log"
    encrypted.write_bytes(descriptor_header(7, 1800000000003, params) + bytes(64))
    with pytest.raises(EncryptedSegmentError):
        section_bounds(encrypted)
    with pytest.raises(FileNotFoundError):
        section_bounds(tmp_path / "CommitLog-7-1800000000004.log")
