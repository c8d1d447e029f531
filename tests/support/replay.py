"""Corpus events for the sinks' tests: every change of the CDC tables, in commit log order."""

from __future__ import annotations

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.commitlog.schema import Schema
from cdcfast.events import ChangeEvent, events_from_batch


def cdc_events(corpus) -> tuple[Schema, list[ChangeEvent]]:  # noqa: ANN001 (conftest.Corpus)
    schema = load_schema(corpus.schema_dir)
    cdc = {(t.keyspace, t.name) for t in schema.cdc_tables()}
    events = [
        e
        for b in CommitLogReader(schema).read_paths([corpus.cdc_raw])
        for e in events_from_batch(b)
        if (e.keyspace, e.table) in cdc
    ]
    return schema, events
