"""Live (issue 9): a TRUNCATE on a real Cassandra 5.0.9 node, between writes and raced by writes,
is applied by every sink: after ``cdcfast supervise --until-idle``, PostgreSQL, TimescaleDB and
ClickHouse each hold what Cassandra's ``SELECT *`` returns, and their change logs hold the
truncation once.

The node (5.0's default 4.x format, 512 MiB heap): a CDC table ``items`` gets a first group of
rows, a row deletion with a timestamp far in the future (its tombstone would hide the later
re-insert if a sink kept it), and, in a second CDC table ``kept``, rows that are not truncated.
Then ``TRUNCATE items`` while another thread keeps writing to ``items`` (writes that land after the
flush survive in Cassandra; those before it do not: whichever they are, the sinks must agree with
the node), then a second group, an update of some of its rows and the re-insert of the deleted
key. The node is drained and stopped (every ``_cdc.idx`` final), then cdcfast replays its
``cdc_raw`` with the schema dumped from the node. Ports: the live defaults plus 60.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from live.cassandra_node import NodeSetup, cassandra_node
from live.replication import Sinks, cassandra_state, compare_states
from support.live import fresh_sinks, insert_rows, live_marks, shifted_ports
from support.pipeline import supervise_command

from cdcfast.commitlog import load_schema

pytestmark = live_marks(services=True)

SETUP = NodeSetup("c4-plain", storage_compat="CASSANDRA_4", compression="none", heap="512M")
PORT_OFFSET = 60
GROUP = 40
FUTURE_US = 4_000_000_000_000_000  # a deletion timestamp far beyond any write's

own_ports = shifted_ports(PORT_OFFSET)


def racing_writer(session, table: str, stop: threading.Event, written: list[int]) -> None:  # noqa: ANN001
    """Writes new keys until told to stop: some land before the TRUNCATE's flush, some after."""
    insert = session.prepare(f"INSERT INTO {table} (id, v) VALUES (?, ?)")
    key = 500
    while not stop.is_set():
        session.execute(insert, (key, f"raced {key}"))
        written.append(key)
        key += 1


def test_every_sink_equals_cassandra_after_a_truncate(tmp_path: Path) -> None:
    sinks = fresh_sinks("trs")
    keyspace = sinks.keyspace
    with cassandra_node(tmp_path / "node", SETUP) as node:
        session = node.session
        session.execute(
            f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        )
        for name in ("items", "kept"):
            session.execute(f"CREATE TABLE {keyspace}.{name} (id int PRIMARY KEY, v text) WITH cdc = true")
        insert_rows(session, f"{keyspace}.items", 0, GROUP)
        insert_rows(session, f"{keyspace}.kept", 0, GROUP // 2)
        session.execute(f"DELETE FROM {keyspace}.items USING TIMESTAMP {FUTURE_US} WHERE id = 7")

        stop, raced = threading.Event(), []
        racer = threading.Thread(target=racing_writer, args=(session, f"{keyspace}.items", stop, raced))
        racer.start()
        time.sleep(0.3)
        try:
            session.execute(f"TRUNCATE {keyspace}.items", timeout=120)
            time.sleep(0.3)
        finally:
            stop.set()
            racer.join()

        insert_rows(session, f"{keyspace}.items", 1000, GROUP)
        insert_rows(session, f"{keyspace}.items", 1000, GROUP // 4, note="updated")
        session.execute(f"INSERT INTO {keyspace}.items (id, v) VALUES (7, 'back after the truncate')")
        insert_rows(session, f"{keyspace}.kept", 1000, GROUP // 2)

        (tmp_path / "schema").mkdir()
        schema_file = node.dump_schema(keyspace, tmp_path / "schema" / "001.json")
        schema = load_schema(schema_file)
        tables = {t.name: t for t in schema.cdc_tables()}
        want = {name: cassandra_state(session, table) for name, table in tables.items()}
        node.stop()

    # Cassandra's own answer: the first group and the delete are gone; the re-insert shows
    items = {key[0] for key in want["items"]}
    assert 7 in items and not items & set(range(GROUP)) - {7}
    assert set(range(1000, 1000 + GROUP)) <= items and len(want["kept"]) == GROUP
    print(f"\n{len(raced)} racing writes, {len(items & set(raced))} of them survive the TRUNCATE")

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run(
        supervise_command(node.cdc_raw, schema_file.parent, *sinks.dsns, state=tmp_path / "state", until_idle=True),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    failures = [f for name, table in tables.items() for f in compare_states(sinks, table, want[name])]
    assert not failures, "\n\n".join(failures)
    for sink, counts in sinks.change_logs("items").items():
        assert sum(counts.values()) >= 2 * GROUP + len(raced), sink
    assert_one_truncation_logged(sinks, keyspace)


def assert_one_truncation_logged(sinks: Sinks, keyspace: str) -> None:
    import asyncio

    import asyncpg

    async def postgres(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(f"SELECT count(*) FROM \"{keyspace}\".items_changes WHERE op = 'truncate'")
        finally:
            await conn.close()

    counts = {
        "postgresql": asyncio.run(postgres(sinks.pg)),
        "timescaledb": asyncio.run(postgres(sinks.ts)),
        "clickhouse": sinks.client.execute(
            f"SELECT count() FROM `{keyspace}`.items_changes FINAL WHERE op = 'truncate'"
        )[0][0],
    }
    assert counts == {"postgresql": 1, "timescaledb": 1, "clickhouse": 1}
