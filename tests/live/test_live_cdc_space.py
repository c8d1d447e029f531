"""Live: a node with a small cdc_total_space never refuses a write while ``cdcfast supervise`` follows it.

A real Cassandra 5.0.9 node with ``cdc_total_space`` of a few MiB and 1 MiB commit log segments
(they roll every few seconds under the workload). ``cdcfast supervise`` follows its
``cdc_raw`` (not ``--until-idle``; ``--cdc-total-space`` set to the node's value) into
PostgreSQL, TimescaleDB and ClickHouse while cassandra-driver writes several times that space into
CDC tables. Without a consumer the node refuses CDC writes once cdc_raw is full (a WriteFailure,
"Rejecting mutation ... Free up space in cdc_raw"): cdcfast must deliver each COMPLETED segment to
every sink and delete it in time.

Checked: no write refused (client side, and no "Rejecting mutation" in the node's log); cdc_raw,
sampled every 50 ms, never above the limit; several times the limit went through cdc_raw; every
client write once in each change log; each sink's state equal to the node's ``SELECT *``; cdc_raw
emptied of delivered segments; cdcfast's own gauges; a graceful stop.

Run with ``python -m pytest tests/live/test_live_cdc_space.py -m slow`` (Java 17, ../shared, and
scripts/services.sh's databases; about three minutes on 2 cores). The node's ports are
``CDCFAST_LIVE_NATIVE_PORT`` / ``_STORAGE_PORT`` / ``_JMX_PORT`` plus 100 (19142, 17100, 17299).
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

from live.cassandra_node import NodeSetup, cassandra_node
from live.replication import (
    TABLES,
    CdcRawMonitor,
    Workload,
    cassandra_state,
    compare_states,
    ddl,
    pipelines,
    rejections_logged,
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

MIB = 1 << 20
LIMIT_MIB = int(os.environ.get("CDCFAST_LIVE_CDC_MIB", "8"))  # the node's cdc_total_space
WRITTEN = 3  # the workload writes this many times the limit into CDC tables
# Payload MiB/s: what cdcfast 0.1 sustains into three sinks with a node on 2 busy cores, with room.
RATE_MIB_S = float(os.environ.get("CDCFAST_LIVE_RATE_MIB", "0.3"))
PAYLOAD = (8000, 24000)  # blob bytes per inserted row: the space fills with few change events
PORT_OFFSET = 100  # added to CDCFAST_LIVE_*_PORT

own_ports = shifted_ports(PORT_OFFSET)


def test_small_cdc_total_space_never_refuses_a_write(tmp_path: Path) -> None:
    started = time.monotonic()
    sinks = fresh_sinks("space")
    keyspace = sinks.keyspace
    setup = NodeSetup(
        "space", storage_compat="NONE", compression="none", segment_mib=1, sync_ms=2000, heap="512M",
        cdc_total_mib=LIMIT_MIB,
    )  # fmt: skip
    limit = LIMIT_MIB * MIB
    with cassandra_node(tmp_path / "node", setup) as node:
        up = time.monotonic()
        setting = node.session.execute("SELECT value FROM system_views.settings WHERE name = 'cdc_total_space'").one()
        assert setting.value == f"{LIMIT_MIB}MiB", setting  # the limit is the node's own
        for statement in ddl(keyspace, replication_factor=1):
            node.session.execute(statement)
        pipeline = pipeline_for(
            node, sinks, tmp_path / "state", f"space-{keyspace}", extra=("--cdc-total-space", f"{LIMIT_MIB}MiB")
        )
        workload = Workload(node.session, keyspace, seed=zlib.crc32(keyspace.encode()))
        with pipelines(pipeline), CdcRawMonitor(node.cdc_raw) as monitor:
            pipeline.wait_ready()
            ready = time.monotonic()
            result = workload.run(WRITTEN * limit, RATE_MIB_S * MIB, PAYLOAD, between_chunks=pipeline.check)
            written = time.monotonic()
            assert not result.refused, (
                f"{len(result.refused)} writes refused (cdc_raw full), first: {result.refused[:2]}; "
                f"cdc_raw peak {monitor.peak / MIB:.1f} MiB\n{pipeline.log()}"
            )
            assert not result.failed, f"{len(result.failed)} writes failed: {result.failed[:3]}"
            wait_delivered(sinks, result.total, [pipeline], timeout=180)
            wait_caught_up([pipeline], timeout=120)
            delivered = time.monotonic()
            # delivered segments are deleted: what stays is the segment being written and the one
            # Cassandra allocated ahead (and idx files)
            deadline = time.monotonic() + 30
            while len(list(node.cdc_raw.glob("*.log"))) > 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            left = sorted(p.name for p in node.cdc_raw.iterdir())
            metrics = pipeline.metrics()
            code = pipeline.stop()
            assert code == 0, f"cdcfast supervise did not stop cleanly ({code}):\n{pipeline.log()}"

        # Cassandra never refused a CDC write, and cdc_raw never went over the limit
        assert not rejections_logged(node.directory), rejections_logged(node.directory)[:3]
        assert monitor.peak <= limit, (
            f"cdc_raw reached {monitor.peak} bytes (limit {limit}); above it for {monitor.longest_above(limit):.2f} s"
        )
        passed = sum(monitor.segments.values())
        assert passed >= 3 * limit, f"only {passed / MIB:.1f} MiB of segments went through cdc_raw"
        assert len(left) <= 4, f"delivered segments left in cdc_raw: {left}"
        assert metrics.get("cdcfast_cdc_total_space_bytes") == limit, metrics
        # every client write once in each change log; each state equal to Cassandra's SELECT *
        checked = time.monotonic()
        tables = keyspace_cdc_tables(schema_uri(node), keyspace)
        assert set(tables) == set(TABLES), tables
        failures = change_log_failures(sinks, result)
        for name in TABLES:
            failures += compare_states(sinks, tables[name], cassandra_state(node.session, tables[name]))
        assert not failures, "\n\n".join(failures)
        compared = time.monotonic()
    stopped = time.monotonic()
    print(
        f"\ncdc_total_space {LIMIT_MIB} MiB: {result.total} writes, {result.bytes / MIB:.1f} MiB of payload, "
        f"{passed / MIB:.0f} MiB of segments through cdc_raw, peak {monitor.peak / MIB:.2f} MiB, "
        f"{len(result.refused)} refused, {result.retried} retried; node start {up - started:.0f} s, "
        f"cdcfast ready {ready - up:.0f} s, workload {written - ready:.0f} s, "
        f"delivered {delivered - written:.1f} s after the last write, comparisons {compared - checked:.0f} s, "
        f"node stop {stopped - compared:.0f} s, total {time.monotonic() - started:.0f} s; "
        f"cdc_raw above 80% for {monitor.longest_above(limit * 8 // 10):.1f} s at most"
    )
