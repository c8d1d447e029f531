"""A parser worker follows schema changes: a column or table it does not know makes it read the
schema again and decode the work item with the new one, instead of skipping those changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, Corpus

from cdcfast.commitlog import CommitLogReader, discover, load_schema
from cdcfast.config import PipelineConfig, PostgresSink, SourceConfig
from cdcfast.events import events_from_batch
from cdcfast.supervisor.messages import WorkItem
from cdcfast.supervisor.parser import Parser

CORPUS = "c50-v8-lz4"


def test_a_column_added_since_the_schema_was_read_is_decoded_after_a_reload(
    corpus_scratch: Path, tmp_path: Path
) -> None:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    final_file = sorted(corpus.schema_dir.glob("*.json"))[-1]
    document = json.loads(final_file.read_text())
    document["columns"] = [c for c in document["columns"] if c["column_name"] != "loyalty_tier"]
    schema_dir = tmp_path / "schema"
    schema_dir.mkdir()
    (schema_dir / "001.json").write_text(json.dumps(document))  # as it was before ADD loyalty_tier
    source = SourceConfig(node="n1", cdc_raw=str(corpus.cdc_raw), schema=str(schema_dir))
    config = PipelineConfig(
        sources=[source], sinks=[PostgresSink(name="pg", dsn="postgresql://x/y")], state_dir=str(tmp_path / "state")
    )
    parser = Parser(config, 0)
    segment = discover([corpus.cdc_raw])[0]
    item = WorkItem(0, str(segment.path), segment.version, segment.segment_id, 0, None)
    stale = parser.events(item)  # the schema source is behind: those cells cannot be decoded yet
    assert not any(c.column == "loyalty_tier" for e in stale for c in e.cells)
    shutil.copy(final_file, schema_dir / "002.json")  # the schema source catches up

    got = parser.events(item)

    final = load_schema(corpus.schema_dir)
    reader = CommitLogReader(final)
    want = [e for b in reader.read_segment(segment) for e in events_from_batch(b)]
    want = [e for e in want if (e.keyspace, e.table) in {(t.keyspace, t.name) for t in final.cdc_tables()}]
    assert [e.event_id for e in got] == [e.event_id for e in want]
    assert any(c.column == "loyalty_tier" for e in got for c in e.cells)


def raced_scenario(folder: Path, segment_id: int = 1_800_000_000_011) -> tuple[list[int], int]:
    """app.items: two writes, flushed by a TRUNCATE; a third write after the flush (it raced the
    TRUNCATE: it survives it) in a section of its own; the truncation record; a fourth write.
    Returns the entries' end positions and the recorded position."""
    from events.test_truncate import ITEMS as ITEMS_ID
    from events.test_truncate import T0, TRUNCATED_AT, insert, local, record, startup_metadata, user_schema

    from cdcfast.generate.framing import SegmentBuilder

    items = user_schema().tables[ITEMS_ID]
    builder = SegmentBuilder(segment_id, version=7)
    builder.add_section([startup_metadata(T0 - 10_000_000), insert(items, 1, T0), insert(items, 2, T0 + 1)])
    flushed_at = builder.positions[-1]
    builder.add_section([insert(items, 4, T0 + 3)])  # written between the flush and the record
    builder.add_section(
        [local(record(ITEMS_ID, segment_id, flushed_at, TRUNCATED_AT, TRUNCATED_AT * 1000)), insert(items, 3, T0 + 2)]
    )
    builder.write(folder)
    return list(builder.positions), flushed_at


def truncation_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Parser:
    from events.test_truncate import user_schema

    import cdcfast.supervisor.parser as parser_module

    monkeypatch.setattr(parser_module, "load_schema", lambda _: user_schema())
    source = SourceConfig(node="n1", cdc_raw=str(tmp_path / "cdc_raw"), schema="app-schema")
    config = PipelineConfig(
        sources=[source], sinks=[PostgresSink(name="pg", dsn="postgresql://x/y")], state_dir=str(tmp_path / "state")
    )
    return Parser(config, 0)


def keys(events: list) -> list[tuple[str, int | None]]:
    return [(e.op, int.from_bytes(e.partition_key[0], "big") if e.partition_key else None) for e in events]


def test_truncations_reach_the_sinks_with_the_writes_that_raced_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cdc_raw").mkdir()
    positions, flushed_at = raced_scenario(tmp_path / "cdc_raw")
    parser = truncation_parser(tmp_path, monkeypatch)
    segment = discover([tmp_path / "cdc_raw"])[0]
    events = parser.events(WorkItem(0, str(segment.path), segment.version, segment.segment_id, 0, None))
    assert keys(events) == [("insert", 1), ("insert", 2), ("insert", 4), ("truncate", None), ("insert", 3)]
    truncation = events[3]
    assert truncation.truncated_position == flushed_at
    assert [e.event_id for e in truncation.raced] == [events[2].event_id]  # the write after the flush

    # The raced write read by an earlier work item: read again from the segment for the truncation.
    raced_end = positions[3]  # the end of the section holding the raced write
    first = parser.events(WorkItem(0, str(segment.path), segment.version, segment.segment_id, 0, raced_end))
    second = parser.events(WorkItem(1, str(segment.path), segment.version, segment.segment_id, raced_end, None))
    assert keys(first) == [("insert", 1), ("insert", 2), ("insert", 4)]
    assert keys(second) == [("truncate", None), ("insert", 3)]
    assert second[0].event_id == truncation.event_id
    assert [e.event_id for e in second[0].raced] == [first[2].event_id]


