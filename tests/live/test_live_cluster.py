"""Live: a real 3-node cluster, replication factor 3, one ``cdcfast supervise`` per node, shared sinks.

Three Cassandra 5.0.9 nodes on 127.0.0.1, .2 and .3 (shared/cassandra/cassandra.sh), a keyspace with
replication factor 3 and CDC tables. Each node logs every mutation, so each change reaches the sinks
three times, from three ``cdcfast supervise`` processes (following mode, each with its own
``--node``, state folder and ``cdc_raw``) writing into the same PostgreSQL, TimescaleDB and
ClickHouse databases. Content event ids (docs/exactly-once.md) must collapse the three copies.

1. All nodes up: a workload through cassandra-driver at QUORUM; every client write is in each
   change log exactly once, and each sink's state equals Cassandra's ``SELECT *`` at ALL.
2. The same with node 3 drained and stopped in the middle of a running workload, together with
   its cdcfast; writes go on (the other nodes keep hints for it); node 3 and then its cdcfast
   start again, the hints replay the missed mutations into node 3's commit log, its cdcfast
   catches up from its checkpoints and delivers them once more (it must have read at least as many
   events as were written while node 3 was down): still every write exactly once, and the states
   equal ``SELECT *`` at ALL. Before each check: no hints left on any node, every pipeline caught up.

Run with ``python -m pytest tests/live/test_live_cluster.py -m slow`` (Java 17, ../shared, and
scripts/services.sh's databases; three to four minutes on 2 cores). Ports: ``CDCFAST_LIVE_NATIVE_PORT``
and ``_STORAGE_PORT`` plus 150 on each address (19192, 17150), ``CDCFAST_LIVE_JMX_PORT`` plus 150,
151 and 152 (17349, 17350, 17351).

The ClickHouse states can come out wrong here: writers of several nodes race on ClickHouse's row
states (test_concurrent_writers.py shows the interleaving); PostgreSQL and TimescaleDB serialize
them (and the writers retry the deadlocks that concurrent batches run into there).
"""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import pytest
from live.cassandra_node import (
    LiveNode,
    NodeSetup,
    cassandra_cluster,
    cluster_session,
    cluster_setups,
)
from live.replication import (
    TABLES,
    Sinks,
    Workload,
    WorkloadResult,
    cassandra_state,
    compare_states,
    ddl,
    pipelines,
    wait_caught_up,
    wait_delivered,
)
from support.live import (
    change_log_failures,
    fresh_sinks,
    keyspace_cdc_tables,
    live_marks,
    pipeline_for,
    schema_uri,
    shifted_ports,
)

pytestmark = live_marks(services=True)

KB = 1000
PAYLOAD = (100, 800)  # blob bytes per inserted row
PHASE1_BYTES = 120 * KB  # about 500 writes
RATE = 60 * KB  # payload bytes per second: about 250 writes/s
PHASE2_RATE = 5 * KB  # about 20 writes/s while node 3 goes down and comes back
PORT_OFFSET = 150  # added to CDCFAST_LIVE_*_PORT

own_ports = shifted_ports(PORT_OFFSET)


def check(sinks: Sinks, session, keyspace: str, result: WorkloadResult, uri: str, label: str) -> None:
    """Every client write exactly once in each change log; each state equal to SELECT * at ALL."""
    from cassandra import ConsistencyLevel

    tables = keyspace_cdc_tables(uri, keyspace)
    failures = change_log_failures(sinks, result)
    raced = []  # ClickHouse row states lost to the known race between writers (test_concurrent_writers.py)
    for name in TABLES:
        want = cassandra_state(session, tables[name], ConsistencyLevel.ALL)
        for failure in compare_states(sinks, tables[name], want):
            (raced if failure.startswith("[clickhouse]") else failures).append(failure)
    assert not failures, f"{label}:\n" + "\n\n".join(failures)
    if raced:  # everything else held; this one is a known, pinned bug, not a pass
        pytest.xfail(f"{label}: ClickHouse lost-update race between nodes' writers:\n" + "\n\n".join(raced))


def wait_hints_delivered(nodes: list[LiveNode], timeout: float = 150, quiet: float = 12) -> None:
    """Until no node has a hints file for ``quiet`` seconds on end: longer than the 10 s in which a
    node writes its hint buffers to files, so hints still in memory have shown up (and gone) too."""
    deadline = time.monotonic() + timeout
    clear_since = None
    while True:
        pending = [str(f) for n in nodes for f in (n.directory / "hints").glob("*.hints")]
        now = time.monotonic()
        if pending:
            clear_since = None
        elif clear_since is None:
            clear_since = now
        elif now - clear_since >= quiet:
            return
        if now > deadline:
            raise AssertionError(f"hints still pending after {timeout:.0f} s: {pending}")
        time.sleep(0.5)


