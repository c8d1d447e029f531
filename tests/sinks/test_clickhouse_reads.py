"""The ClickHouse writer's state reads stay small as the state grows (a real 18.16 server).

Every write reads the stored versions of the rows and partitions its batch touches. Those reads go
through the sorting key's sparse index, one mark per ``index_granularity`` rows: with ClickHouse's
default of 8,192, a batch touching a few hundred partitions of a big table reads most of it, on
every write. These tests cap the rows a query may read and check that the writer's reads fit.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException
from conftest import CORPUS_ROOT
from support.clickhouse_tables import ThrowawayTables
from support.services import ensure_services
from support.sinks import fresh_clickhouse

from cdcfast.commitlog import load_schema
from cdcfast.events import UPDATE, Cell, ChangeEvent
from cdcfast.sinks import clickhouse_versions as versions
from cdcfast.sinks.clickhouse import ClickHouseSink
from cdcfast.sinks.merge import partition_key_bytes

pytestmark = pytest.mark.services
STORED = 200_000  # rows (and partition states) already in the table
READ_CAP = 4096  # rows a read may touch: far below the table, above a few granules
TOO_MANY_ROWS = 158  # ClickHouse's error code when max_rows_to_read is exceeded


def capped_client(dsn: str) -> Client:
    url = urlsplit(dsn)
    return Client(
        host=url.hostname,
        port=url.port or 9000,
        settings={"max_rows_to_read": READ_CAP, "read_overflow_mode": "throw"},
    )


def test_a_batchs_state_read_and_look_after_writing_touch_few_rows_of_a_big_state() -> None:
    dsn = ensure_services(["clickhouse"])["clickhouse"]
    client = fresh_clickhouse(dsn)
    schema = load_schema(CORPUS_ROOT / "c50-v8-lz4" / "schema")
    table = next(t for t in schema.cdc_tables() if (t.keyspace, t.name) == ("shop", "users"))

    async def prepare() -> versions.StateTable:
        sink = ClickHouseSink(dsn)
        await sink.connect()
        state = sink.prepare_table(table).state
        await sink.close()
        return state

    state = asyncio.run(prepare())
    # A big stored state: STORED partitions of one row each, as one writer ("node1") left them.
    key = "concat('pk', toString(number))"
    client.execute(
        f"INSERT INTO {state.rows} (_pk, _key, _source, _version, _state, _visible, _basis) "
        f"SELECT {key}, {key}, 'node1', 1, 'row', 1, 0 FROM numbers({STORED})"
    )
    client.execute(
        f"INSERT INTO {state.partitions} (_pk, _state, _version, _source) "
        f"SELECT {key}, '', 1, 'node1' FROM numbers({STORED})"
    )
    for name in (state.rows, state.partitions):
        client.execute(f"OPTIMIZE TABLE {name} FINAL")

    capped = capped_client(dsn)
    with pytest.raises(ServerException) as refused:  # the cap bites: a scan of the table is refused
        capped.execute(f"SELECT count() FROM {state.rows} WHERE _state != ''")
    assert refused.value.code == TOO_MANY_ROWS

    wanted = [f"pk{n}".encode() for n in (7, 99_999, 150_001)]
    scope = versions.Scope({pk: (pk,) for pk in wanted}, wanted, [])
    snapshot = versions.read(capped, state, scope, generation=0)
    assert {pk: dict(snapshot.stored[(pk,)].rows) for pk in wanted} == {pk: {pk: (b"row", True)} for pk in wanted}
    assert not versions.changed_since(capped, state, scope, 0, snapshot, "node2")


def test_a_writers_own_rows_read_back_as_it_wrote_them_after_a_static_value_changes() -> None:
    """Partition 1 of a table with a static column: a static value (the static-only row shows), a
    row (the static-only row goes), the static value again (the partition's state changes). Every
    stored row was made from the partition state stored last: a read finds nothing stale (a stale
    row makes each later write read the partition again after writing, for nothing)."""
    db = ThrowawayTables("st_", static=True)
    pk = ((1).to_bytes(4, "big"),)

    def change(ts: int, cells: list[Cell], seq: int | None = None) -> ChangeEvent:
        return ChangeEvent(
            b"", keyspace=db.keyspace, table="t", op=UPDATE, partition_key=list(pk),
            clustering=[] if seq is None else [seq.to_bytes(4, "big")], ts=ts, cells=cells, static=seq is None,
            segment_id=1, position=ts,
        ).with_content_id()  # fmt: skip

    db.write([change(1, [Cell("s", 0, 1, b"x")])], "n1", (1, 1))
    db.write([change(2, [Cell("a", 0, 2, b"one")], seq=1)], "n1", (1, 2))
    db.write([change(3, [Cell("s", 0, 3, b"y")])], "n1", (1, 3))
    assert db.client.execute(f"SELECT id, seq, a, s FROM `{db.keyspace}`.t") == [(1, 1, "one", "y")]
    pk_bytes = partition_key_bytes(pk)
    snapshot = versions.read(
        db.client, versions.StateTable(db.keyspace, "t"), versions.Scope({pk_bytes: pk}, [pk_bytes], [])
    )
    assert not snapshot.stale, {k: p.stale for k, p in snapshot.stored.items()}
