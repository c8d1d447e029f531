"""The supervisor's HTTP endpoint (``--metrics-addr HOST:PORT``, default 127.0.0.1:9464), served by a
daemon thread with the standard library only:

* ``/metrics``: every process' metrics, merged from the multiprocess folder (Prometheus text format).
* ``/health``: liveness. ``{"status": "ok"|"failing", "components": {...}}``; 503 when a component is
  failing (or a watched component stopped beating).
* ``/ready``: readiness. 200 when every component is ``ok``, every sink reachable and every lag under
  the configured bound; else 503. The body gives each component's state and why it is not ready.

Health and readiness come from a :class:`HealthState` that the supervisor updates (components:
``supervisor``, ``parser-N``, ``writer-<sink>``).
"""

from __future__ import annotations

import enum
import errno
import json
import os
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from cdcfast.errors import CdcfastError, ConfigError
from cdcfast.observe.metrics import render_metrics

DEFAULT_ADDRESS = "127.0.0.1:9464"
STARTING, OK, FAILING, STOPPED = "starting", "ok", "failing", "stopped"
STATES = (STARTING, OK, FAILING, STOPPED)
PATHS = ("/metrics", "/health", "/ready")
_MAX_ERROR = 1000


class _Keep(enum.Enum):
    KEEP = 0


KEEP = _Keep.KEEP


