"""Change events: one per changed row / deletion, Cassandra's insert-update distinction, content ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from conftest import Corpus
from support.segments import build_segment, real_mutations

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.events import DELETE, INSERT, PARTITION_DELETE, RANGE_DELETE, UPDATE, ChangeEvent, events_from_batch


def read_events(corpus: Corpus, *paths: Path) -> list[ChangeEvent]:
    reader = CommitLogReader(load_schema(corpus.schema_dir))
    return [event for batch in reader.read_paths(paths) for event in events_from_batch(batch)]


def test_no_two_different_changes_share_an_id(corpus: Corpus) -> None:
    events = read_events(corpus, corpus.cdc_raw)
    by_id: dict[bytes, ChangeEvent] = {}
    for event in events:
        twin = by_id.setdefault(event.event_id, event)
        strip = {"segment_id": 0, "position": 0}
        assert twin is event or (
            twin.__class__(**{**{f: getattr(twin, f) for f in twin.__struct_fields__}, **strip})
            == event.__class__(**{**{f: getattr(event, f) for f in event.__struct_fields__}, **strip})
        ), f"{twin} and {event} share an id"
    assert len(by_id) > 80000


def test_operations_follow_cassandra(corpus: Corpus) -> None:
    ops = Counter(event.op for event in read_events(corpus, corpus.cdc_raw) if event.keyspace != "system")
    assert ops[INSERT] > 70000 and ops[UPDATE] > 1000
    assert ops[DELETE] > 10 and ops[PARTITION_DELETE] > 10 and ops[RANGE_DELETE] > 10


def test_ids_are_equal_on_reread_from_another_segment(corpus: Corpus, tmp_path: Path) -> None:
    """The same mutations framed into another node's segment (other id, other positions)."""
    mutations = real_mutations(corpus.cdc_raw, 3000, skip=2000)
    here, there = tmp_path / "a", tmp_path / "b"
    here.mkdir()
    there.mkdir()
    build_segment(mutations, sections=3, segment_id=1_000_000_000_001).write(here)
    build_segment(mutations, sections=7, segment_id=2_000_000_000_002, compression="LZ4Compressor").write(there)
    first, second = read_events(corpus, here), read_events(corpus, there)
    assert len(first) > 2500
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert [e.position for e in first] != [e.position for e in second]


def test_ids_are_equal_on_reread_of_a_snapshot(corpus: Corpus, tmp_path: Path) -> None:
    from commitlog.test_corpus_reference import assemble_snapshot

    full = [e.event_id for e in read_events(corpus, corpus.cdc_raw)]
    folder = assemble_snapshot(corpus, "mid-updates", tmp_path / "mid")
    partial = [e.event_id for e in read_events(corpus, folder)]
    assert partial and partial == full[: len(partial)]
