"""The whole way, measured in one run on one input (issues #6 and #7).

    python bench/bench_pipeline.py [--segments DIR | --size 1GiB] [--corpus c50-v8-lz4]
        [--e2e-segments 1] [--paced-segments 4] [--rate 250000] [--rounds 3] [--profile 20]
        [--skip parse|null|paced|e2e|solo] [--out bench/results/pipeline.json]

Needs the throwaway servers (scripts/services.sh start; its CDCFAST_* port variables are honoured).

1. **Input**: ``--segments DIR`` (``cdcfast generate`` output), or ``--size`` generated here with
   the corpus schema (the corpus' own table ids, so Cassandra's reader can read it).
2. **Parse**, on the whole input: Cassandra's ``CommitLogReader`` and ``cdcfast bench parse``, both
   through ``bench_parse.py`` (best of ``--rounds`` warmed rounds each), and their ratio.
3. **Pipeline into the null sink** (``cdcfast bench pipeline``; each command measures the
   single-process baseline on its own input in the same run): the whole input released at once
   (throughput); the whole input paced at ``--rate`` events/s (the issue's goal; one idx advance per
   ``--sync-ms``); the first ``--paced-segments`` paced at half the measured throughput (latency
   when the pipeline keeps up).
4. **End to end into all three sinks at once** (fresh databases) on the first ``--e2e-segments``
   segments (the writers are far slower than the pipeline: the whole input would take hours):
   released all at once (throughput), then paced at half that (latency when keeping up). Then each
   sink alone, all at once.
5. ``--profile S``: py-spy samples every pipeline process for S seconds during step 3 and step 4's
   throughput run; the heaviest functions (own time and with callees) go into the results.

Everything lands in one JSON file; the text summary is printed as it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # for children

from bench_parse import cdcfast_bench, java_bench  # noqa: E402
from clickhouse_driver import Client  # noqa: E402
from support.services import ensure_services  # noqa: E402
from throwaway_databases import Databases  # noqa: E402

from cdcfast.commitlog import discover  # noqa: E402

KEYSPACES = ("shop", "clinic", "telemetry", "types", "cdcfast")


def say(text: str) -> None:
    print(f"bench_pipeline: {text}", flush=True)


def machine() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    return {
        "cpu": fields.get("Model name", "").strip(),
        "cpus": os.cpu_count(),
        "hypervisor": fields.get("Hypervisor vendor", "").strip(),
        "memory": free.splitlines()[1] if len(free.splitlines()) > 1 else "",
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def cdcfast(*args: str, timeout: float = 14400) -> dict[str, Any]:
    """A ``cdcfast bench`` command's results (``--json``); its progress lines pass through."""
    command = [sys.executable, "-m", "cdcfast.cli", "bench", *args, "--json"]
    say("$ " + " ".join(a if "@" not in a else a.split("@")[0] + "@..." for a in command[2:]))
    run = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout, cwd=REPO)
    result = json.loads(run.stdout)
    if run.returncode != 0:
        say(f"PROBLEMS: {result.get('problems')}")
    return result


