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
