"""PostgreSQL and TimescaleDB writers compress what they store with LZ4 where the server can.

Change-log cells (JSON of every written value) and stored states often pass PostgreSQL's TOAST
threshold (about 2 kB), and its default compression (pglz) then took about a third of the server's
time for the change log of a wide table (docs/benchmarks.md). LZ4 is several times cheaper to
compress and to read back. Readers need nothing: each value records its own compression.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import CORPUS_ROOT, Corpus
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.sinks.postgres import PostgresSink

pytestmark = pytest.mark.services


@pytest.mark.parametrize("flavour", ["postgres", "timescaledb"])
def test_values_over_the_toast_threshold_are_stored_with_lz4(corpus_scratch, flavour: str) -> None:  # noqa: ANN001
    if not (CORPUS_ROOT / "c50-v8-lz4").exists():
        pytest.skip("corpus missing")
    schema, events = cdc_events(Corpus("c50-v8-lz4", corpus_scratch))
    wide = [e for e in events if e.table == "all_types"]
    dsn = ensure_services([flavour])[flavour]

    async def run() -> set[str | None]:
        sink = PostgresSink(await fresh_database(dsn), name=flavour, timescale=flavour == "timescaledb")
        await sink.connect()
        tables = {(t.keyspace, t.name): t for t in schema.tables.values()}
        await sink.apply(wide, tables, "node1", (wide[-1].segment_id, wide[-1].position))
        assert sink.conn is not None
        rows = await sink.conn.fetch(
            "SELECT pg_column_compression(cells) AS method, count(*) FROM types.all_types_changes GROUP BY 1"
        )
        await sink.close()
        return {r["method"] for r in rows}

    methods = asyncio.run(run())
    assert methods - {None} == {"lz4"}, methods  # None: a value small enough to be stored as it is
