"""A segment deleted from cdc_raw before cdcfast delivered it is reported, never passed over silently.

Cassandra 4.1+ with ``cdc_block_writes: false`` deletes the oldest CDC segments when cdc_raw is full
instead of refusing writes, and an operator may delete files by hand. Changes of such a segment
after the sinks' checkpoint are lost to them: cdcfast says which segment and from which position,
counts it, and goes on with the next segments.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT
from support.pipeline import supervise_command

from cdcfast.commitlog import discover
from cdcfast.commitlog.segment import open_segment, read_descriptor, walk_sections
from cdcfast.supervisor.messages import WHOLE_SEGMENT

SCHEMA = CORPUS_ROOT / "c50-v8-lz4" / "schema"


def generate(out: Path) -> None:
    command = ["python", "-m", "cdcfast.cli", "generate", "--schema", str(SCHEMA), "--out", str(out)]
    command += ["--events", "6000", "--segment-size", "1MiB", "--seed", "5", "--quiet"]
    subprocess.run(command, check=True, capture_output=True)


def checkpoint(state: Path) -> tuple[int, int] | None:
    try:
        sinks = json.loads((state / "status.json").read_text())["sinks"]
    except (OSError, ValueError, KeyError):
        return None
    return tuple(sinks["null"]["checkpoint"])  # type: ignore[return-value]


def wait_for(state: Path, wanted: tuple[int, int], process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while checkpoint(state) != wanted:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"checkpoint {checkpoint(state)}, waiting for {wanted}"
        time.sleep(0.2)


class Node:
    """A cdc_raw with two segments: the first synced up to its first section's end (still being
    written), the second complete."""

    def __init__(self, tmp_path: Path) -> None:
        if not SCHEMA.exists():
            pytest.skip("corpus missing")
        generated, self.cdc_raw, self.state = tmp_path / "generated", tmp_path / "cdc_raw", tmp_path / "state"
        generate(generated)
        self.first, self.second = discover([generated])[:2]
        data = open_segment(self.first.path)
        sections = list(walk_sections(self.first.path, data, read_descriptor(self.first.path, data), None))
        self.durable = sections[1].file_offset
        self.cdc_raw.mkdir()
        for segment in (self.first, self.second):
            shutil.copy(segment.path, self.cdc_raw)
        (self.cdc_raw / self.first.idx_path.name).write_text(str(self.durable))
        shutil.copy(self.second.idx_path, self.cdc_raw)

    def start(self) -> subprocess.Popen:
        command = supervise_command(self.cdc_raw, SCHEMA, "null://", state=self.state)
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def delete_first(self) -> None:  # as Cassandra does with cdc_block_writes: false
        (self.cdc_raw / self.first.path.name).unlink()
        (self.cdc_raw / self.first.idx_path.name).unlink()


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=60)[1]


def reports(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if "deleted before" in line]


def test_a_segment_deleted_before_delivery_is_reported_and_the_next_ones_delivered(tmp_path: Path) -> None:
    node = Node(tmp_path)
    process = node.start()
    try:
        wait_for(node.state, (node.first.segment_id, node.durable), process)
        node.delete_first()
        wait_for(node.state, (node.second.segment_id, WHOLE_SEGMENT), process)
    finally:
        stderr = stop(process)
    (report,) = reports(stderr)
    assert report["level"] == "error" and report["segment"] == node.first.segment_id
    assert report["lost_after"] == node.durable


def test_a_segment_deleted_while_cdcfast_was_stopped_is_reported_at_start(tmp_path: Path) -> None:
    node = Node(tmp_path)
    process = node.start()
    try:
        wait_for(node.state, (node.first.segment_id, node.durable), process)
    finally:
        assert not reports(stop(process))
    node.delete_first()
    process = node.start()
    try:
        wait_for(node.state, (node.second.segment_id, WHOLE_SEGMENT), process)
    finally:
        stderr = stop(process)
    (report,) = reports(stderr)
    assert report["segment"] == node.first.segment_id and report["lost_after"] == node.durable


def test_segments_gone_from_cdc_raw_are_forgotten(tmp_path: Path) -> None:
    """A 4.0+ node links every segment into cdc_raw and deletes the links of those without CDC data
    once it discards them: all day long. The supervisor forgets every segment gone from cdc_raw
    (reporting only those with CDC data it had not handed out all of), so what it keeps track of
    stays as small as cdc_raw itself."""
    from cdcfast.config import NullSink, PipelineConfig, SourceConfig
    from cdcfast.supervisor.supervisor import Supervisor, Tracked

    config = PipelineConfig(
        sources=[SourceConfig(node="n", cdc_raw=str(tmp_path), schema=str(SCHEMA))],
        sinks=[NullSink(name="null", dsn="null://")],
        state_dir=str(tmp_path / "state"),
    )
    supervisor = Supervisor(config)
    tracked = {
        1: Tracked(tmp_path / "a", 8, 1, 0),  # no CDC data, gone
        2: Tracked(tmp_path / "b", 8, 2, WHOLE_SEGMENT, holds_cdc=True),  # CDC data, all handed out, gone
        3: Tracked(tmp_path / "c", 8, 3, 0),  # no CDC data, still there
    }
    supervisor._report_vanished(tracked, {3})
    assert set(tracked) == {3}
