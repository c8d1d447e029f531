"""Inserts the writer does not wait on (:meth:`NativeClient.insert_unacknowledged`), on a real server.

The server stores an insert's data after the client has sent it; the writer goes on preparing its
next write meanwhile and hears the server's answer before its next statement on that connection.
A refusal then stops that statement: nothing written after a refused write.
"""

from __future__ import annotations

import time
import uuid

import pytest
from clickhouse_driver.errors import ServerException
from support.services import ensure_services
from support.throwaway import made_clickhouse_database

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
