"""Children die with their supervisor, even when it dies while they are still starting up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PARENT = textwrap.dedent(
    """
    import multiprocessing as mp, os, sys, time
    from pathlib import Path

    def child(folder, delay):
        time.sleep(delay)  # still importing when the supervisor is killed
        from cdcfast.supervisor.signals import become_child_process
        Path(folder, "imported").write_text("")
        become_child_process()
        Path(folder, "alive").write_text(str(os.getpid()))
        time.sleep(30)

    if __name__ == "__main__":
        process = mp.get_context("spawn").Process(target=child, args=(sys.argv[1], float(sys.argv[2])))
        process.start()
        Path(sys.argv[1], "child").write_text(str(process.pid))
        time.sleep(float(sys.argv[3]))
        os._exit(0)  # like kill -9: no cleanup, no join
    """
)


def run_parent(tmp_path: Path, child_delay: float, parent_life: float) -> int:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    arguments = [sys.executable, str(script), str(tmp_path), str(child_delay), str(parent_life)]
    subprocess.run(arguments, check=True, timeout=60, env=env)
    return int((tmp_path / "child").read_text())


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (FileNotFoundError, IndexError):
            return True
        time.sleep(0.1)
    return False


def test_a_child_still_starting_when_its_supervisor_dies_exits(tmp_path: Path) -> None:
    pid = run_parent(tmp_path, child_delay=2.0, parent_life=0.0)
    assert wait_gone(pid, 15), f"orphaned child {pid} kept running"
    assert (tmp_path / "imported").exists(), "the child failed before it could notice"
    assert not (tmp_path / "alive").exists()


def test_a_running_child_dies_with_its_supervisor(tmp_path: Path) -> None:
    pid = run_parent(tmp_path, child_delay=0.0, parent_life=3.0)
    assert (tmp_path / "alive").exists(), "the child never got going"
    assert wait_gone(pid, 10), f"orphaned child {pid} kept running"
