"""The setup the live tests (tests/live/test_live_*.py) share: their marks, ports of their own, a
keyspace and sinks of their own, and a ``cdcfast supervise`` following a node.

Typical use::

    pytestmark = live_marks(services=True)
    own_ports = shifted_ports(PORT_OFFSET)  # an autouse fixture of the module

    def test_x(tmp_path):
        sinks = fresh_sinks("x")
        with cassandra_node(tmp_path / "node", SETUP) as node:
            ...
            with following(node, sinks, tmp_path / "state", f"{sinks.keyspace}-node1") as pipe:
                ...
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live.cassandra_node import LiveNode, tools_missing
from live.replication import TABLES, Pipeline, Sinks, WorkloadResult, change_log_report, pipelines

from cdcfast.commitlog import load_schema
from cdcfast.commitlog.schema import TableDef

# The variables naming a live node's ports (cassandra_node.NodeSetup), with their defaults.
PORT_VARIABLES = (
    ("CDCFAST_LIVE_NATIVE_PORT", 19042),
    ("CDCFAST_LIVE_STORAGE_PORT", 17000),
    ("CDCFAST_LIVE_JMX_PORT", 17199),
)


def live_marks(*, services: bool) -> list[pytest.MarkDecorator]:
    """A live test module's ``pytestmark``: slow, starts Cassandra (skipped without Java 17 or
    ../shared), and with ``services`` replicates into scripts/services.sh's databases."""
    marks = [pytest.mark.slow, pytest.mark.cassandra]
    if services:
        marks.append(pytest.mark.services)
    missing = tools_missing()
    return [*marks, pytest.mark.skipif(missing is not None, reason=str(missing))]


def shifted_ports(offset: int) -> Any:
    """An autouse fixture that adds ``offset`` to the live node ports (``CDCFAST_LIVE_*_PORT`` or
    their defaults) for each test of the module that assigns it: clear of the other live tests'
    nodes, which may run at the same time on one machine."""

    @pytest.fixture(autouse=True)
    def own_ports(monkeypatch: pytest.MonkeyPatch) -> None:
        for name, default in PORT_VARIABLES:
            monkeypatch.setenv(name, str(int(os.environ.get(name, default)) + offset))

    return own_ports


def fresh_sinks(prefix: str) -> Sinks:
    """Sinks for a keyspace of this run's own (``<prefix>_<10 hex digits>``, ``sinks.keyspace``);
    their databases go when the test ends (support.throwaway)."""
    return Sinks(f"{prefix}_{uuid.uuid4().hex[:10]}")


def schema_uri(node: LiveNode) -> str:
    """``--schema`` for cdcfast: the live node's own metadata."""
    return f"cassandra://{node.address}:{node.port}"


def pipeline_for(node: LiveNode, sinks: Sinks, state: Path, name: str, extra: tuple[str, ...] = ()) -> Pipeline:
    """``cdcfast supervise`` (not started) following ``node``'s cdc_raw into every sink, reading the
    schema from the node, with state folder ``state`` and ``--node name``."""
    return Pipeline(node.cdc_raw, schema_uri(node), sinks.dsns, state, node=name, extra=extra)


@contextlib.contextmanager
def following(node: LiveNode, sinks: Sinks, state: Path, name: str, extra: tuple[str, ...] = ()) -> Iterator[Pipeline]:
    """:func:`pipeline_for` started and ready; stopped (killed if need be) at the end."""
    pipe = pipeline_for(node, sinks, state, name, extra)
    with pipelines(pipe):
        pipe.wait_ready()
        yield pipe


def keyspace_cdc_tables(uri: str, keyspace: str) -> dict[str, TableDef]:
    """The CDC tables of ``keyspace`` by name, in the schema at ``uri`` (a live node's, as it is now)."""
    return {t.name: t for t in load_schema(uri).cdc_tables() if t.keyspace == keyspace}


def change_log_failures(sinks: Sinks, result: WorkloadResult) -> list[str]:
    """Where a sink's change log of a :class:`~live.replication.Workload` table does not hold each
    of the workload's writes exactly once."""
    failures = []
    for name in TABLES:
        for sink, got in sinks.change_logs(name).items():
            report = change_log_report(name, sink, got, result.writes[name])
            if report:
                failures.append(report)
    return failures


def insert_rows(session: Any, table: str, first: int, count: int, note: str = "row") -> None:
    """Keys ``first`` .. ``first + count - 1`` into ``table (id int PRIMARY KEY, v text)``, v = note and key."""
    insert = session.prepare(f"INSERT INTO {table} (id, v) VALUES (?, ?)")
    for key in range(first, first + count):
        session.execute(insert, (key, f"{note} {key}"))
