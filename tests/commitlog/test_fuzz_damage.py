"""Damaged segments, at random: no crash, no hang, and every problem names its file and offset.

Two kinds of damage: raw bytes of the file (framing and CRCs must catch it), and bytes inside a
mutation with its CRCs recomputed (the mutation decoder itself must cope). The default run is
short; ``-m slow`` runs 10,000 cases of each.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, Corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.segments import build_segment, real_mutations

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.commitlog.reference import reference_lines

CORPUS = "c50-v8-lz4"
EXAMPLES = int(os.environ.get("CDCFAST_FUZZ_EXAMPLES", "300"))
INTERESTING = [0, 1, -1, 9, 10, 11, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, -0x80000000, 0x10000, 1 << 24]


@pytest.fixture(scope="module")
def setup(corpus_scratch: Path, tmp_path_factory: pytest.TempPathFactory):
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    schema = load_schema(corpus.schema_dir)
    mutations = real_mutations(corpus.cdc_raw, 120, skip=3000)
    return schema, mutations, tmp_path_factory.mktemp("fuzz")


damage = st.lists(
    st.tuples(
        st.sampled_from(["flip", "int", "zero", "truncate"]),
        st.floats(0, 1, exclude_max=True),
        st.integers(0, 7),
        st.sampled_from(INTERESTING),
    ),
    min_size=1,
    max_size=4,
)


def apply(data: bytes, operations) -> bytes:
    raw = bytearray(data)
    for kind, where, bit, value in operations:
        if not raw:
            break
        at = int(where * len(raw))
        if kind == "flip":
            raw[at] ^= 1 << bit
        elif kind == "int":
            raw[at : at + 4] = struct.pack(">i", value)[: len(raw) - at]
        elif kind == "zero":
            raw[at : at + 8 * (bit + 1)] = bytes(len(raw[at : at + 8 * (bit + 1)]))
        else:
            del raw[at:]
    return bytes(raw)


def decode_checked(schema, folder: Path, path: Path) -> None:
    start = time.monotonic()
    reader = CommitLogReader(schema)
    for batch in reader.read_paths([folder]):
        for _ in reference_lines(batch):  # every record must also be readable
            pass
    assert time.monotonic() - start < 5, "decoding a damaged segment took too long"
    for issue in reader.issues:
        assert issue.path == str(path)
        assert issue.offset >= 0
        text = str(issue)
        assert str(path) in text and f"offset {issue.offset}" in text


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=damage, compression=st.sampled_from([None, "LZ4Compressor", "ZstdCompressor"]))
def test_damaged_files(setup, operations, compression) -> None:
    schema, mutations, folder = setup
    segment = build_segment(mutations, sections=3, version=8, compression=compression)
    for old in folder.iterdir():
        old.unlink()
    path = folder / segment.name
    path.write_bytes(apply(segment.bytes(), operations))
    decode_checked(schema, folder, path)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=damage, victim=st.integers(0, 119))
def test_damaged_mutations_with_valid_crcs(setup, operations, victim) -> None:
    schema, mutations, folder = setup
    damaged = list(mutations)
    damaged[victim] = apply(damaged[victim], operations) or b"\x01"
    damaged[victim] = damaged[victim] + bytes(max(0, 10 - len(damaged[victim])))
    segment = build_segment(damaged, sections=2, version=8)
    for old in folder.iterdir():
        old.unlink()
    path = folder / segment.name
    path.write_bytes(segment.bytes())
    decode_checked(schema, folder, path)


@pytest.mark.slow
def test_ten_thousand_cases_each(tmp_path: Path) -> None:
    """The long run: 10k damaged files and 10k damaged mutations, in a child process."""
    import subprocess
    import sys

    env = {**os.environ, "CDCFAST_FUZZ_EXAMPLES": "10000"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-m", "not slow", "-p", "no:cacheprovider"],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
