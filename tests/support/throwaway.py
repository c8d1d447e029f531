"""Databases the tests make for themselves, dropped when the test that made them ends.

Every test that replicates into PostgreSQL or TimescaleDB gets a database of its own
(``support.sinks.fresh_database``), and the live tests a ClickHouse database named after their
random keyspace. Left behind, they filled a developer's disk (28 GB in three sessions). Whatever
makes one registers it here (:func:`made_postgres_database`, :func:`made_clickhouse_database`);
this module, a pytest plugin (``tests/conftest.py`` loads it), drops at the end of each test the
databases made during it (its fixtures included), after the test's own teardown, so a test can read
its databases until its last line. What a fixture of a wider scope made goes at the end of the
session. ``CDCFAST_KEEP_TEST_DATABASES=1`` keeps them all, for a post-mortem.

A server that is gone by then (a test's private servers, stopped and removed with their folder)
took its databases with it: nothing to drop there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import NetworkError, SocketTimeoutError

KEEP_VARIABLE = "CDCFAST_KEEP_TEST_DATABASES"


@dataclass(frozen=True)
class Throwaway:
    kind: str  # "postgresql" (TimescaleDB too) or "clickhouse"
    server: str  # a DSN of the server: for PostgreSQL one of another database, to drop it from
    name: str


_made: list[Throwaway] = []


def made_postgres_database(admin_dsn: str, name: str) -> None:
    """Database ``name``, made through ``admin_dsn`` (a connection to another database of the same
    server), is to be dropped when the current test ends."""
    _made.append(Throwaway("postgresql", admin_dsn, name))


def made_clickhouse_database(dsn: str, name: str) -> None:
    """ClickHouse database ``name`` on ``dsn``'s server is to be dropped when the current test ends."""
    _made.append(Throwaway("clickhouse", dsn, name))


def drop_made_since(start: int) -> None:
    """Drop the databases registered since the registry held ``start`` of them."""
    made, _made[start:] = _made[start:], []
    if os.environ.get(KEEP_VARIABLE) == "1":
        return
    for item in reversed(made):
        if item.kind == "clickhouse":
            _drop_clickhouse(item)
        else:
            asyncio.run(_drop_postgres(item))


async def _drop_postgres(item: Throwaway) -> None:
    try:
        admin = await asyncpg.connect(item.server, timeout=10)
    except (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError):
        return  # the server is gone, and its databases with it
    try:
        # FORCE: a pipeline the test left running (or killed half-way) may still be connected
        await admin.execute(f'DROP DATABASE IF EXISTS "{item.name}" WITH (FORCE)')
    finally:
        await admin.close()


def _drop_clickhouse(item: Throwaway) -> None:
    client = Client.from_url(item.server)
    try:
        client.execute(f"DROP DATABASE IF EXISTS `{item.name}`")
    except (NetworkError, SocketTimeoutError):
        return  # the server is gone, and its databases with it
    finally:
        client.disconnect()


@pytest.fixture(autouse=True)
def drop_the_tests_databases() -> Iterator[None]:
    # Autouse: set up before the test's other function fixtures, torn down after them.
    start = len(_made)
    yield
    drop_made_since(start)


@pytest.fixture(scope="session", autouse=True)
def drop_the_sessions_databases() -> Iterator[None]:
    yield
    drop_made_since(0)
