"""Sink errors are classified from what the real servers and drivers raise."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ErrorCodes, ServerException
from support.services import ensure_services

from cdcfast.sinks.errors import ErrorClass, classify, unanswered

pytestmark = pytest.mark.services


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raised(coroutine) -> BaseException:
    try:
        asyncio.run(coroutine)
    except BaseException as exc:  # noqa: BLE001 - the point is to keep what was raised
        return exc
    raise AssertionError("nothing was raised")


def test_an_unreachable_postgresql_is_transient() -> None:
    exc = raised(asyncpg.connect(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", timeout=5))
    assert classify(exc) is ErrorClass.TRANSIENT


def test_postgresql_authorization_and_a_missing_database_stop_the_sink() -> None:
    dsn = ensure_services(["postgres"])["postgres"]
    no_user = dsn.replace("postgres@", "no_such_user@")
    assert classify(raised(asyncpg.connect(no_user))) is ErrorClass.PERMANENT
    no_database = dsn.rsplit("/", 1)[0] + "/no_such_database"
    assert classify(raised(asyncpg.connect(no_database))) is ErrorClass.PERMANENT


def test_postgresql_value_errors_are_poison_and_serialization_failures_transient() -> None:
    dsn = ensure_services(["postgres"])["postgres"]

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    assert classify(raised(run("SELECT 40000::smallint"))) is ErrorClass.POISON
    assert classify(raised(run("SELECT 1/0"))) is ErrorClass.POISON
    assert classify(raised(run("DO $$ BEGIN RAISE serialization_failure; END $$"))) is ErrorClass.TRANSIENT
    assert classify(raised(run("DO $$ BEGIN RAISE too_many_connections; END $$"))) is ErrorClass.TRANSIENT
    assert classify(raised(run("SELECT * FROM no_such_table"))) is ErrorClass.PERMANENT


def test_a_connection_cut_by_the_server_is_transient() -> None:
    dsn = ensure_services(["postgres"])["postgres"]

    async def cut() -> None:
        conn, admin = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            pid = conn.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                await asyncio.sleep(0.05)  # the backend is going: wait until it is gone
            await conn.execute("SELECT 1")
        finally:
            await admin.close()

    assert classify(raised(cut())) is ErrorClass.TRANSIENT


def test_clickhouse_errors() -> None:
    dsn = ensure_services(["clickhouse"])["clickhouse"]
    port = closed_port()
    unreachable = Client("127.0.0.1", port=port, connect_timeout=2)
    with pytest.raises(Exception) as caught:
        unreachable.execute("SELECT 1")
    assert classify(caught.value) is ErrorClass.TRANSIENT
    wrong_password = Client.from_url(dsn.replace("default@", "default:wrong@"))
    with pytest.raises(ServerException) as caught:
        wrong_password.execute("SELECT 1")
    assert classify(caught.value) is ErrorClass.PERMANENT
    client = Client.from_url(dsn)
    with pytest.raises(ServerException) as caught:
        client.execute("SELECT toUInt8('x')")
    assert classify(caught.value) is ErrorClass.POISON
    with pytest.raises(ServerException) as caught:
        greedy = "SELECT count() FROM numbers(10000000) GROUP BY number % 1000000"
        client.execute(greedy, settings={"max_memory_usage": 1000})
    assert caught.value.code == ErrorCodes.MEMORY_LIMIT_EXCEEDED
    assert classify(caught.value) is ErrorClass.TRANSIENT


def test_only_a_server_that_says_nothing_is_unanswered() -> None:
    """What makes a writer's watch cut a write's connection (cdcfast.supervisor.writer): no answer at
    all, never an answer that is an error (the server is there)."""
    dsn = ensure_services(["postgres", "clickhouse"])
    assert unanswered(TimeoutError())
    assert unanswered(raised(asyncpg.connect(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", timeout=5)))
    with pytest.raises(Exception) as caught:
        Client("127.0.0.1", port=closed_port(), connect_timeout=2).execute("SELECT 1")
    assert unanswered(caught.value)

    async def busy() -> None:
        conn = await asyncpg.connect(dsn["postgres"])
        try:
            await conn.execute("DO $$ BEGIN RAISE too_many_connections; END $$")
        finally:
            await conn.close()

    assert not unanswered(raised(busy()))
    with pytest.raises(ServerException) as caught:
        Client.from_url(dsn["clickhouse"]).execute("SELECT toUInt8('x')")
    assert not unanswered(caught.value)
    assert not unanswered(RuntimeError("a bug in asking"))


def test_the_protocol_confusion_a_cut_leaves_behind_is_transient() -> None:
    # Seen on a loaded machine when the server cut the connection under a query.
    confused = asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    assert classify(confused) is ErrorClass.TRANSIENT


def test_anything_else_is_permanent_for_the_sink() -> None:
    assert classify(RuntimeError("a bug")) is ErrorClass.PERMANENT
    assert classify(TimeoutError()) is ErrorClass.TRANSIENT


def test_values_only_the_write_refuses_are_poison_and_privileges_stop_the_sink() -> None:
    """Raised for real: a key too big for a btree index, a value the drivers cannot send; while a
    missing privilege, which fails every event alike, stays permanent for the sink."""
    dsn = ensure_services(["postgres"])["postgres"]

    async def run(*sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TEMP TABLE k (k bytea PRIMARY KEY)")
            for statement in sql:
                await conn.execute(statement)
        finally:
            await conn.close()

    random_key = "SELECT decode(string_agg(md5(i::text), ''), 'hex') FROM generate_series(1, 900) i"  # 14 kB
    too_wide = raised(run(f"INSERT INTO k {random_key}"))
    assert getattr(too_wide, "sqlstate", None) == "54000" and classify(too_wide) is ErrorClass.POISON
    denied = raised(run("SET ROLE pg_read_all_data", "INSERT INTO k VALUES ('x')"))
    assert getattr(denied, "sqlstate", None) == "42501" and classify(denied) is ErrorClass.PERMANENT

    async def far_future() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TEMP TABLE t (t int)")
            await conn.copy_records_to_table("t", records=[(2**40,)])
        finally:
            await conn.close()

    assert classify(raised(far_future())) is ErrorClass.POISON  # OverflowError, from asyncpg's encoder
    client = Client.from_url(ensure_services(["clickhouse"])["clickhouse"])
    client.execute("CREATE TABLE IF NOT EXISTS default.poison_probe (t DateTime) ENGINE = Memory")
    with pytest.raises(Exception) as caught:
        client.execute("INSERT INTO default.poison_probe (t) VALUES", [(2**40,)])
    assert classify(caught.value) is ErrorClass.POISON  # clickhouse-driver: TypeMismatchError
    assert client.execute("SELECT 1") == [(1,)]  # the client reconnects after it
