"""A real single-node Cassandra for live tests: started in a temporary folder, always stopped.

``cassandra_node(directory, setup)`` runs ``shared/cassandra/cassandra.sh start`` on ports that
stay clear of a developer's own node (native 19042, storage 17000, JMX 17199; override with
``CDCFAST_LIVE_NATIVE_PORT``, ``CDCFAST_LIVE_STORAGE_PORT``, ``CDCFAST_LIVE_JMX_PORT``), waits until
CQL answers, and yields a :class:`LiveNode` with a connected cassandra-driver session. Teardown
always shuts the driver down, drains and stops the node, and SIGKILLs the JVM if it is still
alive, also when the start or the test failed. ``LiveNode.stop()`` stops it earlier (idempotent),
for tests that read the node's files once it is down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import SHARED

CASSANDRA_SH = SHARED / "cassandra" / "cassandra.sh"
JAVA_READER = SHARED / "java-reader" / "run.sh"
SCHEMA_TABLES = ("keyspaces", "tables", "columns", "types", "dropped_columns")


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class NodeSetup:
    """How a node runs, and the segment format that implies."""

    name: str
    storage_compat: str  # CASSANDRA_4 (descriptor 7 / messaging 12) or NONE (8 / 13)
    compression: str  # none | LZ4Compressor | SnappyCompressor | DeflateCompressor | ZstdCompressor
    segment_mib: int = 1  # small segments: the workload spans several
    sync_ms: int = 200  # frequent syncs: many sync sections per segment
    heap: str = "1G"

    @property
    def descriptor_version(self) -> int:
        return 7 if self.storage_compat == "CASSANDRA_4" else 8

    @property
    def messaging_version(self) -> int:
        return 12 if self.storage_compat == "CASSANDRA_4" else 13

    def environment(self) -> dict[str, str]:
        return {
            "CASSANDRA_NATIVE_PORT": str(_port("CDCFAST_LIVE_NATIVE_PORT", 19042)),
            "CASSANDRA_STORAGE_PORT": str(_port("CDCFAST_LIVE_STORAGE_PORT", 17000)),
            "CASSANDRA_JMX_PORT": str(_port("CDCFAST_LIVE_JMX_PORT", 17199)),
            "CASSANDRA_ADDRESS": "127.0.0.1",
            "CASSANDRA_COMPRESSION": self.compression,
            "CASSANDRA_STORAGE_COMPAT": self.storage_compat,
            "CASSANDRA_SEGMENT_MIB": str(self.segment_mib),
            "CASSANDRA_SYNC_MS": str(self.sync_ms),
            "CASSANDRA_HEAP": self.heap,
        }


@dataclass
class LiveNode:
    directory: Path
    setup: NodeSetup
    port: int
    cluster: Any = None
    session: Any = None
    stopped: bool = field(default=False)

    @property
    def cdc_raw(self) -> Path:
        return self.directory / "cdc_raw"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.directory / "cassandra.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def dump_schema(self, keyspace: str, target: Path) -> Path:
        """``system_schema`` rows of one keyspace as a corpus-style ``schema/NNN.json``."""
        document: dict[str, Any] = {"after_seq": 0, "step": 0}
        for table in SCHEMA_TABLES:
            rows = self.session.execute(
                f"SELECT JSON * FROM system_schema.{table} WHERE keyspace_name = %s", (keyspace,)
            )
            document[table] = [json.loads(row[0]) for row in rows]
        target.write_text(json.dumps(document, indent=1, sort_keys=True))
        return target

    def disconnect(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.shutdown()
            self.cluster = self.session = None

    def stop(self, timeout: float = 120) -> None:
        """Drain and stop the node (so every segment's ``_cdc.idx`` is final); kill it if that fails."""
        if self.stopped:
            return
        self.stopped = True
        self.disconnect()
        try:
            subprocess.run(
                [str(CASSANDRA_SH), "stop", str(self.directory)],
                env={**os.environ, **self.setup.environment()},
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pass
        finally:
            kill_jvm(self.pid)


def kill_jvm(pid: int | None, grace: float = 5) -> None:
    if pid is None:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tools_missing() -> str | None:
    """Why a live node cannot run here, or None."""
    if not CASSANDRA_SH.exists():
        return f"{CASSANDRA_SH} not found"
    if not JAVA_READER.exists():
        return f"{JAVA_READER} not found"
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java:
        return "java not found (Java 17 needed)"
    return None


def _connect(port: int, timeout: float) -> tuple[Any, Any]:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    deadline = time.monotonic() + timeout
    while True:
        cluster = Cluster(
            ["127.0.0.1"],
            port=port,
            protocol_version=5,
            execution_profiles={
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    load_balancing_policy=WhiteListRoundRobinPolicy(["127.0.0.1"]), request_timeout=60
                )
            },
            connect_timeout=10,
            control_connection_timeout=10,
        )
        try:
            session = cluster.connect()
            return cluster, session
        except Exception:
            cluster.shutdown()
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@contextlib.contextmanager
def cassandra_node(directory: Path, setup: NodeSetup, connect_timeout: float = 90) -> Iterator[LiveNode]:
    env = {**os.environ, **setup.environment()}
    ports = [int(env[k]) for k in ("CASSANDRA_NATIVE_PORT", "CASSANDRA_STORAGE_PORT", "CASSANDRA_JMX_PORT")]
    busy = [p for p in ports if not _port_free(p)]
    if busy:
        raise RuntimeError(
            f"ports {busy} are in use (another node?); set CDCFAST_LIVE_NATIVE_PORT / _STORAGE_PORT / _JMX_PORT"
        )
    directory.mkdir(parents=True, exist_ok=True)
    node = LiveNode(directory=directory, setup=setup, port=ports[0])
    try:
        started = subprocess.run(
            [str(CASSANDRA_SH), "start", str(directory)], env=env, capture_output=True, text=True, timeout=180
        )
        if started.returncode != 0:
            log = directory / "logs" / "system.log"
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise RuntimeError(f"cassandra.sh start failed ({started.returncode}):\n{started.stderr}\n{tail}")
        node.cluster, node.session = _connect(node.port, connect_timeout)
        yield node
    finally:
        node.disconnect()
        if node.stopped:
            kill_jvm(node.pid, grace=0)
        else:
            node.stop()
