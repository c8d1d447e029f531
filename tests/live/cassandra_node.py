"""Real Cassandra nodes for live tests: started in a temporary folder, always stopped.

``cassandra_node(directory, setup)`` runs ``shared/cassandra/cassandra.sh start`` on ports that
stay clear of a developer's own node (native 19042, storage 17000, JMX 17199; override with
``CDCFAST_LIVE_NATIVE_PORT``, ``CDCFAST_LIVE_STORAGE_PORT``, ``CDCFAST_LIVE_JMX_PORT``), waits until
CQL answers, and yields a :class:`LiveNode` with a connected cassandra-driver session. Teardown
always shuts the driver down, drains and stops the node, and SIGKILLs the JVM if it is still
alive, also when the start or the test failed. ``LiveNode.stop()`` stops it earlier (idempotent),
for tests that read the node's files once it is down; ``LiveNode.start()`` starts it again on the
same folder (its data, commit log and hints stay).

``cassandra_cluster(directory, setups)`` does the same for several nodes on 127.0.0.1, .2, ...
(:func:`cluster_setups`): started one after the other (each joins the ring before the next starts),
all stopped at the end whatever happened; :func:`cluster_session` connects a token-aware driver
to all of them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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
    cdc_total_mib: int | None = None  # cdc_total_space (None: cassandra.sh's 4096 MiB)
    address: str = "127.0.0.1"  # a loopback address: several nodes of one cluster use .1, .2, ...
    seeds: str | None = None  # the seed's address (None: the node itself)
    native_port: int | None = None  # None: CDCFAST_LIVE_NATIVE_PORT or 19042
    storage_port: int | None = None  # None: CDCFAST_LIVE_STORAGE_PORT or 17000
    jmx_port: int | None = None  # None: CDCFAST_LIVE_JMX_PORT or 17199 (one per node: JMX binds 127.0.0.1)

    @property
    def descriptor_version(self) -> int:
        return 7 if self.storage_compat == "CASSANDRA_4" else 8

    @property
    def messaging_version(self) -> int:
        return 12 if self.storage_compat == "CASSANDRA_4" else 13

    def environment(self) -> dict[str, str]:
        env = {
            "CASSANDRA_NATIVE_PORT": str(self.native_port or _port("CDCFAST_LIVE_NATIVE_PORT", 19042)),
            "CASSANDRA_STORAGE_PORT": str(self.storage_port or _port("CDCFAST_LIVE_STORAGE_PORT", 17000)),
            "CASSANDRA_JMX_PORT": str(self.jmx_port or _port("CDCFAST_LIVE_JMX_PORT", 17199)),
            "CASSANDRA_ADDRESS": self.address,
            "CASSANDRA_COMPRESSION": self.compression,
            "CASSANDRA_STORAGE_COMPAT": self.storage_compat,
            "CASSANDRA_SEGMENT_MIB": str(self.segment_mib),
            "CASSANDRA_SYNC_MS": str(self.sync_ms),
            "CASSANDRA_HEAP": self.heap,
            "CASSANDRA_SEEDS": self.seeds or self.address,
        }
        if self.cdc_total_mib is not None:
            env["CASSANDRA_CDC_TOTAL_MIB"] = str(self.cdc_total_mib)
        return env


def cluster_setups(base: NodeSetup, nodes: int) -> list[NodeSetup]:
    """``nodes`` setups like ``base`` on 127.0.0.1, .2, ... with 127.0.0.1 as the seed, the same
    native and storage ports, and one JMX port each (``base``'s, then the next ones)."""
    env = base.environment()
    jmx = int(env["CASSANDRA_JMX_PORT"])
    return [
        replace(
            base,
            name=f"{base.name}-{i + 1}",
            address=f"127.0.0.{i + 1}",
            seeds="127.0.0.1",
            native_port=int(env["CASSANDRA_NATIVE_PORT"]),
            storage_port=int(env["CASSANDRA_STORAGE_PORT"]),
            jmx_port=jmx + i,
        )
        for i in range(nodes)
    ]


@dataclass
class LiveNode:
    directory: Path
    setup: NodeSetup
    port: int
    cluster: Any = None
    session: Any = None
    stopped: bool = field(default=False)

    @property
    def address(self) -> str:
        return self.setup.address

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

    def start(self, connect_timeout: float = 90) -> None:
        """Start the node (again) on its folder and connect a driver session to it alone."""
        env = {**os.environ, **self.setup.environment()}
        self.stopped = True  # until cassandra.sh runs: a teardown must not stop whoever holds the ports
        ports = [int(env[k]) for k in ("CASSANDRA_NATIVE_PORT", "CASSANDRA_STORAGE_PORT")]
        busy = [p for p in ports if not _port_free(p, self.address)]
        if not _port_free(int(env["CASSANDRA_JMX_PORT"]), "127.0.0.1"):
            busy.append(int(env["CASSANDRA_JMX_PORT"]))
        if busy:
            raise RuntimeError(
                f"ports {busy} on {self.address} are in use (another node?); "
                "set CDCFAST_LIVE_NATIVE_PORT / _STORAGE_PORT / _JMX_PORT"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stopped = False
        started = subprocess.run(
            [str(CASSANDRA_SH), "start", str(self.directory)], env=env, capture_output=True, text=True, timeout=240
        )
        if started.returncode != 0:
            log = self.directory / "logs" / "system.log"
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise RuntimeError(f"cassandra.sh start failed ({started.returncode}):\n{started.stderr}\n{tail}")
        self.cluster, self.session = _connect(self.address, self.port, connect_timeout)

    def nodetool(self, *args: str, timeout: float = 120) -> str:
        """``nodetool ARGS`` against this node; its output (raises with it on failure)."""
        result = subprocess.run(
            [str(CASSANDRA_SH), "nodetool", str(self.directory), *args],
            env={**os.environ, **self.setup.environment()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nodetool {' '.join(args)} on {self.address}: {result.stdout}{result.stderr}")
        return result.stdout

    def stop(self, timeout: float = 120, drain: bool = True) -> None:
        """Drain and stop the node (so every segment's ``_cdc.idx`` is final); kill it if that fails.
        ``drain=False``: SIGKILL at once (a teardown that needs no final idx files)."""
        if self.stopped:
            return
        self.stopped = True
        self.disconnect()
        try:
            if drain:
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
            pid = self.pid
            kill_jvm(pid, grace=5 if drain else 0)
            if pid is not None and not _alive(pid):  # a later teardown must not signal a reused pid
                with contextlib.suppress(OSError):
                    (self.directory / "cassandra.pid").unlink()


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


def _port_free(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
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


def _connect(address: str, port: int, timeout: float) -> tuple[Any, Any]:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    deadline = time.monotonic() + timeout
    while True:
        cluster = Cluster(
            [address],
            port=port,
            protocol_version=5,
            execution_profiles={
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    load_balancing_policy=WhiteListRoundRobinPolicy([address]), request_timeout=60
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
    node = LiveNode(directory=directory, setup=setup, port=int(setup.environment()["CASSANDRA_NATIVE_PORT"]))
    try:
        node.start(connect_timeout)
        yield node
    finally:
        node.disconnect()
        if node.stopped:
            kill_jvm(node.pid, grace=0)
        else:
            node.stop()


@contextlib.contextmanager
def cassandra_cluster(
    directory: Path, setups: list[NodeSetup], connect_timeout: float = 90, drain_at_end: bool = False
) -> Iterator[list[LiveNode]]:
    """Nodes ``directory/node1``, ``node2``, ... started in order (the first is the seed). At the
    end every node still running is stopped, at once (SIGKILL) unless ``drain_at_end``, and every
    JVM is gone, also when a start or the test failed."""
    nodes = [
        LiveNode(directory=directory / f"node{i + 1}", setup=s, port=int(s.environment()["CASSANDRA_NATIVE_PORT"]))
        for i, s in enumerate(setups)
    ]
    try:
        for node in nodes:
            for attempt in range(3):
                try:
                    node.start(connect_timeout)
                    break
                except RuntimeError:
                    # A joining node can give up on a busy machine ("Unable to contact any seeds"
                    # while bootstrapping): start it again from an empty folder.
                    if attempt == 2 or node.pid is None or node.stopped:
                        raise
                    node.stop(drain=False)
                    shutil.rmtree(node.directory, ignore_errors=True)
        yield nodes
    finally:
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda n: n.stop(drain=drain_at_end), nodes))
        for node in nodes:
            kill_jvm(node.pid, grace=0)


def cluster_session(nodes: list[LiveNode], request_timeout: float = 30) -> tuple[Any, Any]:
    """A driver (cluster, session) that knows every node and routes each statement to a replica."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy, TokenAwarePolicy

    cluster = Cluster(
        [n.address for n in nodes],
        port=nodes[0].port,
        protocol_version=5,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()), request_timeout=request_timeout
            )
        },
        connect_timeout=10,
        control_connection_timeout=10,
    )
    return cluster, cluster.connect()
