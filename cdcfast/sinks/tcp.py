"""Sink sockets that give up on a server whose machine stops acknowledging anything.

A network can drop every packet of one connection while new connections still work (a stateful
firewall or NAT that forgot the flow). The sink then answers the writer's watch, so nothing cuts
the write; without this, the kernel would retransmit a write for about 15 minutes, and wait for an
answer that never comes for hours. TCP keepalive (an idle connection) and ``TCP_USER_TIMEOUT``
(data sent and never acknowledged) end such a connection after ``seconds`` instead. A server that
is busy, however long, still acknowledges: only its machine being unreachable counts.
"""

from __future__ import annotations

import socket

TCP_TIMEOUT_SECONDS = 30.0  # the default, for the pipeline (tuning.tcp_timeout_seconds) and open_sink
KEEPALIVE_PROBES = 3


def keepalive(seconds: float) -> tuple[int, int, int]:
    """Idle seconds before the first probe, seconds between probes, probes: about ``seconds`` in all."""
    return max(1, round(seconds / 3)), max(1, round(seconds / 9)), KEEPALIVE_PROBES


def give_up_unacknowledged(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` fail (ETIMEDOUT) once its peer has acknowledged nothing for about ``seconds``
    (a TCP socket; a Unix socket has no network to lose)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle, interval, probes = keepalive(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's keepalive timing stays
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
