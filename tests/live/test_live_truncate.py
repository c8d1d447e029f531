"""Live (issue 9): TRUNCATE on a real Cassandra 5.0.9 node reaches cdcfast as a truncate event, and
a CDC table in a keyspace WITH durable_writes = false is named at start-up (its writes never show).

Per setup (5.0's default 4.x format, descriptor 7 / messaging 12; and its native format, 8 / 13,
with LZ4): start a node (512 MiB heap), write a first group of rows into a CDC table, TRUNCATE it,
write a second group, also write to a second CDC table and to a CDC table of a non-durable
keyspace, read the schema from the node (``cassandra://``) and as a dump file, drain and stop the
node (every ``_cdc.idx`` final), then decode its ``cdc_raw``: the truncation must come between the
two groups, record a position between them and a time within the TRUNCATE call, and leave the
other table alone; with the dump's schema (no system keyspace: cdcfast's built-in system.local)
the events must be the same.

Ports: the live defaults (or ``CDCFAST_LIVE_*_PORT``) plus 50, to run beside other live tests.
Run with ``python -m pytest tests/live/test_live_truncate.py -m slow`` (about a minute per setup on
2 cores); the node is stopped (and killed if need be) whatever happens.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from live.cassandra_node import NodeSetup, cassandra_node
from support.live import insert_rows, live_marks, schema_uri, shifted_ports

from cdcfast.commitlog import CommitLogReader, Schema, discover, load_schema
from cdcfast.commitlog.schema import durable_writes_warnings, non_durable_cdc_tables
from cdcfast.commitlog.system import SYSTEM_LOCAL_ID
from cdcfast.events import INSERT, TRUNCATE, ChangeEvent, events_from_batch

pytestmark = live_marks(services=False)

SETUPS = [
    NodeSetup("c4-plain", storage_compat="CASSANDRA_4", compression="none", heap="512M"),
    NodeSetup("none-lz4", storage_compat="NONE", compression="LZ4Compressor", heap="512M"),
]
PORT_OFFSET = 50
GROUP = 40  # rows per write group

DDL = [
    "CREATE KEYSPACE tr WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE TABLE tr.items (id int PRIMARY KEY, v text) WITH cdc = true",
    "CREATE TABLE tr.kept (id int PRIMARY KEY, v text) WITH cdc = true",
    "CREATE KEYSPACE vol WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    " AND durable_writes = false",
    "CREATE TABLE vol.lost (id int PRIMARY KEY, v text) WITH cdc = true",
    "CREATE TABLE vol.plain (id int PRIMARY KEY, v text)",
]

own_ports = shifted_ports(PORT_OFFSET)


def decode(cdc_raw: Path, schema: Schema) -> tuple[list[ChangeEvent], CommitLogReader]:
    reader = CommitLogReader(schema, require_idx=True)
    return [e for batch in reader.read_paths([cdc_raw]) for e in events_from_batch(batch)], reader


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_truncate_and_durable_writes_on_a_real_node(setup: NodeSetup, tmp_path: Path) -> None:
    started = time.monotonic()
    with cassandra_node(tmp_path / "node", setup) as node:
        session = node.session
        for statement in DDL:
            session.execute(statement)
        insert_rows(session, "tr.items", 0, GROUP)
        insert_rows(session, "tr.kept", 0, GROUP // 2)
        insert_rows(session, "vol.lost", 0, GROUP // 2)
        before_ms = int(time.time() * 1000)
        session.execute("TRUNCATE tr.items", timeout=120)
        after_ms = int(time.time() * 1000)
        insert_rows(session, "tr.items", 1000, GROUP)
        insert_rows(session, "tr.kept", 1000, GROUP // 2)
        insert_rows(session, "vol.lost", 1000, GROUP // 2)
        session.execute("TRUNCATE vol.lost", timeout=120)

        live = load_schema(schema_uri(node))
        dumped = load_schema(node.dump_schema("tr", tmp_path / "001.json"))
        node.stop()  # drain: every segment's idx final

    # durable_writes, from the node's own schema
    assert {t.qualified_name: t.durable_writes for t in live.cdc_tables() if t.keyspace in ("tr", "vol")} == {
        "tr.items": True,
        "tr.kept": True,
        "vol.lost": False,
    }
    assert [t.qualified_name for t in non_durable_cdc_tables(live)] == ["vol.lost"]
    ((table, message),) = durable_writes_warnings(live)
    assert table.qualified_name == "vol.lost" and "vol.lost" in message and "never reach the commit log" in message

    segments = discover([node.cdc_raw])
    assert segments and {s.version for s in segments} == {setup.descriptor_version}
    events, reader = decode(node.cdc_raw, live)
    assert not [i for i in reader.issues if i.kind == "system_table" or i.table == "system.local"]
    items = [e for e in events if e.qualified_table == "tr.items"]
    ops = [e.op for e in items]
    assert ops == [INSERT] * GROUP + [TRUNCATE] + [INSERT] * GROUP, ops
    first, truncate, second = items[:GROUP], items[GROUP], items[GROUP + 1 :]
    assert {int.from_bytes(e.partition_key[0], "big") for e in first} == set(range(GROUP))
    assert {int.from_bytes(e.partition_key[0], "big") for e in second} == set(range(1000, 1000 + GROUP))
    recorded = (truncate.truncated_segment_id, truncate.truncated_position)
    assert (first[-1].segment_id, first[-1].position) <= recorded < (second[0].segment_id, second[0].position)
    assert recorded < (truncate.segment_id, truncate.position)  # the record is written after the flush
    assert truncate.truncated_at is not None and before_ms <= truncate.truncated_at <= after_ms
    assert before_ms * 1000 <= truncate.ts <= after_ms * 1000

    # the other table is not truncated; the non-durable one has its truncation and nothing else
    assert [e.op for e in events if e.qualified_table == "tr.kept"] == [INSERT] * GROUP
    assert [e.op for e in events if e.qualified_table == "vol.lost"] == [TRUNCATE]
    assert not [e for e in events if e.qualified_table == "vol.plain"]

    # a dump without the system keyspace: cdcfast's own system.local gives the same events
    assert SYSTEM_LOCAL_ID not in dumped.tables
    from_dump, dump_reader = decode(node.cdc_raw, dumped)
    assert [e for e in from_dump if e.keyspace == "tr"] == [e for e in events if e.keyspace == "tr"]
    assert not [i for i in dump_reader.issues if i.kind != "unknown_table"]
    print(f"\n{setup.name}: {time.monotonic() - started:.1f} s, system.local in the node's schema: "
          f"{SYSTEM_LOCAL_ID in live.tables}")  # fmt: skip
