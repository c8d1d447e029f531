"""The reconciliation model alone: replaying a corpus gives Cassandra's own SELECT * (expected/)."""

from __future__ import annotations

from conftest import Corpus
from support.expected import as_of, canonical_rows, differences, load_expected

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.events import events_from_batch
from cdcfast.sinks.state import TableState


def test_replay_converges_to_expected(corpus: Corpus) -> None:
    schema = load_schema(corpus.schema_dir)
    reader = CommitLogReader(schema)
    events = [e for batch in reader.read_paths([corpus.cdc_raw]) for e in events_from_batch(batch)]
    now = as_of(corpus.root)
    failures = []
    for table in schema.cdc_tables():
        state = TableState(table)
        state.apply_all(events)
        got = canonical_rows(table, list(state.select(now)))
        want = load_expected(corpus.root, table)
        if got != want:
            failures.append(differences(table, got, want))
    assert not failures, "\n\n".join(failures)


def test_frozen_bytes_decode_like_the_elements(corpus: Corpus) -> None:
    """Non-frozen collections re-serialized as frozen values decode to the same Python value."""
    from dataclasses import replace

    from cdcfast.sinks.state import column_value, frozen_bytes
    from cdcfast.values import decode

    schema = load_schema(corpus.schema_dir)
    reader = CommitLogReader(schema)
    events = [e for batch in reader.read_paths([corpus.cdc_raw]) for e in events_from_batch(batch)]
    checked = 0
    for table in schema.cdc_tables():
        state = TableState(table)
        state.apply_all(events)
        complex_columns = [c for c in table.columns.values() if c.type.is_complex]
        for pk in list(state.partitions)[:200]:
            for row in state.visible_rows(pk):
                for column in complex_columns:
                    elements = row.values[column.name]
                    if elements:
                        frozen = replace(column.type, frozen=True)
                        assert decode(frozen, frozen_bytes(column.type, elements)) == column_value(
                            column.type, elements
                        )
                        checked += 1
    assert checked > 100
