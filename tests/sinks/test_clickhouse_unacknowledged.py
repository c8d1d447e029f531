"""Inserts the writer does not wait on (:meth:`NativeClient.insert_unacknowledged`), on a real server.

The server stores an insert's data after the client has sent it; the writer goes on preparing its
next write meanwhile and hears the server's answer before its next statement on that connection.
A refusal then stops that statement: nothing written after a refused write.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from clickhouse_driver.errors import ServerException
from support.clickhouse_tables import ThrowawayTables
from support.schemas import text_insert
from support.services import ensure_services
from support.throwaway import made_clickhouse_database

from cdcfast.sinks import clickhouse
from cdcfast.sinks.clickhouse import ClickHouseSink
from cdcfast.sinks.clickhouse_native import NativeClient

pytestmark = pytest.mark.services
SERVER_SECONDS = 2  # how long the server takes over each insert here (a materialized view sleeping)


class Tables:
    """``t`` (whose inserts the server answers after SERVER_SECONDS, refusing a 2), and ``later``."""

    def __init__(self) -> None:
        dsn = ensure_services(["clickhouse"])["clickhouse"]
        self.db = "ua_" + uuid.uuid4().hex[:10]
        made_clickhouse_database(dsn, self.db)
        self.client = NativeClient.from_url(dsn)
        self.client.execute(f"CREATE DATABASE {self.db}")
        for table in ("t", "later"):
            self.client.execute(f"CREATE TABLE {self.db}.{table} (n Int64) ENGINE = Memory")
        self.client.execute(
            f"CREATE MATERIALIZED VIEW {self.db}.slow ENGINE = Memory AS "
            f"SELECT throwIf(n = 2) AS refused, sleep({SERVER_SECONDS}) AS slept FROM {self.db}.t"
        )

    def count(self, table: str) -> int:
        return self.client.execute(f"SELECT count() FROM {self.db}.{table}")[0][0]


def test_an_unacknowledged_insert_returns_before_the_server_is_done_and_the_next_query_sees_it() -> None:
    tables = Tables()
    started = time.monotonic()
    assert tables.client.insert_unacknowledged(f"INSERT INTO {tables.db}.t (n) VALUES", [(1,)]) == 1
    assert time.monotonic() - started < SERVER_SECONDS / 2
    assert tables.count("t") == 1  # the next query waited for the insert's end


def test_a_refused_unacknowledged_insert_stops_the_next_statement() -> None:
    tables = Tables()
    tables.client.insert_unacknowledged(f"INSERT INTO {tables.db}.t (n) VALUES", [(2,)])
    with pytest.raises(ServerException, match="throwIf"):
        tables.client.execute(f"INSERT INTO {tables.db}.later (n) VALUES", [(1,)])
    assert tables.count("later") == 0  # not sent; and the client goes on, on a new connection
    tables.client.execute(f"INSERT INTO {tables.db}.later (n) VALUES", [(1,)])
    assert tables.count("later") == 1


def test_acknowledged_waits_for_the_insert_and_reports_a_refusal() -> None:
    tables = Tables()
    tables.client.acknowledged()  # nothing unacknowledged: nothing to wait for
    tables.client.insert_unacknowledged(f"INSERT INTO {tables.db}.t (n) VALUES", [(1,)])
    tables.client.acknowledged()
    tables.client.insert_unacknowledged(f"INSERT INTO {tables.db}.t (n) VALUES", [(2,)])
    with pytest.raises(ServerException, match="throwIf"):
        tables.client.acknowledged()
    tables.client.acknowledged()  # reported once
    assert tables.count("t") >= 1


def test_a_disconnect_forgets_the_unacknowledged_insert() -> None:
    tables = Tables()
    tables.client.insert_unacknowledged(f"INSERT INTO {tables.db}.t (n) VALUES", [(1,)])
    tables.client.disconnect()
    tables.client.acknowledged()  # nothing to hear on a closed connection
    assert tables.client.execute("SELECT 1") == [(1,)]


def test_a_batch_failing_before_it_hears_a_refusal_leaves_nothing_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer's own work fails while the server is refusing the change log it was sent: the next
    batch (a retry, a part of the batch being isolated) starts clean, not with that old refusal."""
    db = ThrowawayTables("ub_", ("first",))
    events = [text_insert(db.keyspace, "first", 1, seq, seq, 1_700_000_000_000_000 + seq) for seq in range(3)]
    real_plan = clickhouse.plan

    def failing_plan(*args: Any) -> Any:
        raise RuntimeError("planning failed")

    async def run() -> None:
        sink = ClickHouseSink(db.dsn)
        await sink.connect()
        await sink.prepare(db.schema)
        db.refuse_writes_to("first_changes")
        monkeypatch.setattr(clickhouse, "plan", failing_plan)
        with pytest.raises(RuntimeError, match="planning failed"):
            await sink.apply(events, db.tables, "n1", (1, 5))
        monkeypatch.setattr(clickhouse, "plan", real_plan)
        db.client.execute(f"DROP TABLE `{db.keyspace}`.refuse")
        await sink.apply(events, db.tables, "n1", (1, 5))
        assert db.client.execute(f"SELECT count() FROM `{db.keyspace}`.first") == [(3,)]
        await sink.close()

    asyncio.run(run())
