"""The ClickHouse writer on a real (old: 18.16) server: corpus replays equal expected/, each change once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from conftest import Corpus
from support.expected import as_of, canonical_rows, differences, load_expected
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import fresh_clickhouse
from support.warehouse import from_clickhouse

from cdcfast.sinks.clickhouse import ClickHouseSink

pytestmark = pytest.mark.services
REPLAYED = 12000  # events applied again, from the start and from the end (replays and replicas)


def test_corpus_replay_equals_expected_exactly_once(corpus: Corpus) -> None:
    dsn = ensure_services(["clickhouse"])["clickhouse"]
    client = fresh_clickhouse(dsn)
    schema, events = cdc_events(corpus)
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}

    async def run() -> None:
        sink = ClickHouseSink(dsn)
        await sink.connect()
        for start in range(0, len(events), 4000):
            part = events[start : start + 4000]
            await sink.apply(part, tables, "node1", (part[-1].segment_id, part[-1].position))
        for start in range(0, REPLAYED, 3000):  # a replay (crash before checkpoint) changes nothing
            part = events[start : start + 3000]
            await sink.apply(part, tables, "node1", (part[-1].segment_id, part[-1].position))
        for node in ("node2", "node3"):  # the same changes as logged by two more replicas
            part = events[-REPLAYED:]
            await sink.apply(part, tables, node, (part[-1].segment_id, part[-1].position))
        failures = []
        for table in schema.cdc_tables():
            writer = sink.writers[(table.keyspace, table.name)]
            columns = table.partition_key + table.clustering + list(table.columns.values())
            rows = client.execute(
                writer.as_of_select(f"toDateTime({as_of(corpus.root)})"), settings={"strings_as_bytes": True}
            )
            decoded = [
                {c.name: from_clickhouse(c.type, writer.sql_type(c), v) for c, v in zip(columns, row)} for row in rows
            ]
            got, want = canonical_rows(table, decoded), load_expected(corpus.root, table)
            # Documented loss: an Array column cannot be NULL, so a null and an empty frozen collection
            # are both [] in ClickHouse.
            arrays = [c.name for c in columns if writer.sql_type(c).startswith("Array")]
            for row in want.values():
                for name in arrays:
                    if row[name] in ((), frozenset()):
                        row[name] = None
            if got != want:
                failures.append(differences(table, got, want))
        assert not failures, "\n\n".join(failures)
        expected_ids = Counter((e.keyspace, e.table) for e in {e.event_id: e for e in events}.values())
        for (ks, name), count in expected_ids.items():
            (n,) = client.execute(f"SELECT count() FROM `{ks}`.`{name}_changes` FINAL")[0]
            assert n == count, f"{ks}.{name}_changes has {n} rows, expected {count}"
        assert not client.execute("EXISTS TABLE shop.sessions_changes")[0][0]
        assert await sink.checkpoint("node1") == (events[-1].segment_id, events[-1].position)
        await sink.close()

    asyncio.run(run())
