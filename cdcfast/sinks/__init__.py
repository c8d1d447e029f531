"""Write: one writer per warehouse, the same interface for each (``connect``, ``prepare``,
``checkpoint``, ``apply``, ``close``). :func:`open_sink` picks it from a DSN's scheme."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from cdcfast.errors import ConfigError, SinkUnreachable
from cdcfast.sinks.tcp import TCP_TIMEOUT_SECONDS

CONNECT_SECONDS = 10.0  # how long a one-shot command (status, dlq) waits for a sink to let it in

SCHEMES = ("postgresql://", "postgres://", "timescaledb://", "clickhouse://", "null://")


def sink_kind(dsn: str) -> str:
    for scheme, kind in (
        ("postgresql://", "postgresql"),
        ("postgres://", "postgresql"),
        ("timescaledb://", "timescaledb"),
        ("clickhouse://", "clickhouse"),
        ("null://", "null"),
    ):
        if dsn.startswith(scheme):
            return kind
    from cdcfast.config import redact_dsn  # here: cdcfast.config imports cdcfast.sinks

    raise ConfigError(f"sink DSN {redact_dsn(dsn)!r}: expected one of {', '.join(SCHEMES)}")


def open_sink(
    kind: str,
    dsn: str,
    name: str,
    hypertables: Mapping[str, Any] | None = None,
    dropped_columns: str = "keep",
    auto_migrate: bool = True,
    tcp_timeout_seconds: float = TCP_TIMEOUT_SECONDS,
) -> Any:
    """A writer for ``kind`` (postgresql, timescaledb, clickhouse); TimescaleDB DSNs may be given as
    ``timescaledb://`` or as PostgreSQL DSNs. ``hypertables`` (TimescaleDB): ``keyspace.table`` ->
    :class:`cdcfast.config.Hypertable`, the state tables to create as hypertables.
    ``dropped_columns`` and ``auto_migrate``: how schema changes reach the warehouse
    (docs/schema-evolution.md). ``tcp_timeout_seconds``: how long a connection whose server
    acknowledges nothing lives (:mod:`cdcfast.sinks.tcp`)."""
    migration = {"dropped_columns": dropped_columns, "auto_migrate": auto_migrate}
    if kind == "null":
        from cdcfast.sinks.null import NullSink

        return NullSink(dsn, name=name)
    if kind == "clickhouse":
        from cdcfast.sinks.clickhouse import ClickHouseSink

        return ClickHouseSink(dsn, name=name, tcp_timeout_seconds=tcp_timeout_seconds, **migration)  # type: ignore[arg-type]
    from cdcfast.sinks.postgres import PostgresSink

    if dsn.startswith("timescaledb://"):
        dsn = "postgresql://" + dsn[len("timescaledb://") :]
    return PostgresSink(
        dsn,
        name=name,
        timescale=kind == "timescaledb",
        hypertables=hypertables,
        tcp_timeout_seconds=tcp_timeout_seconds,
        **migration,  # type: ignore[arg-type]
    )


async def connect_within(sink: Any, seconds: float = CONNECT_SECONDS) -> None:
    """Connect ``sink`` for a one-shot command, or raise :class:`SinkUnreachable` once it has not let
    the command in for ``seconds``: a server that accepts connections and never answers (a hung
    process) would hold the command for the drivers' own limits (asyncpg 60 s, clickhouse-driver
    300 s). The writers watch their connecting themselves (cdcfast.supervisor.writer)."""
    from cdcfast.config import redact_dsn  # (here: the config module imports this package)

    task = asyncio.ensure_future(sink.connect())
    if not (await asyncio.wait({task}, timeout=seconds))[0]:
        cut(sink, task)
        await asyncio.gather(task, return_exceptions=True)
        raise SinkUnreachable(f"sink {sink.name} ({redact_dsn(sink.dsn)}) did not answer within {seconds:g} s")
    task.result()


def cut(sink: Any, task: asyncio.Future[Any]) -> None:
    """End ``task``, work on ``sink`` that gets no answer: by cutting its connection (the work fails
    as transient), or, with no connection to cut yet (one still being made), by cancelling it."""
    if not sink.abort():
        task.cancel()
