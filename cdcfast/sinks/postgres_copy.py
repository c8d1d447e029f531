"""COPY (and ``executemany``) on a connection the server may drop.

asyncpg (0.32) waits for its flow control to allow writing before each chunk of a COPY (and of an
``executemany``'s arguments), with no limit. When the server drops the connection while writes are
paused (a fast producer, a server that is behind, a backend terminated or restarted), nothing allows
them again and the operation waits forever: a writer would hang instead of retrying
(tests/sinks/test_postgres_copy.py; found by tests/supervisor/test_chaos.py cutting connections
under the writers). Every COPY of the PostgreSQL writers goes through :func:`copy_in`, and every
``executemany`` through :func:`unless_lost`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


async def copy_in(
    conn: asyncpg.Connection,
    table: str,
    *,
    columns: Sequence[str],
    schema_name: str | None = None,
    source: AsyncIterable[bytes] | None = None,
    records: Iterable[Sequence[Any]] | None = None,
) -> str:
    """Rows into ``table``: ``source`` (binary COPY bytes) or ``records`` (encoded by asyncpg). Gives
    the server's status; raises ``ConnectionDoesNotExistError`` if the connection goes meanwhile."""
    if source is not None:
        copy = conn.copy_to_table(table, schema_name=schema_name, source=source, columns=columns, format="binary")
    else:
        copy = conn.copy_records_to_table(table, schema_name=schema_name, records=records, columns=columns)
    return await unless_lost(conn, copy)


async def unless_lost(conn: asyncpg.Connection, operation: Awaitable[T]) -> T:
    """``operation`` (on ``conn``), given up with ``ConnectionDoesNotExistError`` if the connection
    goes first."""
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_lost(_: object) -> None:
        if not lost.done():
            lost.set_result(None)

    conn.add_termination_listener(on_lost)
    task = asyncio.ensure_future(operation)
    try:
        await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise asyncpg.ConnectionDoesNotExistError("the connection was lost during a COPY or executemany")
    finally:
        conn.remove_termination_listener(on_lost)
        lost.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