def test_three_replicas_one_cdcfast_each_every_write_once(tmp_path: Path) -> None:
    from cassandra import ConsistencyLevel

    started = time.monotonic()
    sinks = fresh_sinks("trio")
    keyspace = sinks.keyspace
    base = NodeSetup("trio", storage_compat="NONE", compression="none", segment_mib=1, sync_ms=1000, heap="512M")
    timings: dict[str, float] = {}
    mark = started

    def lap(label: str) -> None:
        nonlocal mark
        timings[label] = time.monotonic() - mark
        mark = time.monotonic()
        print(f"{label}: {timings[label]:.0f} s", flush=True)  # shown with a failure too

    with cassandra_cluster(tmp_path, cluster_setups(base, 3)) as nodes:
        lap("cluster start")
        cluster, session = cluster_session(nodes)
        try:
            for statement in ddl(keyspace, replication_factor=3):
                session.execute(statement)
            assert cluster.control_connection.wait_for_schema_agreement(wait_time=60)
            pipes = [
                pipeline_for(n, sinks, tmp_path / f"state{i + 1}", f"{keyspace}-node{i + 1}")
                for i, n in enumerate(nodes)
            ]
            with pipelines(*pipes):
                for pipe in pipes:
                    pipe.wait_ready()
                lap("schema, cdcfast ready")
                workload = Workload(
                    session, keyspace, seed=zlib.crc32(keyspace.encode()), consistency=ConsistencyLevel.QUORUM,
                    partitions=300, cdc_refusals=False,
                )  # fmt: skip

                # 1. every node up
                result = workload.run(PHASE1_BYTES, RATE, PAYLOAD, between_chunks=lambda: [p.check() for p in pipes])
                assert not result.failed, result.failed[:3]
                wait_delivered(sinks, result.total, pipes, timeout=240)
                wait_caught_up(pipes, timeout=240)
                check(sinks, session, keyspace, result, schema_uri(nodes[0]), "all nodes up")
                phase1 = result.total
                lap("phase 1 (all nodes up)")

                # 2. node 3 (and its cdcfast) stopped in the middle of a workload, then started again
                stop = threading.Event()
                failure: list[BaseException] = []

                def write() -> None:
                    try:
                        workload.run(10**12, PHASE2_RATE, PAYLOAD, stop=stop)
                    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                        failure.append(exc)

                writer = threading.Thread(target=write, daemon=True)
                writer.start()
                try:
                    time.sleep(3)
                    pipes[2].stop()
                    lap("node 3's cdcfast stopped")
                    nodes[2].stop()  # nodetool drain, then the JVM ends
                    lap("node 3 stopped")
                    down_from = result.total
                    time.sleep(8)  # writes go on at QUORUM; nodes 1 and 2 keep hints for node 3
                    down_writes = result.total - down_from
                    nodes[2].start()
                    lap("node 3 started")
                    pipes[2].start()
                    pipes[2].wait_ready()
                    lap("node 3's cdcfast ready")
                    time.sleep(3)
                finally:
                    stop.set()
                    writer.join(120)
                assert not failure, failure
                assert not result.failed, result.failed[:3]
                lap(f"phase 2 done: {result.total - phase1} writes ({down_writes} while node 3 was down)")
                wait_hints_delivered(nodes)
                lap("hints delivered")
                wait_delivered(sinks, result.total, pipes, timeout=300)
                wait_caught_up(pipes, timeout=300)
                lap("delivered")
                # node 3's cdcfast read the hinted mutations again (and delivered nothing twice)
                read_again = pipes[2].metrics().get("cdcfast_events_read_total", 0)
                assert read_again >= down_writes, (read_again, down_writes)
                check(sinks, session, keyspace, result, schema_uri(nodes[0]), "node 3 stopped and restarted")
                lap("checked")
                for pipe in pipes:
                    assert pipe.stop() == 0, f"{pipe.node} did not stop cleanly:\n{pipe.log()}"
                lap("cdcfast stopped")
        finally:
            cluster.shutdown()
    lap("nodes stopped")
    print(
        f"\n3 nodes, RF 3: {phase1} writes with every node up, {result.total - phase1} more while node 3 went "
        f"down ({down_writes} while it was down; its cdcfast read {read_again:.0f} events after the restart) "
        f"and came back; {result.retried} retried; total {time.monotonic() - started:.0f} s"
    )
