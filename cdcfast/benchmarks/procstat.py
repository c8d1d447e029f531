"""CPU seconds of processes, from ``/proc`` (Linux): the pipeline's own processes through the pid
files in ``<state_dir>/run/``, and the whole machine's busy time (how loaded it was meanwhile)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (``/proc/stat``)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0, 0.0
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


class ProcessSampler:
    """Follows the processes named by ``*.pid`` files in a run folder and keeps, per process name,
    the CPU seconds of each pid seen under it (a restarted child gets a new pid: both count)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.seen: dict[str, dict[int, float]] = {}

    def pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if not self.run_dir.is_dir():
            return out
        for path in self.run_dir.glob("*.pid"):
            try:
                out[path.stem] = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
        return out

    def sample(self) -> dict[str, float]:
        """Read every process now; returns CPU seconds per name (all its pids so far)."""
        for name, pid in self.pids().items():
            cpu = process_cpu(pid)
            if cpu is not None:
                per = self.seen.setdefault(name, {})
                per[pid] = max(cpu, per.get(pid, 0.0))
        return self.totals()

    def totals(self) -> dict[str, float]:
        return {name: sum(per.values()) for name, per in sorted(self.seen.items())}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _all_stats() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, its own CPU seconds, its waited-for children's CPU seconds), every process."""
    out: dict[int, tuple[int, float, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        own = (int(fields[11]) + int(fields[12])) / TICKS
        children = (int(fields[13]) + int(fields[14])) / TICKS
        out[int(entry.name)] = (int(fields[1]), own, children)
    return out


def tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each process tree (a server and its workers: PostgreSQL's backends are child
    processes), counting children that already exited through the CPU their parents collected."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    out: dict[str, float] = {}
    for name, root in roots.items():
        if root not in stats:
            continue
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            _, own, reaped = stats[pid]
            total += own + reaped
            todo.extend(children.get(pid, ()))
        out[name] = total
    return out
