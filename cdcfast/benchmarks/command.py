"""Command-line options of ``cdcfast bench pipeline`` and ``cdcfast bench e2e`` (kept here so that
``cdcfast/cli.py`` only registers them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from cdcfast.errors import ConfigError

HELP = {
    "pipeline": "the real multiprocess pipeline into the null sink, next to the single-process path",
    "e2e": "the real pipeline into the given sinks: events/s and latency until rows are visible",
}


def add_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--schema", required=True, help="schema NNN.json, a schema/ folder, or cassandra://host:port")
    if kind == "e2e":
        parser.add_argument(
            "--sink", action="append", required=True, help="postgresql://, timescaledb://, clickhouse:// or null://"
        )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--segments", help="a folder of finished segments (cdcfast generate's output) to replay")
    source.add_argument("--size", help="generate this many logical bytes for the run, e.g. 1GiB")
    source.add_argument("--events", type=int, help="generate this many change events for the run (default 200000)")
    parser.add_argument("--compression", choices=("none", "lz4", "snappy", "deflate", "zstd"), default="none")
    parser.add_argument("--version", type=int, choices=(7, 8), default=8, help="descriptor version when generating")
    parser.add_argument("--segment-size", help="segment size when generating (default 32MiB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rate", type=float, help="release this many events/s, one idx advance per --sync-ms (default: all at once)"
    )
    parser.add_argument("--sync-ms", type=int, default=2000, help="commit log sync period (default 2000)")
    parser.add_argument("--parsers", type=int, default=2, help="parser worker processes (default 2)")
    parser.add_argument("--batch-size", type=int, default=5000, help="events per batch (default 5000)")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="supervisor's cdc_raw scans (default 0.5 s)")
    parser.add_argument("--work", help="folder for the run's cdc_raw, state and generated input (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to deliver everything (default 3600)")
    if kind == "e2e":
        parser.add_argument("--no-count-rows", action="store_true", help="do not count change-log rows in the sinks")
    parser.add_argument(
        "--server", action="append", default=[], metavar="NAME=PID", help="a database server's pid: its CPU seconds too"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of text")
    parser.add_argument("--out", help="also write the results (JSON) to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    from cdcfast.benchmarks.pipeline import BenchSettings, render, run_bench
    from cdcfast.config import size_option as size

    kind = args.bench_kind
    events = args.events
    if args.segments is None and args.size is None and events is None:
        events = 200_000
    settings = BenchSettings(
        kind=kind,
        schema=args.schema,
        sinks=list(args.sink) if kind == "e2e" else ["null://"],
        segments=Path(args.segments) if args.segments else None,
        size=size("--size", args.size),
        events=events,
        compression=args.compression,
        version=args.version,
        segment_size=size("--segment-size", args.segment_size) or 32 * 1024 * 1024,
        seed=args.seed,
        rate=args.rate,
        sync_ms=args.sync_ms,
        parsers=args.parsers,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
        work=Path(args.work) if args.work else None,
        keep=args.keep,
        timeout=args.timeout,
        count_rows=not getattr(args, "no_count_rows", False),
        progress=None if args.quiet else sys.stderr,
    )
    for server in args.server:
        name, _, pid = server.partition("=")
        if not pid.isdigit():
            raise ConfigError(f"--server {server!r}: expected NAME=PID")
        settings.servers[name] = int(pid)
    result = run_bench(settings)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text if args.json else render(result))
    return 0 if result["complete"] else 1
