"""A COPY whose connection the server drops ends with a connection error, never hangs.

asyncpg 0.32 waits for its flow control to let it write again before each chunk of a COPY; when the
server drops the connection while writes are paused (a fast producer, a server that is behind), that
never comes and the COPY waits forever: the writer would hang instead of retrying.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.sinks.postgres_copy import copy_in, unless_lost

pytestmark = pytest.mark.services
ROW = b"\x00\x01" + (1000).to_bytes(4, "big") + b"x" * 1000  # one text field of 1000 bytes, binary COPY


async def fast_source(chunks: int):  # noqa: ANN201 - an async generator
    yield b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    for _ in range(chunks):
        yield ROW * 64
    yield b"\xff\xff"


async def terminate_soon(dsn: str, pid: int) -> None:
    await asyncio.sleep(0.3)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"SELECT pg_terminate_backend({pid})")
    finally:
        await admin.close()


def copy(conn: asyncpg.Connection) -> Awaitable[object]:
    return copy_in(conn, "t", source=fast_source(200_000), columns=["a"])


def executemany(conn: asyncpg.Connection) -> Awaitable[object]:
    return unless_lost(conn, conn.executemany("INSERT INTO t VALUES ($1)", [("x" * 10_000,)] * 200_000))


@pytest.mark.parametrize("operation", [copy, executemany])
def test_an_operation_whose_connection_is_dropped_raises_instead_of_hanging(
    operation: Callable[[asyncpg.Connection], Awaitable[object]],
) -> None:
    dsn = ensure_services(["postgres"])["postgres"]

    async def run() -> tuple[BaseException | None, float]:
        db = await fresh_database(dsn)
        conn = await asyncpg.connect(db)
        await conn.execute("CREATE TABLE t (a text)")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        killer = asyncio.create_task(terminate_soon(db, pid))
        started = time.monotonic()
        raised = None
        try:
            await asyncio.wait_for(operation(conn), 30)
        except Exception as exc:  # noqa: BLE001 - which one is asserted below
            raised = exc
        await killer
        return raised, time.monotonic() - started

    raised, seconds = asyncio.run(run())
    assert seconds < 10, f"hung after its connection was dropped ({raised!r})"
    assert isinstance(raised, (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)), repr(raised)


def test_copies_on_a_live_connection_give_their_status() -> None:
    dsn = ensure_services(["postgres"])["postgres"]

    async def run() -> tuple[str, str, int]:
        conn = await asyncpg.connect(await fresh_database(dsn))
        await conn.execute("CREATE TABLE t (a text)")
        copied = await copy_in(conn, "t", source=fast_source(10), columns=["a"])
        encoded = await copy_in(conn, "t", records=[("b",), (None,)], columns=["a"])
        count = await conn.fetchval("SELECT count(*) FROM t WHERE a = 'b' OR a IS NULL OR length(a) = 1000")
        await conn.close()
        return copied, encoded, count

    assert asyncio.run(run()) == ("COPY 640", "COPY 2", 642)
