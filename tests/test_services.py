"""The throwaway database servers of scripts/services.sh really run and accept the drivers we use."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import uuid
from urllib.parse import urlsplit

import asyncpg
import pytest
from clickhouse_driver import Client
from support.services import ALL_SERVICES, ensure_services

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def dsns() -> dict[str, str]:
    return ensure_services(ALL_SERVICES)


def test_dsns_point_at_loopback(dsns: dict[str, str]) -> None:
    assert set(dsns) == set(ALL_SERVICES)
    for name, dsn in dsns.items():
        parts = urlsplit(dsn)
        assert parts.hostname == "127.0.0.1", (name, dsn)
        assert parts.port, (name, dsn)
    assert urlsplit(dsns["postgres"]).scheme == "postgresql"
    assert urlsplit(dsns["timescaledb"]).scheme == "postgresql"
    assert urlsplit(dsns["clickhouse"]).scheme == "clickhouse"
    assert urlsplit(dsns["postgres"]).port != urlsplit(dsns["timescaledb"]).port


def test_ensure_services_is_idempotent(dsns: dict[str, str]) -> None:
    assert ensure_services(["clickhouse", "postgres"]) == {
        "clickhouse": dsns["clickhouse"],
        "postgres": dsns["postgres"],
    }


def test_postgres_15(dsns: dict[str, str]) -> None:
    async def probe() -> tuple[str, str]:
        conn = await asyncpg.connect(dsns["postgres"])
        try:
            return await conn.fetchval("select version()"), await conn.fetchval("select current_database()")
        finally:
            await conn.close()

    version, database = asyncio.run(probe())
    assert version.startswith("PostgreSQL 15."), version
    assert database == "cdcfast"


def test_timescaledb_hypertable(dsns: dict[str, str]) -> None:
    table = f"services_probe_{uuid.uuid4().hex[:12]}"

    async def probe() -> tuple[str | None, str, int, int]:
        conn = await asyncpg.connect(dsns["timescaledb"])
        try:
            extversion = await conn.fetchval("select extversion from pg_extension where extname = 'timescaledb'")
            preload = await conn.fetchval("show shared_preload_libraries")
            # Everything in one rolled-back transaction: the database stays clean between runs.
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(f"create table {table} (ts timestamptz not null, v bigint)")
                await conn.execute(f"select create_hypertable('{table}', 'ts')")
                await conn.execute(
                    f"insert into {table} select t, 1 from generate_series("
                    "'2024-01-01'::timestamptz, '2024-03-01'::timestamptz, interval '1 hour') t"
                )
                hypertables = await conn.fetchval(
                    "select count(*) from timescaledb_information.hypertables where hypertable_name = $1",
                    table,
                )
                chunks = await conn.fetchval(
                    "select count(*) from timescaledb_information.chunks where hypertable_name = $1", table
                )
            finally:
                await tx.rollback()
            return extversion, preload, hypertables, chunks
        finally:
            await conn.close()

    extversion, preload, hypertables, chunks = asyncio.run(probe())
    assert extversion is not None and re.fullmatch(r"\d+\.\d+\.\d+", extversion), extversion
    assert "timescaledb" in preload
    assert hypertables == 1
    # Two months of data with the default 7-day chunk interval spans several chunks.
    assert chunks > 1


def _installed_clickhouse_version() -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "clickhouse-server"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        return None
    # "18.16.1+ds-7.3+b2" -> "18.16.1"
    return re.split(r"[+~-]", proc.stdout.split(":")[-1])[0]


def test_clickhouse_native_protocol(dsns: dict[str, str]) -> None:
    client = Client.from_url(dsns["clickhouse"])
    table = f"services_probe_{uuid.uuid4().hex[:12]}"
    try:
        ((version,),) = client.execute("SELECT version()")
        assert re.fullmatch(r"\d+\.\d+\.\d+(\.\d+)?", version), version
        expected = _installed_clickhouse_version()
        if expected is not None:
            assert version.startswith(expected), (version, expected)

        client.execute(f"CREATE TABLE {table} (id UInt64, s String) ENGINE = MergeTree ORDER BY id")
        try:
            client.execute(f"INSERT INTO {table} (id, s) VALUES", [(i, f"row{i}") for i in range(1000)])
            assert client.execute(f"SELECT count(), sum(id), any(s) FROM {table} WHERE id = 7") == [(1, 7, "row7")]
        finally:
            client.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        client.disconnect()
