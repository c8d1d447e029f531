"""Sink sockets give up on a server whose machine acknowledges nothing (cdcfast.sinks.tcp): the
options land on the socket, and a PostgreSQL server is told to give up on the client as soon.
(tests/supervisor/test_stalled_writes.py drops a live connection's packets and sees it given up.)"""

from __future__ import annotations

import asyncio
import socket

import pytest
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.sinks.postgres import PostgresSink
from cdcfast.sinks.tcp import give_up_unacknowledged, keepalive


def test_a_tcp_socket_gets_keepalive_and_a_user_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        give_up_unacknowledged(sock, 9)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 9000


def test_keepalive_timing_adds_up_to_about_the_timeout_and_never_to_zero() -> None:
    assert keepalive(30) == (10, 3, 3)
    assert keepalive(0.5) == (1, 1, 3)


def test_a_unix_socket_is_left_alone() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        give_up_unacknowledged(sock, 9)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.mark.services
def test_the_postgresql_sink_and_its_server_give_up_on_each_other() -> None:
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))

    async def run() -> tuple[list[str], int]:
        sink = PostgresSink(dsn, tcp_timeout_seconds=12)
        await sink.connect()
        assert sink.conn is not None
        try:
            server = [
                await sink.conn.fetchval(f"SHOW {name}")
                for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
            ]
            client = sink.conn._transport.get_extra_info("socket")  # noqa: SLF001 - what the sink set
            return server, client.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        finally:
            await sink.close()

    server, user_timeout = asyncio.run(run())
    assert server == ["4", "1", "3"]
    assert user_timeout == 12000
