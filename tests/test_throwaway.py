"""The databases a test makes for itself are gone once it ends (support.throwaway), not before.

An inner pytest session (pytester, a process of its own) with two tests: the first makes a
PostgreSQL database with ``fresh_database`` and leaves a client connected to it (a pipeline still
running at teardown), and a ClickHouse database; the second, run after it, finds both gone and the
client cut off, while a database made by a module fixture is still there for it. After the
session nothing of the three is left.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest
from clickhouse_driver import Client
from support.services import ensure_services

pytestmark = pytest.mark.services

TESTS = Path(__file__).resolve().parent

INNER = """
import asyncio
import subprocess
from pathlib import Path

import asyncpg
import pytest
from clickhouse_driver import Client
from support.sinks import fresh_database
from support.throwaway import made_clickhouse_database

PG, CH, NOTES = {pg!r}, {ch!r}, Path({notes!r})
held = []


async def databases():
    conn = await asyncpg.connect(PG)
    try:
        return {{r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def module_database():
    return asyncio.run(fresh_database(PG)).rsplit("/", 1)[1]


def test_first_makes_databases(module_database):
    own = asyncio.run(fresh_database(PG))
    held.append(subprocess.Popen(["psql", own, "-c", "SELECT pg_sleep(600)"], stderr=subprocess.DEVNULL))
    ch = "t_" + own.rsplit("_", 1)[1]
    Client.from_url(CH).execute(f"CREATE DATABASE `{{ch}}`")
    made_clickhouse_database(CH, ch)
    NOTES.write_text(own.rsplit("/", 1)[1] + " " + ch + " " + module_database)
    asyncio.run(asyncio.sleep(0.5))  # psql connected
    assert own.rsplit("/", 1)[1] in asyncio.run(databases())  # the test's own until its end


def test_second_finds_them_gone(module_database):
    own, ch, module = NOTES.read_text().split()
    assert own not in asyncio.run(databases())
    assert not Client.from_url(CH).execute("SELECT name FROM system.databases WHERE name = %(n)s", {{"n": ch}})
    assert held[0].wait(timeout=30) != 0  # its connection cut by DROP DATABASE ... WITH (FORCE)
    assert module in asyncio.run(databases())  # a module fixture's: still there for this test
"""


async def postgres_databases(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


def test_databases_made_by_a_test_are_dropped_when_it_ends(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsns = ensure_services(["postgres", "clickhouse"])
    notes = pytester.path / "made.txt"
    pytester.makepyfile(test_inner=INNER.format(pg=dsns["postgres"], ch=dsns["clickhouse"], notes=str(notes)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("CDCFAST_KEEP_TEST_DATABASES", raising=False)

    result = pytester.runpytest_subprocess("-p", "support.throwaway", "-p", "no:cacheprovider", timeout=300)

    result.assert_outcomes(passed=2)
    own, ch, module = notes.read_text().split()
    assert not {own, module} & asyncio.run(postgres_databases(dsns["postgres"]))
    assert not Client.from_url(dsns["clickhouse"]).execute(
        "SELECT name FROM system.databases WHERE name = %(n)s", {"n": ch}
    )
