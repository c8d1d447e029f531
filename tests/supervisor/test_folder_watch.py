"""The supervisor wakes when Cassandra writes a ``_cdc.idx`` (or moves a segment in), instead of at
its next poll only: the poll interval no longer adds to the latency of every change."""

from __future__ import annotations

import threading
from pathlib import Path

from cdcfast.supervisor.folder_watch import FolderWatch

LONG = 60.0  # seconds: a wait that ends before this was woken by the change, not by the timeout


def later(action, seconds: float = 0.2) -> threading.Timer:  # noqa: ANN001
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_an_idx_written_wakes_the_wait(tmp_path: Path) -> None:
    watch = FolderWatch(tmp_path)
    try:
        later(lambda: (tmp_path / "CommitLog-8-1_cdc.idx").write_text("4096"))
        assert watch.wait(LONG) is True
        later(lambda: (tmp_path / "CommitLog-8-1_cdc.idx").write_text("8192\nCOMPLETED"))
        assert watch.wait(LONG) is True
    finally:
        watch.close()


def test_a_segment_moved_in_wakes_the_wait_and_writes_into_a_segment_do_not(tmp_path: Path) -> None:
    segment = tmp_path / "CommitLog-8-2.log"
    segment.write_bytes(b"\0" * 64)
    outside = tmp_path.parent / f"{tmp_path.name}-CommitLog-6-3.log"
    outside.write_bytes(b"\0" * 64)
    watch = FolderWatch(tmp_path)
    try:
        later(lambda: segment.open("ab").write(b"entries"), 0.05)  # Cassandra appending: no news by itself
        assert watch.wait(0.5) is False
        later(lambda: outside.rename(tmp_path / "CommitLog-6-3.log"))  # Cassandra 3.x moving a segment in
        assert watch.wait(LONG) is True
    finally:
        watch.close()


def test_without_the_folder_the_wait_sleeps_and_watches_once_it_appears(tmp_path: Path) -> None:
    folder = tmp_path / "cdc_raw"
    watch = FolderWatch(folder)
    try:
        assert watch.wait(0.05) is False
        folder.mkdir()
        assert watch.wait(0.05) is False  # watching from now on
        later(lambda: (folder / "CommitLog-8-4_cdc.idx").write_text("20"))
        assert watch.wait(LONG) is True
    finally:
        watch.close()


def test_a_folder_deleted_and_made_again_is_watched_again(tmp_path: Path) -> None:
    folder = tmp_path / "cdc_raw"
    folder.mkdir()
    watch = FolderWatch(folder)
    try:
        later(folder.rmdir)
        assert watch.wait(LONG) is False  # the watch went with the folder
        folder.mkdir()
        assert watch.wait(0.05) is False  # watching the new folder from now on
        later(lambda: (folder / "CommitLog-8-5_cdc.idx").write_text("20"))
        assert watch.wait(LONG) is True
    finally:
        watch.close()