def slice_of(folder: Path, count: int, target: Path) -> Path:
    """The first ``count`` segments of ``folder`` (hard links), without the manifest."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for segment in discover([folder])[:count]:
        os.link(segment.path, target / segment.path.name)
        if segment.idx_path is not None:
            shutil.copyfile(segment.idx_path, target / segment.idx_path.name)
    return target


def server_pids() -> list[str]:
    """``--server NAME=PID`` options for the throwaway servers (scripts/services.sh's pid files)."""
    folder = Path(os.environ.get("CDCFAST_SERVICES_DIR", "/tmp/cdcfast-services"))
    out = []
    for name, pid_file in (
        ("postgresql", "postgres/data/postmaster.pid"),
        ("timescaledb", "timescaledb/data/postmaster.pid"),
        ("clickhouse", "clickhouse/clickhouse-server.pid"),
    ):
        try:
            out += ["--server", f"{name}={int((folder / pid_file).read_text().split()[0])}"]
        except (OSError, ValueError, IndexError):
            say(f"no pid file for {name} in {folder}: its CPU is not counted")
    return out


def fresh_sinks(dsns: dict[str, str], databases: Databases) -> dict[str, str]:
    """An empty database in each server (ClickHouse: the keyspaces' databases dropped), the
    previous run's PostgreSQL and TimescaleDB databases dropped."""
    client = Client.from_url(dsns["clickhouse"])
    for database in KEYSPACES:
        client.execute(f"DROP DATABASE IF EXISTS `{database}`")
    client.disconnect()
    databases.drop_all()
    ts = databases.fresh(dsns["timescaledb"])
    return {
        "postgresql": databases.fresh(dsns["postgres"]),
        "timescaledb": "timescaledb://" + ts.split("://", 1)[1],
        "clickhouse": dsns["clickhouse"],
    }


# -- profiling ------------------------------------------------------------------------------------------


class Profiler(threading.Thread):
    """Once the pipeline in ``work`` has its input released, py-spy samples each of its processes
    for ``seconds``; :meth:`summary` gives their heaviest functions."""

    def __init__(self, work: Path, seconds: float, label: str, out: Path) -> None:
        super().__init__(daemon=True)
        self.work, self.seconds, self.label, self.out = work, seconds, label, out
        self.files: dict[str, Path] = {}

    def run(self) -> None:
        raw, run_dir = self.work / "cdc_raw", self.work / "state" / "run"
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            if raw.is_dir() and any(raw.glob("CommitLog-*.log")):
                break
            time.sleep(0.1)
        time.sleep(1.0)  # past the first batches
        spies = []
        for pid_file in sorted(run_dir.glob("*.pid")):
            name = pid_file.stem
            target = self.out / f"profile-{self.label}-{name}.raw"
            command = ["py-spy", "record", "--pid", pid_file.read_text().strip(), "--duration", str(int(self.seconds))]
            # blocking sampling: --native (Cython frames) cannot go with --nonblocking
            command += ["--rate", "50", "--format", "raw", "--native", "-o", str(target)]
            log = open(target.with_suffix(".log"), "w")  # noqa: SIM115 - left to py-spy
            spies.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            self.files[name] = target
        for spy in spies:
            spy.wait()

    def summary(self, top: int = 12) -> dict[str, Any]:
        out = {}
        for name, path in self.files.items():
            if not path.exists():
                continue
            own: Counter = Counter()
            inclusive: Counter = Counter()
            total = 0
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                frames = [f for f in stack.split(";") if f]
                n = int(count)
                total += n
                own[short(frames[-1])] += n
                for frame in {short(f) for f in frames}:
                    inclusive[frame] += n
            if total:
                out[name] = {
                    "samples": total,
                    "own": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
                    "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top * 2)],
                }
        return out


def short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name


# -- the run --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="c50-v8-lz4", help="whose schema (and system_schema for Java)")
    parser.add_argument("--segments", type=Path, help="input segments (default: generate --size)")
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--rounds", type=int, default=3, help="parse rounds for each reader")
    parser.add_argument("--null-segments", type=int, help="segments for the null-sink run (default: all)")
    parser.add_argument("--paced-segments", type=int, default=4, help="segments for the null sink at half rate")
    parser.add_argument("--e2e-segments", type=int, default=1, help="segments for the end-to-end runs")
    parser.add_argument("--rate", type=float, default=250_000, help="the goal rate, events/s")
    parser.add_argument("--sync-ms", type=int, default=2000)
    parser.add_argument("--profile", type=float, default=0, help="py-spy seconds per process (0: none)")
    parser.add_argument("--skip", action="append", default=[], help="parse, null, e2e, solo, paced")
    parser.add_argument("--work", type=Path, help="work folder (default: temporary)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    args = parser.parse_args()
    corpus = SHARED / "corpus" / args.corpus
    schema = str(corpus / "schema")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine_before": machine(), "corpus_schema": args.corpus}
    save = lambda: args.out.write_text(json.dumps(results, indent=1) + "\n")  # noqa: E731
    args.out.parent.mkdir(parents=True, exist_ok=True)

    segments = args.segments
    if segments is None:
        segments = work / "input"
        say(f"generating {args.size} into {segments}")
        subprocess.run(
            [sys.executable, "-m", "cdcfast.cli", "generate", "--schema", schema, "--out", str(segments)]
            + ["--size", args.size, "--seed", "1", "--sync-ms", str(args.sync_ms)],
            check=True,
            cwd=REPO,
        )
    manifest = json.loads((segments / "generated.json").read_text())
    results["input"] = {"folder": str(segments), **manifest["totals"], "settings": manifest["settings"]}
    say(f"input: {manifest['totals']}")

    if "parse" not in args.skip:
        say(f"parse: Cassandra's reader, {args.rounds} rounds")
        java = java_bench(corpus / "system_schema.tar.gz", segments, args.rounds)
        say(f"parse: cdcfast, {args.rounds} rounds")
        full = cdcfast_bench(corpus / "schema", segments, args.rounds)
        ratio = full["mutations_per_s"] / java["mutations_per_s"]
        results["parse"] = {"cassandra_reader": java, "cdcfast_decode": full, "ratio": round(ratio, 2)}
        say(
            f"parse: Cassandra {java['mutations_per_s']:,.0f} mutations/s ({java['mb_per_s']} MB/s), "
            f"cdcfast {full['mutations_per_s']:,.0f} mutations/s ({full['mb_per_s']} MB/s): {ratio:.2f}x"
        )
        save()

    servers = server_pids()
    profiles = args.out.parent / "profiles"
    if args.profile:
        profiles.mkdir(parents=True, exist_ok=True)

    def run_bench(label: str, kind: str, *options: str) -> dict[str, Any]:
        bench_work = work / f"run-{label}"
        profiled = args.profile and label in ("null", "e2e_all_sinks")
        profiler = Profiler(bench_work, args.profile, label, profiles) if profiled else None
        if profiler:
            profiler.start()
        options = (*options, *servers)
        result = cdcfast(kind, "--schema", schema, "--work", str(bench_work), "--sync-ms", str(args.sync_ms), *options)
        if profiler:
            profiler.join(args.profile + 30)
            result["profile"] = profiler.summary()
        results[label] = result
        save()
        pipe = result["pipeline"]
        say(
            f"{label}: {pipe.get('events_per_s')} events/s ({result.get('ratio_to_baseline')}x the single process "
            f"{result['baseline']['events_per_s']}), CPU {pipe['cpu_seconds']}, servers {pipe['server_cpu_seconds']}, "
            f"others {pipe['others_cpu_seconds']} s"
        )
        for name, sink in pipe["sinks"].items():
            say(f"  {name}: {sink['events_per_s']} events/s, latency {sink['latency']}")
        return result

    if "null" not in args.skip:
        whole = segments if not args.null_segments else slice_of(segments, args.null_segments, work / "null-slice")
        first = run_bench("null", "pipeline", "--segments", str(whole))
        if "paced" not in args.skip:
            run_bench("null_goal_rate", "pipeline", "--segments", str(whole), "--rate", str(args.rate))
            half = round((first["pipeline"].get("events_per_s") or 2000) / 2)
            part = slice_of(segments, args.paced_segments, work / "paced-slice")
            run_bench("null_half_rate", "pipeline", "--segments", str(part), "--rate", str(half))

    dsns = ensure_services(["postgres", "timescaledb", "clickhouse"])
    databases = Databases("bp_")
    part = slice_of(segments, args.e2e_segments, work / "slice")
    if "e2e" not in args.skip:
        sinks = fresh_sinks(dsns, databases)
        options = [a for dsn in sinks.values() for a in ("--sink", dsn)]
        first = run_bench("e2e_all_sinks", "e2e", "--segments", str(part), *options)
        if "paced" not in args.skip:
            half = round((first["pipeline"].get("events_per_s") or 1000) / 2)
            sinks = fresh_sinks(dsns, databases)
            options = [a for dsn in sinks.values() for a in ("--sink", dsn)]
            run_bench("e2e_all_sinks_half_rate", "e2e", "--segments", str(part), *options, "--rate", str(half))
    if "solo" not in args.skip:
        for name in ("postgresql", "timescaledb", "clickhouse"):
            sinks = fresh_sinks(dsns, databases)
            run_bench(f"e2e_{name}", "e2e", "--segments", str(part), "--sink", sinks[name])
    databases.drop_all()
    results["machine_after"] = machine()
    save()
    say(f"results: {args.out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
