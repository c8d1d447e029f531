"""The compiled event builder (cdcfast/_events.pyx) makes exactly the events of the Python path.

The Python path (``events_from_batch_python``) is the one the corpus tests check against
Cassandra's reference decoding; the compiled one must give the same events, field for field, in
the same order, with the same content ids (a contract: docs/exactly-once.md). Its pieces are
checked against independent implementations: BLAKE2b against hashlib, the identity's msgpack
against msgspec's encoder.
"""

from __future__ import annotations

import gc
import hashlib
import random
from pathlib import Path

import msgspec
import pytest
from conftest import CORPUS_ROOT, Corpus, corpus_names
from msgspec.structs import astuple

from cdcfast import _events
from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.commitlog.batch import Batch
from cdcfast.events import (
    CLEAR,
    COUNTER,
    RANGE_DELETE,
    TOMBSTONE,
    ChangeEvent,
    content_id,
    events_from_batch,
    events_from_batch_python,
)
from cdcfast.generate.run import GenerateSettings, generate
from cdcfast.generate.workload import WorkloadSpec, parse_mix


def assert_same_events(batches: list[Batch]) -> list[ChangeEvent]:
    everything = []
    for batch in batches:
        compiled = list(events_from_batch(batch))
        python = list(events_from_batch_python(batch))
        assert len(compiled) == len(python)
        for got, want in zip(compiled, python):
            assert got == want, f"{got}\n!=\n{want}"
            assert got.event_id == want.event_id == content_id(got)
            # the same types too (bytes, not memoryviews; ints, not numpy scalars)
            assert [type(getattr(got, f)) for f in got.__struct_fields__] == [
                type(getattr(want, f)) for f in want.__struct_fields__
            ]
            cell_types = [tuple(map(type, astuple(c))) for c in got.cells]
            assert cell_types == [tuple(map(type, astuple(c))) for c in want.cells]
        everything += compiled
    return everything


def test_compiled_events_equal_the_python_path_on_every_corpus(corpus: Corpus) -> None:
    batches = list(CommitLogReader(load_schema(corpus.schema_dir)).read_paths([corpus.cdc_raw]))
    events = assert_same_events(batches)
    assert len(events) > 80000
    assert {e.op for e in events} >= {"insert", "update", "delete", "partition_delete", "range_delete"}


@pytest.mark.parametrize("name", corpus_names() or [pytest.param(None, marks=pytest.mark.skip("no corpora"))])
def test_compiled_events_equal_the_python_path_on_every_operation(name: str, tmp_path: Path) -> None:
    """Generated workloads: TTLs, collections (elements, removals, clearing), counters, statics,
    range deletions of every shape, in small batches (markers and partitions across batch ends)."""
    mix = "insert=30,update=20,collection=15,ttl=10,delete=8,partition_delete=7,range_delete=10"
    spec = WorkloadSpec(mix=parse_mix(mix), seed=17, templates=0)
    generate(GenerateSettings(str(CORPUS_ROOT / name / "schema"), tmp_path, spec, events=6000, progress=False))
    reader = CommitLogReader(load_schema(CORPUS_ROOT / name / "schema"), batch_mutations=97)
    events = assert_same_events(list(reader.read_paths([tmp_path])))
    kinds = {c.kind for e in events for c in e.cells}
    assert kinds >= {TOMBSTONE, CLEAR}
    assert any(c.ttl for e in events for c in e.cells) and any(e.liveness_ttl for e in events)
    assert any(e.static for e in events) and any(e.op == RANGE_DELETE for e in events)
    tables = load_schema(CORPUS_ROOT / name / "schema").cdc_tables()
    if any(c.type_text == "counter" for t in tables for c in t.columns.values()):
        assert COUNTER in kinds


def test_an_empty_batch_has_no_events(corpus: Corpus) -> None:
    batch = next(iter(CommitLogReader(load_schema(corpus.schema_dir)).read_paths([corpus.cdc_raw])))
    empty = Batch(batch.tables, batch.partitions[:0], batch.rows[:0], batch.cells[:0], batch.values[:0], b"")
    assert list(events_from_batch(empty)) == []


def test_blake2b_matches_hashlib() -> None:
    rng = random.Random(6)
    for length in [*range(0, 300), 383, 384, 385, 1024, 4096, 100_000]:
        data = rng.randbytes(length)
        assert _events.blake2b_16(data) == hashlib.blake2b(data, digest_size=16).digest(), length


INT_EDGES = [0, 1, 31, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]
INT_EDGES += [-1, -31, -32, -33, -127, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]


@pytest.mark.parametrize("value", INT_EDGES)
def test_identity_ints_are_packed_as_msgspec_packs_them(value: int) -> None:
    assert _events.msgpack_int(value) == msgspec.msgpack.encode(value)


@pytest.mark.parametrize("length", [0, 1, 31, 32, 255, 256, 65535, 65536])
def test_identity_bytes_are_packed_as_msgspec_packs_them(length: int) -> None:
    data = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    assert _events.msgpack_bytes(data) == msgspec.msgpack.encode(data)


@pytest.mark.parametrize("length", [0, 15, 16, 65535, 65536])
def test_identity_array_headers_are_packed_as_msgspec_packs_them(length: int) -> None:
    assert _events.msgpack_array_header(length) == msgspec.msgpack.encode([None] * length)[: -length or None]


def test_event_lists_are_left_to_reference_counting(corpus: Corpus) -> None:
    """Key, clustering and cell lists hold only bytes, None and cells (which msgspec leaves
    untracked): no cycle can run through them, so the cyclic collector is not made to rescan them
    (events are never changed in place: masking builds new lists)."""
    batch = next(iter(CommitLogReader(load_schema(corpus.schema_dir)).read_paths([corpus.cdc_raw])))
    events = list(events_from_batch(batch))
    fields = ("partition_key", "clustering", "cells", "range_start", "range_end")
    lists = [getattr(e, f) for e in events for f in fields]
    assert not any(gc.is_tracked(x) for x in lists if x is not None)
    assert not any(gc.is_tracked(c) for e in events for c in e.cells)
