"""A Cassandra 3.8-3.11 ``cdc_raw``: descriptor-6 segments and no ``_cdc.idx`` files.

Cassandra 3.x writes no idx: it moves (renames) a segment that held CDC data into cdc_raw once the
segment is discarded, so a file there is complete and final (docs/reference §7.2). From 4.0 on a
segment without an idx in cdc_raw is a link to a live segment with no CDC data yet, to be left
alone. Mutation bytes are the same for messaging versions 11 (3.x) and 12 (4.x), so a 3.x cdc_raw
is made here from a corpus' descriptor-7 segments: the header rewritten as version 6, no idx files.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import Corpus
from support.pipeline import supervise_command
from support.services import ensure_services
from support.sinks import fresh_database, postgres_differences

from cdcfast.commitlog import discover
from cdcfast.commitlog.segment import open_segment, read_cdc_index, read_descriptor
from cdcfast.generate.framing import descriptor_header


def as_cassandra3(cdc_raw: Path, target: Path) -> list[Path]:
    """``cdc_raw``'s segments that hold CDC data (have an idx), as Cassandra 3.x leaves them."""
    target.mkdir()
    made = []
    for segment in discover([cdc_raw]):
        if segment.idx_path is None or not read_cdc_index(segment.idx_path).completed:
            continue
        data = bytes(open_segment(segment.path))
        descriptor = read_descriptor(segment.path, data)
        assert descriptor.version == 7
        header = descriptor_header(6, descriptor.segment_id, descriptor.params)
        assert len(header) == descriptor.header_len and struct.unpack(">i", header[:4]) == (6,)
        path = target / f"CommitLog-6-{descriptor.segment_id}.log"
        path.write_bytes(header + data[descriptor.header_len :])
        made.append(path)
    return made


def test_a_cassandra3_segment_in_cdc_raw_is_complete_and_one_of_4x_without_idx_is_not_known_yet(
    tmp_path: Path,
) -> None:
    for name in ("CommitLog-6-1.log", "CommitLog-7-2.log"):
        (tmp_path / name).write_bytes(b"x" * 64)
    found = {s.version: s.cdc_index() for s in discover([tmp_path])}
    assert found[6].completed and found[6].offset is not None
    assert not found[7].completed and found[7].offset is None


@pytest.mark.services
def test_until_idle_delivers_and_cleans_a_cassandra3_cdc_raw(corpus: Corpus, tmp_path: Path) -> None:
    if not any(p.name.startswith("CommitLog-7-") for p in corpus.cdc_raw.iterdir()):
        pytest.skip(f"{corpus.name}: descriptor 8 (messaging 13) has no 3.x twin")
    cdc_raw = tmp_path / "cdc_raw"
    segments = as_cassandra3(corpus.cdc_raw, cdc_raw)
    assert segments and not list(cdc_raw.glob("*.idx"))
    pg = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    result = subprocess.run(
        supervise_command(cdc_raw, corpus.schema_dir, pg, until_idle=True), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-5000:]
    failures = postgres_differences(pg, corpus)
    assert not failures, "\n\n".join(failures)
    assert not list(cdc_raw.iterdir())  # delivered to every sink: deleted, or 3.x refuses CDC writes when full
