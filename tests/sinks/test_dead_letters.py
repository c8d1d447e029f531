"""Values a warehouse cannot hold go to its dead-letter table; the rest keeps flowing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import msgspec
import pytest
from conftest import CORPUS_ROOT, Corpus
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import fresh_clickhouse, fresh_database

from cdcfast.events import ChangeEvent
from cdcfast.sinks import open_sink

pytestmark = pytest.mark.services


def poisoned(events: list[ChangeEvent], column: str, value: bytes, count: int) -> tuple[list[ChangeEvent], set[bytes]]:
    """``count`` all_types inserts with ``column`` set to ``value``: new changes, new ids."""
    out, planted = [], set()
    for event in events:
        cells = [c for c in event.cells if c.column == column]
        if len(planted) < count and event.table == "all_types" and event.op == "insert" and cells:
            new_cells = [msgspec.structs.replace(c, value=value) if c.column == column else c for c in event.cells]
            event = msgspec.structs.replace(event, cells=new_cells).with_content_id()
            planted.add(event.event_id)
        out.append(event)
    return out, planted


@pytest.fixture(scope="module")
def corpus_events(corpus_scratch):
    if not (CORPUS_ROOT / "c50-v7-plain").exists():
        pytest.skip("corpus missing")
    return cdc_events(Corpus("c50-v7-plain", corpus_scratch))


@pytest.mark.parametrize(
    "kind, column, value, expect",
    [
        ("postgresql", "a_date", b"\x00\x00\x00\x05", "a_date"),  # 2^31 - 5 days before 1970: no PostgreSQL date
        ("postgresql", "a_text", b"nul\x00inside", "a_text"),  # PostgreSQL text cannot hold U+0000
        ("clickhouse", "a_varint", (10**40).to_bytes(17, "big"), "a_varint"),  # wider than Decimal(38, 0)
    ],
)
def test_poison_goes_to_the_dead_letter_table(
    corpus_events, tmp_path, kind: str, column: str, value: bytes, expect: str
) -> None:  # noqa: ANN001
    service = "postgres" if kind == "postgresql" else "clickhouse"
    dsn = ensure_services([service])[service]
    if kind == "clickhouse":
        fresh_clickhouse(dsn)
    else:
        dsn = asyncio.run(fresh_database(dsn))
    schema, events = corpus_events
    events = [e for e in events if e.keyspace == "types"]
    events, planted = poisoned(events, column, value, 3)
    assert len(planted) == 3
    tables = {(t.keyspace, t.name): t for t in schema.tables.values()}

    async def run() -> list[dict]:
        sink = open_sink(kind, dsn, kind)
        await sink.connect()
        await sink.apply(events, tables, "node1", (events[-1].segment_id, events[-1].position))
        letters = await sink.dead_letters()
        assert await sink.checkpoint("node1") == (events[-1].segment_id, events[-1].position)
        await sink.close()
        return letters

    letters = asyncio.run(run())
    assert {d["event_id"].bytes for d in letters} == planted
    for letter in letters:
        assert "types.all_types" in letter["reason"] and expect in letter["reason"], letter["reason"]
        assert letter["keyspace"] == "types" and letter["table"] == "all_types" and letter["segment_id"] > 0
    listed = subprocess.run(
        [sys.executable, "-m", "cdcfast.cli", "dlq", "list", "--sink", dsn, "--json"], capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert {bytes.fromhex(r["event_id"].replace("-", "")) for r in json.loads(listed.stdout)} == planted
    shown = subprocess.run(
        [sys.executable, "-m", "cdcfast.cli", "dlq", "show", str(letters[0]["event_id"]), "--sink", dsn],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0 and '"all_types"' in shown.stdout
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdcfast.cli",
            "dlq",
            "replay",
            "--sink",
            dsn,
            "--schema",
            str(CORPUS_ROOT / "c50-v7-plain" / "schema"),
        ],
        capture_output=True,
        text=True,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 0 of 3" in replay.stdout  # still unstorable: they stay, nothing is lost
    status = subprocess.run(
        [sys.executable, "-m", "cdcfast.cli", "status", "--json", "--cdc-raw", str(tmp_path), "--node", "node1"]
        + ["--schema", str(CORPUS_ROOT / "c50-v7-plain" / "schema"), "--sink", dsn],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["sinks"][kind]["dlq_depth"] == 3  # waiting: the replay could store none
