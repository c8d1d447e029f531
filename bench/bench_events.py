"""Reading + building change events: the compiled builder against the Python path, same run.

    python bench/bench_events.py [--rounds 9] [--corpus NAME ...] [--segments DIR [--count 4]]
                                 [--out bench/results/events.json]

For each input (the corpora's ``cdc_raw``, and the first ``--count`` segments of ``--segments``,
``cdcfast generate`` output), one process, one core, in rounds; each round measures, in an order
that alternates from round to round:

* ``decode``: the Cython reader alone, segments -> batches (``CommitLogReader``);
* ``python``: reading and building events with the Python path (``events_from_batch_python``, the
  baseline: what ``events_from_batch`` was before the compiled builder);
* ``compiled``: reading and building with ``events_from_batch`` (cdcfast/_events.pyx).

Both event paths stream as the parser does (one batch decoded, its events built, the next) and keep
every event until the end of the measurement, with the cyclic garbage collector on, as in the
parser workers. CPU seconds (``time.process_time``) and wall seconds; the figures are the medians
over rounds, with the load average before and after (the machine is shared). The counts and the
event ids of both paths are checked equal in every round.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from cdcfast.commitlog import CommitLogReader, Schema, discover, load_schema  # noqa: E402
from cdcfast.commitlog.batch import Batch  # noqa: E402
from cdcfast.events import ChangeEvent, events_from_batch, events_from_batch_python  # noqa: E402

Build = Callable[[Batch], Iterator[ChangeEvent]]
PATHS: dict[str, Build | None] = {"decode": None, "python": events_from_batch_python, "compiled": events_from_batch}


def measure(schema: Schema, paths: list[Path], build: Build | None) -> tuple[float, float, int, bytes]:
    """CPU and wall seconds of reading ``paths`` (and building events with ``build``), the number
    of events (mutations when only decoding) and a digest of their ids."""
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    reader = CommitLogReader(schema)
    if build is None:
        batches = list(reader.read_paths(paths))
        count, ids = sum(b.mutation_count for b in batches), b""
    else:
        events = [e for batch in reader.read_paths(paths) for e in build(batch)]
        count = len(events)
    c1, w1 = time.process_time(), time.perf_counter()
    if build is not None:
        ids = b"".join(e.event_id for e in events)
        del events
    else:
        del batches
    return c1 - c0, w1 - w0, count, ids


def bench_input(schema: Schema, paths: list[Path], rounds: int) -> dict:
    seconds: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in PATHS}
    counts: dict[str, int] = {}
    for round_ in range(rounds):
        order = list(PATHS) if round_ % 2 == 0 else list(reversed(PATHS))
        ids: dict[str, bytes] = {}
        for name in order:
            cpu, wall, count, ids[name] = measure(schema, paths, PATHS[name])
            seconds[name]["cpu"].append(cpu)
            seconds[name]["wall"].append(wall)
            counts[name] = count
        if counts["python"] != counts["compiled"] or ids["python"] != ids["compiled"]:
            raise SystemExit(f"{paths}: the two paths made different events")
    events = counts["compiled"]
    out: dict = {"events": events, "mutations": counts["decode"], "rounds": rounds}
    for name in PATHS:
        cpu = statistics.median(seconds[name]["cpu"])
        wall = statistics.median(seconds[name]["wall"])
        out[name] = {
            "cpu_seconds_median": round(cpu, 4),
            "wall_seconds_median": round(wall, 4),
            "cpu_seconds": [round(s, 4) for s in seconds[name]["cpu"]],
            "events_per_cpu_s": round(events / cpu),
            "events_per_wall_s": round(events / wall),
        }
    decode = out["decode"]["cpu_seconds_median"]
    for clock in ("cpu", "wall"):
        python, compiled = out["python"][f"{clock}_seconds_median"], out["compiled"][f"{clock}_seconds_median"]
        out[f"ratio_read_and_build_{clock}"] = round(python / compiled, 2)
    out["ratio_build_only_cpu"] = round(
        (out["python"]["cpu_seconds_median"] - decode) / (out["compiled"]["cpu_seconds_median"] - decode), 2
    )
    out["build_us_per_event"] = {
        "python": round((out["python"]["cpu_seconds_median"] - decode) / events * 1e6, 2),
        "compiled": round((out["compiled"]["cpu_seconds_median"] - decode) / events * 1e6, 2),
    }
    return out


def report(name: str, r: dict) -> None:
    print(
        f"{name}: {r['events']:,} events | read+build events/s (CPU): python {r['python']['events_per_cpu_s']:,} "
        f"compiled {r['compiled']['events_per_cpu_s']:,} = {r['ratio_read_and_build_cpu']}x "
        f"(wall {r['ratio_read_and_build_wall']}x) | building alone: {r['build_us_per_event']['python']} -> "
        f"{r['build_us_per_event']['compiled']} us/event = {r['ratio_build_only_cpu']}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--corpus", action="append", help="corpus names (default: all in ../shared/corpus)")
    parser.add_argument("--segments", type=Path, help="a folder of generated segments, measured too")
    parser.add_argument("--count", type=int, default=4, help="segments of --segments to read")
    parser.add_argument("--schema", default=str(SHARED / "corpus" / "c50-v8-lz4" / "schema"), help="for --segments")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "events.json")
    args = parser.parse_args()
    names = args.corpus
    if names is None:
        names = sorted(p.name for p in (SHARED / "corpus").iterdir() if p.is_dir())
    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": os.getloadavg(),
        },
        "inputs": {},
    }
    for name in names:
        corpus = SHARED / "corpus" / name
        with tempfile.TemporaryDirectory() as scratch:
            with tarfile.open(corpus / "cdc_raw.tar.gz") as tar:
                tar.extractall(scratch, filter="data")
            r = bench_input(load_schema(corpus / "schema"), [Path(scratch) / "cdc_raw"], args.rounds)
        results["inputs"][name] = r
        report(name, r)
    if args.segments:
        segments = [s.path for s in discover([args.segments])[: args.count]]
        r = bench_input(load_schema(args.schema), segments, args.rounds)
        results["inputs"][f"{args.segments} (first {len(segments)} segments)"] = r
        report(f"{args.segments.name} x{len(segments)}", r)
    results["machine"]["loadavg_after"] = os.getloadavg()
    print(f"load average before {results['machine']['loadavg_before']}, after {results['machine']['loadavg_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
