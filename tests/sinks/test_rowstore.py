"""Stored states round-trip exactly, so a sink resumes from them as if it never stopped."""

from __future__ import annotations

from conftest import Corpus

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.events import events_from_batch
from cdcfast.sinks.rowstore import decode_partition, decode_row, encode_partition, encode_row
from cdcfast.sinks.state import TableState


def test_every_corpus_state_round_trips(corpus: Corpus) -> None:
    schema = load_schema(corpus.schema_dir)
    events = [e for b in CommitLogReader(schema).read_paths([corpus.cdc_raw]) for e in events_from_batch(b)]
    checked = 0
    for table in schema.cdc_tables():
        state = TableState(table)
        state.apply_all(events)
        for partition in state.partitions.values():
            again = decode_partition(encode_partition(partition))
            assert (again.deletion_ts, again.ranges, again.static) == (
                partition.deletion_ts,
                partition.ranges,
                partition.static,
            )
            for row in partition.rows.values():
                assert decode_row(encode_row(row)) == row
                checked += 1
    assert checked > 70000


def test_new_rows_encode_as_encode_row_does() -> None:
    from cdcfast.sinks.rowstore import encode_new_row
    from cdcfast.sinks.state import RowState, Version

    live = Version(5, b"", 0)
    for liveness in (None, live, Version(7, b"", 99)):
        for cells in ({}, {"a": Version(3, b"x", 0)}, {"a": Version(3, b"x", 0), "b": Version(4, b"", 12)}):
            assert encode_new_row(liveness, cells) == encode_row(RowState(liveness=liveness, cells=cells))


def test_new_rows_with_clears_and_elements_encode_as_encode_row_does() -> None:
    from cdcfast.sinks.rowstore import encode_new_row
    from cdcfast.sinks.state import RowState, Version

    cells = {"a": Version(3, b"x", 0)}
    for clears in ({}, {"m": 2}, {"m": 2, "s": 5}):
        for elements in (
            {},
            {"m": [(b"k", Version(3, b"v", 0))]},
            {"m": [(b"k", Version(3, b"v", 0)), (b"j", Version(4, b"w", 77))], "s": [(b"e", Version(6, b"", 0))]},
        ):
            row = RowState(liveness=Version(1, b"", 0), cells=cells, clears=clears)
            row.elements = {column: dict(pairs) for column, pairs in elements.items()}
            as_fields = {c: [(p, (v.ts, v.value, v.expires_at)) for p, v in pairs] for c, pairs in elements.items()}
            assert encode_new_row((1, b"", 0), cells, clears, as_fields) == encode_row(row)


def test_compiled_row_fields_encode_as_the_python_fields(corpus: Corpus) -> None:
    """``encode_row`` (its fields made by the compiled ``_state.row_fields``) gives the bytes of the
    stored fields built one by one in Python (``_StoredRow``'s order, every field written), on
    every corpus row state (collection elements, counters, deletions)."""
    import msgspec

    encoder = msgspec.msgpack.Encoder()
    schema = load_schema(corpus.schema_dir)
    events = [e for b in CommitLogReader(schema).read_paths([corpus.cdc_raw]) for e in events_from_batch(b)]
    for table in schema.cdc_tables():
        state = TableState(table)
        state.apply_all(events)
        for partition in state.partitions.values():
            for row in [partition.static, *partition.rows.values()]:
                fields = (
                    row.liveness,
                    row.deletion_ts,
                    row.cells,
                    row.clears,
                    {k: list(e.items()) for k, e in row.elements.items()},
                    {k: [(cid, clock, count) for cid, (clock, count) in s.items()] for k, s in row.counters.items()},
                    row.counter_ts,
                )
                assert encode_row(row) == encoder.encode(fields)
