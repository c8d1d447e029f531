"""``cdcfast status``: one screen for people (``--json`` for scripts): per sink its checkpoint, lag,
events/s, last error and dead letters; cdc_raw usage; the process table."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cdcfast.commitlog import discover
from cdcfast.config import PipelineConfig
from cdcfast.sinks import connect_within, open_sink
from cdcfast.supervisor.messages import WHOLE_SEGMENT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pending(cdc_raw: Path, checkpoint: tuple[int, int]) -> tuple[int, int]:
    """Segments with durable data past ``checkpoint``, and how many logical bytes that is."""
    segments, nbytes = 0, 0
    for segment in discover([cdc_raw]) if cdc_raw.exists() else []:
        if not segment.holds_cdc:
            continue
        idx = segment.cdc_index()
        end = segment.path.stat().st_size if idx.completed else (idx.offset or 0)
        done = (
            0
            if segment.segment_id > checkpoint[0]
            else checkpoint[1]
            if segment.segment_id == checkpoint[0]
            else WHOLE_SEGMENT
        )
        if done < end and done < WHOLE_SEGMENT:
            segments += 1
            nbytes += end - done
    return segments, nbytes


async def collect(config: PipelineConfig) -> dict[str, Any]:
    source = config.sources[0]
    cdc_raw = Path(source.cdc_raw)
    state_file = Path(config.state_dir) / "status.json"
    supervisor: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    running = bool(supervisor) and _alive(int(supervisor.get("supervisor_pid", 0)))
    sinks: dict[str, Any] = {}
    for spec in config.sinks:
        sink = open_sink(spec.kind, spec.dsn, spec.name)
        entry: dict[str, Any] = {"kind": spec.kind, **supervisor.get("sinks", {}).get(spec.name, {})}
        try:
            await connect_within(sink)
            checkpoint = await sink.checkpoint(source.node)
            entry["reachable"] = True
            entry["checkpoint"] = list(checkpoint) if checkpoint else None
            entry["dlq_depth"] = await sink.dlq_depth()  # counted by the server, not read letter by letter
            segments, nbytes = _pending(cdc_raw, checkpoint or (-1, -1))
            entry["lag_segments"], entry["lag_bytes"] = segments, nbytes
            await sink.close()
        except Exception as exc:  # an unreachable sink is a state to show, not a crash
            entry["reachable"] = False
            entry["error"] = f"{type(exc).__name__}: {exc}"
        sinks[spec.name] = entry
    used = sum(p.stat().st_size for p in cdc_raw.iterdir() if p.is_file()) if cdc_raw.exists() else 0
    return {
        "node": source.node,
        "supervisor": {
            "running": running,
            "pid": supervisor.get("supervisor_pid"),
            "updated_seconds_ago": round(time.time() - supervisor["updated_at"], 1) if supervisor else None,
        },
        "processes": [{**p, "alive": _alive(p["pid"])} for p in supervisor.get("processes", [])] if running else [],
        "cdc_raw": {
            "path": str(cdc_raw),
            "bytes": used,
            "segments": len(discover([cdc_raw])) if cdc_raw.exists() else 0,
        },
        "sinks": sinks,
    }


def render(status: dict[str, Any]) -> str:
    lines = [
        f"cdcfast on {status['node']}: supervisor "
        + (f"running (pid {status['supervisor']['pid']})" if status["supervisor"]["running"] else "not running")
    ]
    raw = status["cdc_raw"]
    lines.append(f"cdc_raw {raw['path']}: {raw['bytes'] / 2**20:.1f} MiB in {raw['segments']} segment(s)")
    lines.append(f"{'sink':<14}{'checkpoint':<26}{'lag':>16}{'events/s':>10}{'DLQ':>6}  last error")
    for name, sink in status["sinks"].items():
        if not sink.get("reachable"):
            lines.append(f"{name:<14}{'unreachable':<26}{'':>16}{'':>10}{'':>6}  {sink.get('error', '')}")
            continue
        checkpoint = "none yet" if not sink["checkpoint"] else f"{sink['checkpoint'][0]}:{sink['checkpoint'][1]}"
        lag = f"{sink['lag_segments']} seg/{sink['lag_bytes'] / 2**20:.1f} MiB"
        error = sink.get("last_error") or "-"
        if sink.get("down"):  # the pipeline holds this sink while the others flow (docs/failures.md)
            error = f"DOWN ({sink['down']}): {error}"
        lines.append(
            f"{name:<14}{checkpoint:<26}{lag:>16}{sink.get('events_per_s', 0):>10}{sink['dlq_depth']:>6}  {error}"
        )
    if status["processes"]:
        lines.append(
            "processes: "
            + ", ".join(f"{p['name']} {p['pid']}{'' if p['alive'] else ' (dead)'}" for p in status["processes"])
        )
    return "\n".join(lines)
