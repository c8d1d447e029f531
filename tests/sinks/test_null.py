"""The null sink (``null://``): nothing stored but its checkpoint, exactly once all the same."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cdcfast.config import NullSink as NullSinkConfig
from cdcfast.config import load_config
from cdcfast.errors import ConfigError
from cdcfast.events import ChangeEvent
from cdcfast.sinks import open_sink, sink_kind
from cdcfast.sinks.null import NullSink, null_dsn_in, parse_null_dsn, read_checkpoints


def event(segment: int, position: int, n: int, table: str = "t") -> ChangeEvent:
    return ChangeEvent(
        event_id=n.to_bytes(16, "big"),
        keyspace="ks",
        table=table,
        op="insert",
        partition_key=[n.to_bytes(4, "big")],
        clustering=[],
        ts=1000 + n,
        segment_id=segment,
        position=position,
    )


def batches() -> list[tuple[list[ChangeEvent], tuple[int, int]]]:
    """Three batches over two segments; two events share a mutation (same position)."""
    return [
        ([event(1, 100, 1), event(1, 100, 2), event(1, 150, 3)], (1, 200)),
        ([event(1, 250, 4, "u")], (1, 2**31 - 1)),
        ([event(2, 80, 5), event(2, 90, 6)], (2, 120)),
    ]


async def apply_all(sink: NullSink, parts: list[tuple[list[ChangeEvent], tuple[int, int]]], source: str) -> None:
    for events, position in parts:
        await sink.apply(events, {}, source, position)


def test_checkpoint_and_counts_survive_a_reopen(tmp_path: Path) -> None:
    async def run() -> None:
        sink = NullSink(f"null://{tmp_path}/n", name="null")
        await sink.connect()
        assert await sink.checkpoint("node1") is None
        await apply_all(sink, batches(), "node1")
        assert await sink.checkpoint("node1") == (2, 120)
        await sink.close()
        again = NullSink(f"null://{tmp_path}/n", name="null")
        await again.connect()
        assert await again.checkpoint("node1") == (2, 120)
        assert await again.checkpoint("node2") is None
        assert await again.dead_letters() == []

    asyncio.run(run())
    saved = read_checkpoints(tmp_path / "n")
    assert saved["node1"]["checkpoint"] == [2, 120]
    assert saved["node1"]["events"] == 6
    assert saved["node1"]["tables"] == {"ks.t": 5, "ks.u": 1}
    assert saved["node1"]["batches"] == 3
    assert saved["node1"]["duplicates"] == 0
    assert not list((tmp_path / "n").glob("*.tmp"))


def test_a_replay_counts_nothing_twice(tmp_path: Path) -> None:
    """Replaying everything (twice), or from the middle, after a restart: each event counted once."""

    async def run() -> None:
        sink = NullSink(f"null://{tmp_path}?fsync=0")
        await sink.connect()
        await apply_all(sink, batches()[:2], "node1")
        restarted = NullSink(f"null://{tmp_path}?fsync=0")  # a crash, then a new writer
        await restarted.connect()
        await apply_all(restarted, batches(), "node1")  # from the start
        await apply_all(restarted, batches(), "node1")  # and again
        await apply_all(restarted, batches()[1:], "node1")  # from the middle
        # a batch straddling the checkpoint: only the part past it counts
        await restarted.apply([event(2, 90, 6), event(2, 130, 7)], {}, "node1", (2, 140))
        await restarted.apply([event(2, 160, 8)], {}, "node2", (2, 170))  # another source: its own count

    asyncio.run(run())
    saved = read_checkpoints(tmp_path)
    assert saved["node1"]["events"] == 7
    assert saved["node1"]["checkpoint"] == [2, 140]
    assert saved["node1"]["duplicates"] == 4 + 6 + 3 + 1
    assert saved["node1"]["batches"] == 4  # only batches that moved the checkpoint
    assert saved["node2"]["events"] == 1


def test_dsn_forms(tmp_path: Path) -> None:
    assert sink_kind("null://") == "null"
    assert isinstance(open_sink("null", f"null://{tmp_path}", "n"), NullSink)
    assert parse_null_dsn("null:///var/x?fsync=0") == (Path("/var/x"), False)
    assert parse_null_dsn("null:///var/x") == (Path("/var/x"), True)
    assert null_dsn_in("null://", tmp_path, "null") == f"null://{tmp_path.resolve()}/null/null"
    assert null_dsn_in("null://?fsync=0", tmp_path, "n2") == f"null://{tmp_path.resolve()}/null/n2?fsync=0"
    assert null_dsn_in("null:///elsewhere", tmp_path, "n") == "null:///elsewhere"
    assert null_dsn_in("postgresql://h/db", tmp_path, "n") == "postgresql://h/db"
    with pytest.raises(ConfigError, match="needs a folder"):
        NullSink("null://")


def test_config_file_keeps_a_null_sink_in_the_state_dir(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        json.dumps(
            {
                "sources": [{"node": "n1", "cdc_raw": "raw", "schema": "schema"}],
                "sinks": [{"kind": "null", "name": "bench", "dsn": "null://"}],
                "state_dir": "state",
            }
        )
    )
    config = load_config(path)
    (sink,) = config.sinks
    assert isinstance(sink, NullSinkConfig) and sink.kind == "null"
    assert sink.dsn == f"null://{(tmp_path / 'state').resolve()}/null/bench"
    path.write_text(path.read_text().replace('"null://"', '"postgresql://x/y"'))
    with pytest.raises(ConfigError, match="needs a null:// DSN"):
        load_config(path)


def test_supervise_into_null_twice_counts_each_event_once(tmp_path: Path) -> None:
    """The whole pipeline into ``null://``: every generated event once; the same segments handed
    again (a replay, as after a lost cdc_raw cleanup) add nothing; a fresh node name counts them anew."""
    import shutil
    import subprocess

    from conftest import CORPUS_ROOT, corpus_names
    from support.pipeline import supervise_command

    from cdcfast.generate.run import GenerateSettings, generate
    from cdcfast.generate.workload import WorkloadSpec

    if not corpus_names():
        pytest.skip("no corpora")
    schema = CORPUS_ROOT / ("c50-v8-lz4" if "c50-v8-lz4" in corpus_names() else corpus_names()[0]) / "schema"
    source = tmp_path / "generated"
    manifest = generate(
        GenerateSettings(str(schema), source, WorkloadSpec(seed=5), events=2500, segment_size=256 * 1024, sync_ms=300),
        stderr=None,
    )
    state = tmp_path / "state"
    cdc_raw = tmp_path / "cdc_raw"
    for attempt in range(2):
        shutil.copytree(source, cdc_raw, dirs_exist_ok=True)
        command = supervise_command(cdc_raw, schema, "null://", state=state, until_idle=True)
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-4000:]
        saved = read_checkpoints(state / "null" / "null")["node1"]
        assert saved["events"] == manifest["totals"]["events"], attempt
        assert saved["checkpoint"][0] == manifest["segments"][-1]["segment_id"]
        assert saved["duplicates"] == 0  # the writer skipped what the checkpoint covers before the sink saw it
        assert sum(saved["tables"].values()) == saved["events"]
        assert saved["tables"] == {name: t["events"] for name, t in manifest["tables"].items()}


def test_a_truncation_is_counted_once_like_any_change(tmp_path: Path) -> None:
    """The null sink stores no state to empty: a truncate event is one more change, counted once
    (its raced writes, already counted where they were read, are not counted again)."""
    import msgspec

    raced = event(1, 120, 2)
    truncate = msgspec.structs.replace(
        event(1, 200, 9), op="truncate", partition_key=[], truncated_segment_id=1, truncated_position=110, raced=[raced]
    )

    async def run() -> dict:
        sink = NullSink(f"null://{tmp_path}")
        await sink.connect()
        await sink.apply([event(1, 100, 1), raced], {}, "n1", (1, 150))
        await sink.apply([truncate, event(1, 300, 3)], {}, "n1", (1, 400))
        await sink.apply([truncate, event(1, 300, 3)], {}, "n1", (1, 400))  # a replay
        return read_checkpoints(tmp_path)["n1"]

    state = asyncio.run(run())
    assert state["events"] == 4 and state["tables"] == {"ks.t": 4} and state["checkpoint"] == [1, 400]
