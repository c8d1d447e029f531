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


def batches(events: list[ChangeEvent], size: int) -> list[list[ChangeEvent]]:
    """About ``size`` changes each, cut between mutations as a parser cuts them (a batch's position
    covers every change at it)."""
    out: list[list[ChangeEvent]] = [[]]
    for event in events:
        last = out[-1]
        if len(last) >= size and (last[-1].segment_id, last[-1].position) != (event.segment_id, event.position):
            out.append([])
        out[-1].append(event)
    return out
