"""Throwaway database servers for integration tests.

``ensure_services`` starts PostgreSQL 15, TimescaleDB and/or ClickHouse through ``scripts/services.sh``
(installing them with apt on first use) and returns their DSNs. A server that cannot start is a test
failure, not a skip: the error carries the script's output, which names the server and its log file.

Typical use from a fixture::

    @pytest.fixture(scope="session")
    def pg_dsn() -> str:
        return ensure_services(["postgres"])["postgres"]
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "services.sh"
ALL_SERVICES: tuple[str, ...] = ("postgres", "timescaledb", "clickhouse")

# Variables printed by `services.sh env`, per service name.
_DSN_VARS = {
    "postgres": "CDCFAST_PG_DSN",
    "timescaledb": "CDCFAST_TS_DSN",
    "clickhouse": "CDCFAST_CH_DSN",
}

# A cold start installs packages and builds TimescaleDB: minutes, not seconds.
START_TIMEOUT_S = 1800.0

_lock = threading.Lock()
_started: set[str] = set()


def _run(command: str, names: list[str], timeout: float, extra_env: dict[str, str] | None = None) -> str:
    env = dict(os.environ, CDCFAST_SERVICES=" ".join(names), **(extra_env or {}))
    args = ["bash", str(SCRIPT), command]
    try:
        proc = subprocess.run(
            args,
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        raise RuntimeError(
            f"{' '.join(args)} (CDCFAST_SERVICES={env['CDCFAST_SERVICES']!r}) timed out after "
            f"{timeout:.0f}s; output:\n{output}"
        ) from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} (CDCFAST_SERVICES={env['CDCFAST_SERVICES']!r}) failed with exit status "
            f"{proc.returncode}; output:\n{proc.stdout}"
        )
    return proc.stdout


def _parse_env(output: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            values[key] = value
    return values


def ensure_services(names: Iterable[str] = ALL_SERVICES) -> dict[str, str]:
    """Start the named services (once per process) and return ``{name: dsn}`` for each of them.

    Names are ``postgres``, ``timescaledb`` and ``clickhouse``. DSNs look like
    ``postgresql://postgres@127.0.0.1:55432/cdcfast`` and ``clickhouse://default@127.0.0.1:59000/default``.
    Raises RuntimeError (with the script's output) if a server cannot be started.
    """
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in _DSN_VARS]
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; known: {list(ALL_SERVICES)}")
    if not wanted:
        return {}
    with _lock:
        missing = [name for name in wanted if name not in _started]
        if missing:
            _run("start", missing, START_TIMEOUT_S)
            _started.update(missing)
        exported = _parse_env(_run("env", wanted, 60.0))
    dsns: dict[str, str] = {}
    for name in wanted:
        var = _DSN_VARS[name]
        if var not in exported:
            raise RuntimeError(f"scripts/services.sh env printed no {var}; got {exported}")
        dsns[name] = exported[var]
    return dsns


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServices:
    """Servers of a test's own (own folder, own ports), which the test may stop and start at will
    without disturbing the shared ones. ``stop()`` everything at the end."""

    def __init__(self) -> None:
        # Under /tmp itself: the servers run as the postgres user, who cannot enter pytest's 0700 folders.
        self.folder = Path(tempfile.mkdtemp(prefix="cdcfast-services-", dir="/tmp"))
        self.folder.chmod(0o755)
        self.env = {
            "CDCFAST_SERVICES_DIR": str(self.folder),
            "CDCFAST_PG_PORT": str(free_port()),
            "CDCFAST_TS_PORT": str(free_port()),
            "CDCFAST_CH_PORT": str(free_port()),
            "CDCFAST_CH_HTTP_PORT": str(free_port()),
        }
        self.running: set[str] = set()

    def start(self, *names: str) -> dict[str, str]:
        _run("start", list(names), START_TIMEOUT_S, self.env)
        self.running.update(names)
        return self.dsns(*names)

    def stop(self, *names: str) -> None:
        everything = not names
        names = names or tuple(self.running)
        if names:
            _run("stop", list(names), 120.0, self.env)
        self.running.difference_update(names)
        if everything:
            shutil.rmtree(self.folder, ignore_errors=True)

    def dsns(self, *names: str) -> dict[str, str]:
        exported = _parse_env(_run("env", list(names), 60.0, self.env))
        return {name: exported[_DSN_VARS[name]] for name in names}
