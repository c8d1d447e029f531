"""Real mutations from the corpora, re-framed into segments of any shape for focused tests."""

from __future__ import annotations

import itertools
from pathlib import Path

from cdcfast.commitlog.segment import discover, raw_entries
from cdcfast.generate.framing import SegmentBuilder


def real_mutations(cdc_raw: Path, count: int, skip: int = 0) -> list[bytes]:
    """``count`` mutations in commit log order, starting after ``skip`` of them."""
    entries = (m for seg in discover([cdc_raw]) for _, m in raw_entries(seg.path))
    return list(itertools.islice(entries, skip, skip + count))


def build_segment(
    mutations: list[bytes],
    sections: int,
    segment_id: int = 1_800_000_000_000,
    version: int = 7,
    compression: str | None = None,
    preallocate: int = 0,
) -> SegmentBuilder:
    builder = SegmentBuilder(segment_id, version=version, compression=compression, preallocate=preallocate)
    per = max(1, -(-len(mutations) // sections))
    for start in range(0, len(mutations), per):
        builder.add_section(mutations[start : start + per])
    return builder
