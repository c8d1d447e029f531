"""Segment framing: compression, positions, _cdc.idx durability, damage handling."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, Corpus
from support.segments import build_segment, real_mutations

from cdcfast.commitlog import CommitLogReader, load_schema, read_cdc_index
from cdcfast.commitlog.reference import reference_lines
from cdcfast.errors import EncryptedSegmentError, SegmentError
from cdcfast.generate.framing import COMPRESSORS, descriptor_header

CORPUS = "c50-v7-plain"


@pytest.fixture(scope="module")
def plain(corpus_scratch: Path) -> Corpus:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    return Corpus(CORPUS, corpus_scratch)


@pytest.fixture(scope="module")
def mutations(plain: Corpus) -> list[bytes]:
    # Past the node's start-up writes, into the user workload (every table and kind of change).
    return real_mutations(plain.cdc_raw, 600, skip=2500)


def decode(plain: Corpus, folder: Path, **options) -> tuple[list[dict], CommitLogReader]:
    reader = CommitLogReader(load_schema(plain.schema_dir), **options)
    return [line for batch in reader.read_paths([folder]) for line in reference_lines(batch)], reader


def test_every_compressor_decodes_like_plain(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    expected_builder = build_segment(mutations, sections=5)
    expected_builder.write(tmp_path / "plain")
    expected, _ = decode(plain, tmp_path / "plain")
    assert len(expected) > 500
    assert expected[-1]["position"] == expected_builder.positions[-1]
    for name in COMPRESSORS:
        folder = tmp_path / name
        folder.mkdir()
        builder = build_segment(mutations, sections=5, compression=name)
        builder.write(folder)
        lines, reader = decode(plain, folder)
        assert not [i for i in reader.issues if i.kind != "unknown_table"], name
        # The compressed header is longer (its parameters), so positions shift by a constant.
        shift = builder.positions[0] - expected_builder.positions[0]
        assert shift > 0
        assert [{**line, "position": line["position"] - shift} for line in lines] == expected, name
        assert {line["position"] for line in lines} <= set(builder.positions)


def test_positions_are_logical_in_compressed_segments(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    builder = build_segment(mutations, sections=3, compression="LZ4Compressor")
    path = builder.write(tmp_path)
    lines, _ = decode(plain, tmp_path)
    assert builder.logical_end > path.stat().st_size  # compressed: logical offsets exceed the file
    assert {line["position"] for line in lines} <= set(builder.positions)
    assert lines[-1]["position"] == builder.logical_end


@pytest.mark.parametrize("compression", [None, "SnappyCompressor"])
def test_idx_offset_bounds_decoding(plain: Corpus, mutations: list[bytes], tmp_path: Path, compression) -> None:
    builder = build_segment(mutations, sections=4, compression=compression, preallocate=1 << 20)
    path = builder.write(tmp_path, idx=None)
    idx = path.with_name(path.name.replace(".log", "_cdc.idx"))
    everything, _ = decode(plain, tmp_path)
    # After the second sync, the idx holds the logical end of section 2.
    second_end = builder.positions[2 * 150 - 1]
    idx.write_text(str(second_end))
    partial, _ = decode(plain, tmp_path)
    assert partial and all(line["position"] <= second_end for line in partial)
    assert partial == everything[: len(partial)]
    assert everything[len(partial)]["position"] > second_end
    # COMPLETED: read the whole chain, whatever the offset says (replay writes the file length).
    idx.write_text(f"{path.stat().st_size}\nCOMPLETED")
    assert decode(plain, tmp_path)[0] == everything


@pytest.mark.parametrize("content", ["", "12a", "  "])
def test_empty_or_partial_idx_means_not_known_yet(
    plain: Corpus, mutations: list[bytes], tmp_path: Path, content: str
) -> None:
    path = build_segment(mutations, sections=2).write(tmp_path, idx=None)
    path.with_name(path.name.replace(".log", "_cdc.idx")).write_text(content)
    assert read_cdc_index(path.with_name(path.name.replace(".log", "_cdc.idx"))).offset is None
    lines, _ = decode(plain, tmp_path)
    assert lines == []


def test_idx_parsing(tmp_path: Path) -> None:
    idx = tmp_path / "CommitLog-7-1_cdc.idx"
    idx.write_text("4049474\nCOMPLETED")
    assert read_cdc_index(idx).offset == 4049474 and read_cdc_index(idx).completed
    idx.write_text("376")
    assert read_cdc_index(idx).offset == 376 and not read_cdc_index(idx).completed
    assert read_cdc_index(tmp_path / "missing_cdc.idx").offset is None


def test_alternative_idx_name_is_accepted(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    builder = build_segment(mutations, sections=2, preallocate=1 << 20)
    path = builder.write(tmp_path, idx=None)
    path.with_name(path.name.replace(".log", "-CDC.idx")).write_text(str(builder.positions[10]))
    lines, _ = decode(plain, tmp_path, require_idx=True)
    assert lines and lines[-1]["position"] <= builder.positions[10]


def test_segment_without_idx_waits_when_idx_required(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    build_segment(mutations, sections=2).write(tmp_path, idx=None)
    assert decode(plain, tmp_path, require_idx=True)[0] == []
    assert decode(plain, tmp_path)[0]


def corrupt(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_mutation_crc_mismatch_skips_only_that_entry(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    builder = build_segment(mutations, sections=2)
    path = builder.write(tmp_path)
    everything, _ = decode(plain, tmp_path)
    victim_end = builder.positions[5]
    corrupt(path, victim_end - 6, b"\xff")  # last byte of the mutation body
    lines, reader = decode(plain, tmp_path)
    assert [line for line in everything if line["position"] != victim_end] == lines
    (issue,) = [i for i in reader.issues if i.kind == "crc"]
    assert issue.path == str(path) and issue.offset == builder.positions[4] and issue.position == victim_end
    assert str(path) in str(issue) and str(issue.offset) in str(issue)


def test_size_crc_mismatch_abandons_the_section_only(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    builder = build_segment(mutations, sections=2)
    path = builder.write(tmp_path)
    everything, _ = decode(plain, tmp_path)
    corrupt(path, builder.positions[9] + 4, b"\x00\x00\x00\x00")  # size CRC of entry 11
    lines, reader = decode(plain, tmp_path)
    second_section = [line for line in everything if line["position"] > builder.positions[299]]
    assert lines[: len(lines) - len(second_section)] == [x for x in everything if x["position"] <= builder.positions[9]]
    assert lines[-len(second_section) :] == second_section
    assert any(i.kind == "entry" and i.offset == builder.positions[9] for i in reader.issues)


@pytest.mark.parametrize("cut", [0.3, 0.75, 0.999])
def test_truncated_segment_keeps_everything_before(
    plain: Corpus, mutations: list[bytes], tmp_path: Path, cut: float
) -> None:
    for compression in (None, "ZstdCompressor"):
        folder = tmp_path / str(compression)
        folder.mkdir()
        path = build_segment(mutations, sections=6, compression=compression).write(folder)
        everything, _ = decode(plain, folder)
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * cut)])
        lines, reader = decode(plain, folder)
        assert lines == everything[: len(lines)]
        assert reader.issues or len(lines) == len(everything)


def test_zeroed_tail_is_a_clean_end(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    builder = build_segment(mutations, sections=4, preallocate=1 << 20)
    path = builder.write(tmp_path, idx=None)
    everything, _ = decode(plain, tmp_path)
    raw = bytearray(path.read_bytes())
    third_marker = builder.positions[299]  # end of section 2 is section 3's marker
    raw[third_marker:] = bytes(len(raw) - third_marker)
    path.write_bytes(bytes(raw))
    lines, reader = decode(plain, tmp_path)
    assert lines == [line for line in everything if line["position"] <= third_marker]
    assert not [i for i in reader.issues if i.kind != "unknown_table"]


def test_bad_header_crc_is_reported_with_file_and_offset(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    path = build_segment(mutations, sections=1).write(tmp_path)
    corrupt(path, 17, b"\x00")
    lines, reader = decode(plain, tmp_path)
    assert lines == []
    (issue,) = reader.issues
    assert issue.kind == "header" and issue.path == str(path) and "CRC" in issue.detail
    with pytest.raises(SegmentError, match=str(path)):
        decode(plain, tmp_path, policy="stop")


def test_encrypted_segments_are_refused_clearly(plain: Corpus, tmp_path: Path) -> None:
    params = {"encCipher": "AES/CBC/PKCS5Padding", "encIV": "00" * 16, "encKeyAlias": "testing:1"}
    (tmp_path / "CommitLog-7-5.log").write_bytes(descriptor_header(7, 5, params) + bytes(64))
    with pytest.raises(EncryptedSegmentError, match="encrypted.*AES/CBC"):
        decode(plain, tmp_path)


def test_unknown_tables_are_counted_with_position(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    foreign = bytearray(mutations[0])
    foreign[1:17] = bytes(range(16))  # a table id no schema has
    builder = build_segment([bytes(foreign)] + mutations[:5], sections=1)
    builder.write(tmp_path)
    lines, reader = decode(plain, tmp_path)
    assert reader.stats.unknown_tables.get(bytes(range(16)).hex()) == 1
    (issue,) = [
        i for i in reader.issues if i.detail.startswith(f"mutation of unknown table id {bytes(range(16)).hex()}")
    ]
    assert issue.position == builder.positions[0]


def test_stop_policy_raises_on_corruption(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    builder = build_segment(mutations, sections=1)
    path = builder.write(tmp_path)
    corrupt(path, builder.positions[2] - 6, b"\x00\x01")
    with pytest.raises(SegmentError, match=f"{path}.*offset {builder.positions[1]}"):
        decode(plain, tmp_path, policy="stop")


def test_absurd_length_fields_do_not_crash(plain: Corpus, mutations: list[bytes], tmp_path: Path) -> None:
    builder = build_segment(mutations, sections=1)
    path = builder.write(tmp_path)
    corrupt(path, builder.positions[3], struct.pack(">i", 0x7FFFFFF0))
    lines, reader = decode(plain, tmp_path)
    assert len(lines) >= 4 and reader.issues


@pytest.mark.parametrize("compression", [None, "DeflateCompressor"])
def test_resume_after_a_checkpoint_position(plain: Corpus, mutations: list[bytes], tmp_path: Path, compression) -> None:
    """Reading from a checkpoint yields exactly the entries after it, in every section layout."""
    from cdcfast.commitlog import ReadRange
    from cdcfast.commitlog.segment import discover

    builder = build_segment(mutations, sections=4, compression=compression)
    builder.write(tmp_path)
    everything, _ = decode(plain, tmp_path)
    reader = CommitLogReader(load_schema(plain.schema_dir))
    (segment,) = discover([tmp_path])
    for checkpoint in (builder.positions[0], builder.positions[149], builder.positions[150], builder.positions[420]):
        lines = [line for b in reader.read_segment(segment, ReadRange(start=checkpoint)) for line in reference_lines(b)]
        assert lines == [line for line in everything if line["position"] > checkpoint]