def _parser_on(corpus_scratch: Path, tmp_path: Path, first: dict) -> tuple[Corpus, Path, Parser]:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    schema_dir = tmp_path / "schema"
    schema_dir.mkdir()
    (schema_dir / "001.json").write_text(json.dumps(first))
    source = SourceConfig(node="n1", cdc_raw=str(corpus.cdc_raw), schema=str(schema_dir))
    config = PipelineConfig(
        sources=[source], sinks=[PostgresSink(name="pg", dsn="postgresql://x/y")], state_dir=str(tmp_path / "state")
    )
    return corpus, schema_dir, Parser(config, 0)


def _items(corpus: Corpus) -> list[WorkItem]:
    return [
        WorkItem(n, str(s.path), s.version, s.segment_id, 0, None) for n, s in enumerate(discover([corpus.cdc_raw]))
    ]


def test_cdc_switched_on_for_a_known_table_is_noticed_without_an_unknown_id(
    corpus_scratch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cdcfast.supervisor.parser as parser_module

    monkeypatch.setattr(parser_module, "SCHEMA_POLL", 0.0)
    final_file = sorted((CORPUS_ROOT / CORPUS / "schema").glob("*.json"))[-1]
    document = json.loads(final_file.read_text())
    for table in document["tables"]:
        if table["table_name"] == "users":
            table["cdc"] = False
    corpus, schema_dir, parser = _parser_on(corpus_scratch, tmp_path, document)
    item = _items(corpus)[0]
    assert not any(e.table == "users" for e in parser.events(item))
    shutil.copy(final_file, schema_dir / "002.json")  # ALTER TABLE shop.users WITH cdc = true

    got = parser.events(item)

    assert any(e.table == "users" for e in got)


def test_a_dropped_table_stays_known_to_a_parser_that_read_it(
    corpus_scratch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shop.scratch was created, written and dropped: a parser that knew it decodes its mutations
    read after the drop with its last definition (a lagging parser loses nothing)."""
    import cdcfast.supervisor.parser as parser_module

    monkeypatch.setattr(parser_module, "SCHEMA_POLL", 0.0)
    with_scratch = CORPUS_ROOT / CORPUS / "schema" / "019.json"
    corpus, schema_dir, parser = _parser_on(corpus_scratch, tmp_path, json.loads(with_scratch.read_text()))
    known = load_schema(with_scratch)
    want = [
        e.event_id
        for b in CommitLogReader(known).read_paths([corpus.cdc_raw])
        for e in events_from_batch(b)
        if e.table == "scratch"
    ]
    assert want, "the corpus writes shop.scratch"
    shutil.copy(sorted((CORPUS_ROOT / CORPUS / "schema").glob("*.json"))[-1], schema_dir / "002.json")  # dropped

    got = [e.event_id for item in _items(corpus) for e in parser.events(item) if e.table == "scratch"]

    assert got == want
    assert "scratch" not in {t.name for t in load_schema(schema_dir).tables.values()}, "the file's schema is unchanged"


def _users_cdc(document: dict, on: bool) -> dict:
    document = json.loads(json.dumps(document))
    for table in document["tables"]:
        if table["table_name"] == "users":
            table["cdc"] = on
    return document


def test_cdc_switched_on_is_noticed_by_the_first_work_item_with_the_tables_changes(
    corpus_scratch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes made right after ``cdc = true`` are not lost while the parser waits for its next poll:
    a work item holding changes of a non-CDC table makes it look at the schema source first."""
    import cdcfast.supervisor.parser as parser_module

    monkeypatch.setattr(parser_module, "SCHEMA_POLL", 1e9)  # never by polling
    final_file = sorted((CORPUS_ROOT / CORPUS / "schema").glob("*.json"))[-1]
    final = json.loads(final_file.read_text())
    corpus, schema_dir, parser = _parser_on(corpus_scratch, tmp_path, _users_cdc(final, False))
    item = _items(corpus)[0]
    assert not any(e.table == "users" for e in parser.events(item))
    shutil.copy(final_file, schema_dir / "002.json")  # ALTER TABLE shop.users WITH cdc = true

    assert any(e.table == "users" for e in parser.events(item))


def test_cdc_switched_off_keeps_the_changes_written_before_it_was_noticed(
    corpus_scratch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser notices ``cdc = false`` some time after it happened, and reads the mutations written
    before it later still: those written (timestamp) before the change was noticed stay captured."""
    import cdcfast.supervisor.parser as parser_module

    monkeypatch.setattr(parser_module, "SCHEMA_POLL", 0.0)
    final_file = sorted((CORPUS_ROOT / CORPUS / "schema").glob("*.json"))[-1]
    final = json.loads(final_file.read_text())
    corpus, schema_dir, parser = _parser_on(corpus_scratch, tmp_path, final)
    items = _items(corpus)
    users = sorted(e.ts for item in items for e in parser.events(item) if e.table == "users")
    noticed = users[len(users) // 2]  # the change is noticed half way through the table's writes
    (schema_dir / "002.json").write_text(json.dumps(_users_cdc(final, False)))
    monkeypatch.setattr(parser_module.time, "time", lambda: noticed / 1e6)

    kept = sorted(e.ts for item in items for e in parser.events(item) if e.table == "users")

    assert kept == [ts for ts in users if ts < noticed]
