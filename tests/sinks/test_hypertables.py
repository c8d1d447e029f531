"""TimescaleDB: state tables as hypertables where configured (``hypertables`` of a timescaledb sink)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, Corpus
from support.expected import as_of, differences, load_expected
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import fresh_database, postgres_state

from cdcfast.commitlog.schema import schema_from_rows
from cdcfast.config import Hypertable, Seconds
from cdcfast.errors import ConfigError
from cdcfast.sinks import open_sink
from cdcfast.sinks.postgres import PostgresSink, TableWriter
from cdcfast.transform.typemap import load_mappings


def table(columns: dict[str, tuple[str, str]]):
    """A CDC table ``ks.t`` with ``columns``: name -> (CQL type, kind)."""
    positions = {"partition_key": 0, "clustering": 0}
    rows = []
    for name, (ctype, kind) in columns.items():
        rows.append(
            {
                "keyspace_name": "ks",
                "table_name": "t",
                "column_name": name,
                "type": ctype,
                "kind": kind,
                "position": positions[kind] if kind in positions else -1,
                "clustering_order": "asc" if kind == "clustering" else "none",
            }
        )
        if kind in positions:
            positions[kind] += 1
    schema = schema_from_rows(
        {
            "keyspaces": [{"keyspace_name": "ks", "durable_writes": True}],
            "tables": [
                {"keyspace_name": "ks", "table_name": "t", "id": "11111111-2222-1333-8444-555555555555", "cdc": True}
            ],
            "columns": rows,
            "types": [],
            "dropped_columns": [],
        }
    )
    return schema.cdc_tables()[0]


READINGS = {
    "sensor": ("text", "partition_key"),
    "day": ("date", "partition_key"),
    "at": ("timestamp", "clustering"),
    "seq": ("int", "clustering"),
    "value": ("double", "regular"),
    "taken": ("timestamp", "regular"),
}


@pytest.mark.parametrize(
    "columns, time_column, words",
    [
        (READINGS, "taken", ["ks.t", "'taken'", "regular column", "primary key (sensor, day, at, seq)"]),
        (READINGS, "nope", ["ks.t", "'nope'", "no column"]),
        (READINGS, "seq", ["ks.t", "'seq'", "int column", "timestamp or date"]),
        ({**READINGS, "site": ("text", "static")}, "at", ["ks.t", "'at'", "static columns", "partition key column"]),
    ],
)
def test_a_time_column_outside_the_primary_key_is_a_config_error(
    columns: dict, time_column: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as error:
        TableWriter(table(columns), load_mappings(), timescale=True, hypertable=Hypertable(time_column=time_column))
    message = str(error.value)
    assert "hypertables" in message and all(word in message for word in words), message


@pytest.mark.parametrize("time_column", ["at", "day"])
def test_time_columns_of_the_primary_key_are_accepted(time_column: str) -> None:
    writer = TableWriter(
        table(READINGS), load_mappings(), timescale=True, hypertable=Hypertable(time_column=time_column)
    )
    assert any('create_hypertable(\'"ks"."t"\'' in statement for statement in writer.ddl())
    assert f'PRIMARY KEY (_key, "{time_column}")' in next(
        s for s in writer.ddl() if 'TABLE IF NOT EXISTS "ks"."t" (' in s
    )


def test_hypertables_only_on_timescaledb() -> None:
    with pytest.raises(ConfigError, match="TimescaleDB"):
        open_sink("postgresql", "postgresql://x/y", "pg", hypertables={"ks.t": Hypertable(time_column="at")})


@pytest.mark.services
def test_readings_state_as_a_hypertable_equals_expected(corpus_scratch: Path) -> None:
    """telemetry.readings' state partitioned on its clustering timestamp, created first as a plain
    table (migrated when the setting comes), equals Cassandra's SELECT; the chunks hold it."""
    if not (CORPUS_ROOT / "c50-v8-lz4").exists():
        pytest.skip("corpus missing")
    corpus = Corpus("c50-v8-lz4", corpus_scratch)
    dsn = ensure_services(["timescaledb"])["timescaledb"]
    schema, events = cdc_events(corpus)
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}
    readings = tables[("telemetry", "readings")]
    events = [e for e in events if e.table == "readings"]
    db = asyncio.run(fresh_database(dsn))

    async def run() -> tuple[int, int, list[str]]:
        plain = PostgresSink(db, name="ts", timescale=True)  # before the setting: a plain state table
        await plain.connect()
        await plain.apply(events[:3000], tables, "node1", (events[2999].segment_id, events[2999].position))
        await plain.close()
        hypertable = Hypertable(time_column="ts", chunk_interval=Seconds(1))  # the readings span 13 s
        sink = PostgresSink(db, name="ts", timescale=True, hypertables={"telemetry.readings": hypertable})
        await sink.connect()
        for start in range(3000, len(events), 5000):
            part = events[start : start + 5000]
            await sink.apply(part, tables, "node1", (part[-1].segment_id, part[-1].position))
        conn = sink.conn
        assert conn is not None
        hypertables = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'telemetry' AND hypertable_name = 'readings'"
        )
        chunks = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_schema = 'telemetry' AND hypertable_name = 'readings'"
        )
        key = await conn.fetch(
            "SELECT a.attname FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
            "AND a.attnum = ANY(c.conkey) WHERE c.conrelid = 'telemetry.readings'::regclass AND c.contype = 'p'"
        )
        await sink.close()
        return hypertables, chunks, sorted(r[0] for r in key)

    hypertables, chunks, key = asyncio.run(run())
    assert hypertables == 1 and chunks > 1 and key == ["_key", "ts"]
    got = asyncio.run(postgres_state(db, readings, as_of(corpus.root)))
    want = load_expected(corpus.root, readings)
    assert got == want, differences(readings, got, want)