def redact(text: str) -> str:
    """``text`` without DSN passwords (``scheme://user:password@host``, ``password=...``), shortened."""
    text = re.sub(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    text = re.sub(r"(?i)(password\s*=\s*)[^&;\s]+", r"\1***", text)
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


@dataclass
class _Component:
    state: str
    changed_at: float
    last_error: str | None = None
    lag_seconds: float | None = None
    reachable: bool | None = None
    beat_at: float | None = None


class HealthState:
    """Thread-safe component states for ``/health`` and ``/ready``.

    Each component has a ``state`` (starting, ok, failing, stopped), the ``last_error`` it reported (kept
    after it recovers, for diagnosis), its ``lag_seconds`` (writers) and whether its sink is ``reachable``
    (writers). A component that calls :meth:`beat` is watched: no beat for ``heartbeat_timeout`` seconds
    makes it failing.
    """

    def __init__(
        self,
        max_lag_seconds: float = 300.0,
        heartbeat_timeout: float | None = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_lag_seconds = float(max_lag_seconds)
        self.heartbeat_timeout = heartbeat_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._components: dict[str, _Component] = {}

    # -- updates (supervisor) ------------------------------------------------------------------------
    def update(
        self,
        component: str,
        state: str | None = None,
        *,
        last_error: str | None | _Keep = KEEP,
        lag_seconds: float | None | _Keep = KEEP,
        reachable: bool | None | _Keep = KEEP,
    ) -> None:
        """Change what is given; a component not seen before starts as ``starting``."""
        if state is not None and state not in STATES:
            raise ValueError(f"component state {state!r}: expected one of {', '.join(STATES)}")
        now = self.clock()
        with self._lock:
            current = self._components.get(component)
            if current is None:
                current = self._components[component] = _Component(state or STARTING, now)
            elif state is not None and state != current.state:
                current.state, current.changed_at = state, now
            if not isinstance(last_error, _Keep):
                current.last_error = None if last_error is None else redact(last_error)
            if not isinstance(lag_seconds, _Keep):
                current.lag_seconds = None if lag_seconds is None else float(lag_seconds)
            if not isinstance(reachable, _Keep):
                current.reachable = reachable

    def starting(self, component: str) -> None:
        self.update(component, STARTING)

    def ok(
        self, component: str, *, lag_seconds: float | None | _Keep = KEEP, reachable: bool | None | _Keep = KEEP
    ) -> None:
        self.update(component, OK, lag_seconds=lag_seconds, reachable=reachable)

    def failing(self, component: str, error: str, *, reachable: bool | None | _Keep = KEEP) -> None:
        self.update(component, FAILING, last_error=error, reachable=reachable)

    def stopped(self, component: str) -> None:
        self.update(component, STOPPED)

    def beat(self, component: str) -> None:
        """``component`` is alive (watched from its first beat on)."""
        now = self.clock()
        with self._lock:
            current = self._components.get(component)
            if current is None:
                current = self._components[component] = _Component(STARTING, now)
            current.beat_at = now

    def remove(self, component: str) -> None:
        with self._lock:
            self._components.pop(component, None)

    def set_max_lag(self, seconds: float) -> None:
        with self._lock:
            self.max_lag_seconds = float(seconds)

    # -- views (HTTP threads) ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each component as reported (a silent watched component shows as failing)."""
        now = self.clock()
        with self._lock:
            items = [(name, _Component(**vars(c))) for name, c in self._components.items()]
        out: dict[str, dict[str, Any]] = {}
        for name, c in sorted(items):
            state, error = c.state, c.last_error
            timeout = self.heartbeat_timeout
            if timeout is not None and c.beat_at is not None and now - c.beat_at > timeout:
                state, error = FAILING, f"no heartbeat for {now - c.beat_at:.1f} s (timeout {timeout:.1f} s)"
            out[name] = {
                "state": state,
                "last_error": error,
                "lag_seconds": c.lag_seconds,
                "reachable": c.reachable,
                "since_seconds": round(now - c.changed_at, 3),
            }
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(alive, body): alive unless a component is failing."""
        components = self.snapshot()
        alive = all(c["state"] != FAILING for c in components.values())
        return alive, {"status": "ok" if alive else "failing", "components": components}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body): ready when there are components, each ``ok``, reachable and under the lag bound."""
        components = self.snapshot()
        bound = self.max_lag_seconds
        for c in components.values():
            reason = None
            if c["state"] != OK:
                reason = c["state"]
            elif c["reachable"] is False:
                reason = "sink unreachable"
            elif c["lag_seconds"] is not None and c["lag_seconds"] > bound:
                reason = f"lag {c['lag_seconds']:.1f} s is over {bound:.1f} s"
            c["ready"], c["reason"] = reason is None, reason
        ready = bool(components) and all(c["ready"] for c in components.values())
        body: dict[str, Any] = {
            "status": "ready" if ready else "not_ready",
            "max_lag_seconds": bound,
            "components": components,
        }
        if not components:
            body["reason"] = "no component has reported yet"
        return ready, body


# -- the server ----------------------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port); port 0 asks for any free port."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", text.strip())
    port = int(match.group(2) or match.group(4)) if match else -1
    if match is None or port > 65535:
        raise ConfigError(f"metrics address {text!r}: expected HOST:PORT or [IPV6]:PORT (e.g. {DEFAULT_ADDRESS})")
    return match.group(1) or match.group(3), port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restart may bind while old connections linger in TIME_WAIT
    allow_reuse_port = False  # never share the port with another live cdcfast (newer Pythons default to True)
    health: HealthState
    metrics_dir: str | None

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (getfqdn), which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "cdcfast"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds: not worth a log line each

    def _respond(self, send_body: bool) -> None:
        server = self.server
        assert isinstance(server, _Server)
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            if path == "/metrics":
                status, content_type, body = 200, CONTENT_TYPE_LATEST, render_metrics(server.metrics_dir)
            elif path in ("/health", "/ready"):
                ok, document = server.health.health() if path == "/health" else server.health.readiness()
                status, content_type, body = 200 if ok else 503, "application/json", _json(document)
            elif path == "/":
                text = "cdcfast: " + ", ".join(PATHS) + "\n"
                status, content_type, body = 200, "text/plain; charset=utf-8", text.encode()
            else:
                document = {"error": f"no such path: {path}", "paths": list(PATHS)}
                status, content_type, body = 404, "application/json", _json(document)
        except Exception as exc:  # never let a scrape kill the thread; say what went wrong
            status, content_type = 500, "text/plain; charset=utf-8"
            body = f"cdcfast: {path}: {type(exc).__name__}: {redact(str(exc))}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def _json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True).encode() + b"\n"


class ObserveServer:
    """``/metrics``, ``/health`` and ``/ready`` on ``address``, in a daemon thread.

    ``metrics_dir``: the multiprocess folder (default: ``PROMETHEUS_MULTIPROC_DIR`` at each scrape).
    :meth:`start` raises :class:`CdcfastError` naming the address when it cannot listen there.
    """

    def __init__(self, address: str, health: HealthState, metrics_dir: str | os.PathLike[str] | None = None) -> None:
        self.address = address
        self.host, self.requested_port = parse_address(address)
        self.health = health
        self.metrics_dir = None if metrics_dir is None else str(Path(metrics_dir))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ObserveServer:
        if self._server is not None:
            return self
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self.requested_port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "the address is already in use (another cdcfast, or another exporter on that port)"
            else:
                why = exc.strerror or str(exc)
            raise CdcfastError(
                f"cannot serve /metrics, /health and /ready on {self.address}: {why}; "
                "choose another with --metrics-addr HOST:PORT"
            ) from exc
        server.health = self.health
        server.metrics_dir = self.metrics_dir
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="cdcfast-metrics", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose for port 0)."""
        if self._server is None:
            return self.requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]", ""):
            host = "127.0.0.1" if ":" not in self.host else "[::1]"
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)

    def __enter__(self) -> ObserveServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def start_server(address: str, health: HealthState, metrics_dir: str | os.PathLike[str] | None = None) -> ObserveServer:
    """Listen on ``address`` now (raises :class:`CdcfastError` if it cannot) and serve in a daemon thread."""
    return ObserveServer(address, health, metrics_dir).start()
