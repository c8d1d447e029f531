"""The ``cdcfast`` command line."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.errors import CdcfastError, ConfigError


@contextlib.contextmanager
def segment_paths(paths: Sequence[str]) -> Iterator[list[Path]]:
    """The given files and folders; ``.tar.gz`` archives (like a corpus' cdc_raw) are unpacked."""
    with tempfile.TemporaryDirectory(prefix="cdcfast-") as scratch:
        out: list[Path] = []
        for i, raw in enumerate(paths):
            path = Path(raw)
            if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
                target = Path(scratch) / str(i)
                target.mkdir()
                with tarfile.open(path) as archive:
                    archive.extractall(target, filter="data")
                folders = sorted({p.parent for p in target.rglob("CommitLog-*.log")})
                out.extend(folders or [target])
            else:
                out.append(path)
        yield out


def _add_reader_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", required=True, help="schema NNN.json, a schema/ folder, or cassandra://host:port")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="segment files, folders or .tar.gz archives")
    parser.add_argument(
        "--on-error",
        choices=("skip", "stop"),
        default="skip",
        help="damaged data: skip it and report (default) or stop at the first problem",
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    from cdcfast.commitlog.reference import reference_lines

    schema = load_schema(args.schema)
    reader = CommitLogReader(schema, policy=args.on_error)
    out = sys.stdout.buffer
    with segment_paths(args.paths) as paths:
        for batch in reader.read_paths(paths):
            if args.format == "reference":
                for line in reference_lines(batch):
                    out.write(orjson.dumps(line) + b"\n")
            else:
                from cdcfast.commitlog.readable import readable_lines

                for text in readable_lines(batch):
                    out.write(text.encode() + b"\n")
    out.flush()
    _report_issues(reader)
    return 0


def _report_issues(reader: CommitLogReader) -> None:
    stats = reader.stats
    shown = [i for i in reader.issues if i.kind != "unknown_table"]
    for issue in shown[:50]:
        print(f"cdcfast: skipped {issue}", file=sys.stderr)
    if len(shown) > 50:
        print(f"cdcfast: ... and {len(shown) - 50} more problems", file=sys.stderr)
    for table_id, count in sorted(stats.unknown_tables.items()):
        print(f"cdcfast: {count} mutation(s) of table id {table_id} skipped: not in the schema", file=sys.stderr)


def cmd_bench_parse(args: argparse.Namespace) -> int:
    schema = load_schema(args.schema)
    best = float("inf")
    with segment_paths(args.paths) as paths:
        # One reader for all rounds, as in a running pipeline: its buffers are warm after round 0.
        reader = CommitLogReader(schema, batch_mutations=8192)
        reader.decoder.verify_only = args.framing_only
        for round_no in range(args.rounds):
            reader.decoder.mutation_count = reader.decoder.mutation_bytes = 0
            start = time.perf_counter()
            decoded = 0
            for batch in reader.read_paths(paths):
                decoded += batch.mutation_count
            seconds = time.perf_counter() - start
            best = min(best, seconds)
            mutations = reader.decoder.mutation_count if args.framing_only else decoded
            size = reader.decoder.mutation_bytes
            print(
                f"round={round_no} seconds={seconds:.4f} mutations={mutations} bytes={size} "
                f"mutations_per_s={mutations / seconds:.0f} MB_per_s={size / seconds / 1e6:.1f}",
                file=sys.stderr,
            )
    result = {
        "mutations": mutations,
        "bytes": size,
        "best_seconds": round(best, 6),
        "mutations_per_s": round(mutations / best),
        "mb_per_s": round(size / best / 1e6, 1),
    }
    print(orjson.dumps(result).decode())
    return 0


PIPELINE_OPTIONS = (
    "cdc_raw", "schema", "sink", "state_dir", "node", "masking_rules", "metrics_addr", "poll_interval",
    "cdc_total_space", "on_error",
)  # what a config file says instead


def pipeline_config(args: argparse.Namespace) -> Any:
    """The pipeline from ``--config FILE``, or from the options; never both (the file would win silently)."""
    from cdcfast.config import load_config

    if not args.config:
        return config_from_args(args)
    given = [name for name in PIPELINE_OPTIONS if getattr(args, name, None) is not None]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"{options}: set in the file given with --config instead (or drop --config)")
    return load_config(args.config)


def config_from_args(args: argparse.Namespace) -> Any:
    """A PipelineConfig from the command line, for running without writing a config file."""
    import socket

    from cdcfast import config as cfg
    from cdcfast.sinks import sink_kind

    if not (args.cdc_raw and args.schema and args.sink):
        raise ConfigError("supervise: give --config FILE, or --cdc-raw DIR --schema SCHEMA --sink DSN [--sink DSN ...]")
    sinks: list[Any] = []
    names: dict[str, int] = {}
    for dsn in args.sink:
        kind = sink_kind(dsn)
        names[kind] = names.get(kind, 0) + 1
        name = kind if names[kind] == 1 else f"{kind}-{names[kind]}"
        if kind == "timescaledb" and dsn.startswith("timescaledb://"):
            dsn = "postgresql://" + dsn[len("timescaledb://") :]
        sink_type = {"postgresql": cfg.PostgresSink, "timescaledb": cfg.TimescaleSink, "clickhouse": cfg.ClickHouseSink}
        sink_type["null"] = cfg.NullSink
        sinks.append(sink_type[kind](name=name, dsn=dsn))
    cdc_raw = str(Path(args.cdc_raw).resolve())
    source = cfg.SourceConfig(
        node=args.node or f"{socket.gethostname()}:{cdc_raw}",
        cdc_raw=cdc_raw,
        schema=args.schema,
        poll_interval=cfg.Seconds(args.poll_interval if args.poll_interval is not None else 0.5),
        on_error=args.on_error or "skip",
        cdc_total_space=cfg.size_option("--cdc-total-space", args.cdc_total_space),
    )
    state_dir = args.state_dir or str(Path(cdc_raw).parent / "cdcfast-state")
    return cfg.PipelineConfig(
        sources=[source],
        sinks=[cfg.with_null_folder(sink, state_dir) for sink in sinks],
        state_dir=state_dir,
        masking=cfg.MaskingConfig(rules=args.masking_rules) if args.masking_rules else None,
        metrics_addr=args.metrics_addr or cfg.DEFAULT_METRICS_ADDR,
    )


def cmd_supervise(args: argparse.Namespace) -> int:
    from cdcfast.log import configure
    from cdcfast.supervisor.supervisor import Supervisor

    configure(level=args.log_level)
    config = pipeline_config(args)
    check_startup(config)
    return Supervisor(config, until_idle=args.until_idle).run()


def check_startup(config: Any) -> None:
    """What would make every worker fail: refuse to start, with the reason, instead of a restart loop.
    The schema must load; masking rules must match it and their secrets must be there."""
    schema = load_schema(config.sources[0].schema)
    if config.masking is not None:
        from cdcfast.transform.masking import Masker, MaskingRules, MaskingSecrets

        Masker(MaskingRules.load(config.masking.rules, schema), MaskingSecrets.from_env())


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from cdcfast.status import collect, render

    config = pipeline_config(args)
    status = asyncio.run(collect(config))
    print(orjson.dumps(status).decode() if args.json else render(status))
    return 0


def _dlq_sink(args: argparse.Namespace) -> Any:
    from cdcfast.sinks import open_sink, sink_kind

    kind = sink_kind(args.sink)
    return open_sink(kind, args.sink, args.sink_name or kind)


async def _dlq(args: argparse.Namespace) -> int:
    import uuid

    from cdcfast.sinks import connect_within
    from cdcfast.sinks.poison import EVENT_DECODER, replay_dead_letters

    sink = _dlq_sink(args)
    await connect_within(sink)
    try:
        letters = await sink.dead_letters()
        if args.dlq_command == "list":
            rows = [
                {
                    "event_id": str(d["event_id"]),
                    "table": f"{d['keyspace']}.{d['table']}",
                    "segment": d["segment_id"],
                    "position": d["position"],
                    "reason": d["reason"],
                    "replayed": d["replayed_at"] is not None,
                }
                for d in letters
            ]
            if args.json:
                print(orjson.dumps(rows).decode())
            else:
                for r in rows:
                    state = "replayed" if r["replayed"] else "waiting"
                    print(f"{r['event_id']}  {r['table']}  {r['segment']}:{r['position']}  {state}  {r['reason']}")
                print(f"{len(rows)} dead letter(s) in sink {sink.name}")
            return 0
        if args.dlq_command == "show":
            wanted = uuid.UUID(args.event_id)
            for d in letters:
                if d["event_id"] == wanted:
                    event = EVENT_DECODER.decode(d["event"])
                    detail = {k: v for k, v in d.items() if k != "event"}
                    print(orjson.dumps({**detail, "event": event}, default=str, option=orjson.OPT_INDENT_2).decode())
                    return 0
            print(f"cdcfast: no dead letter {args.event_id} in sink {sink.name}", file=sys.stderr)
            return 1
        # replay: apply again what was never replayed; what still cannot be stored stays
        schema = load_schema(args.schema)
        report = await replay_dead_letters(sink, {(t.keyspace, t.name): t for t in schema.tables.values()})
        for event, reason in report.skipped:
            print(f"skipped {uuid.UUID(bytes=event.event_id)}  {event.qualified_table}  "
                  f"{event.segment_id}:{event.position}  {reason}")  # fmt: skip
        print(
            f"replayed {len(report.replayed)} of {report.waiting} dead letter(s); "
            f"{len(report.skipped)} skipped (truncated since); {report.unstorable} still cannot be stored"
        )
        return 0
    finally:
        await sink.close()


def cmd_dlq(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_dlq(args))


def cmd_generate(args: argparse.Namespace) -> int:
    from cdcfast.config import size_option as size
    from cdcfast.generate.run import GenerateSettings, generate
    from cdcfast.generate.workload import DEFAULT_MIX, WorkloadSpec, parse_mix

    spec = WorkloadSpec(
        mix=parse_mix(args.mix) if args.mix else dict(DEFAULT_MIX),
        row_size=size("--row-size", args.row_size),
        seed=args.seed,
        keyspaces=tuple(args.keyspace or ()),
        tables=tuple(args.table or ()),
        templates=args.templates,
    )
    settings = GenerateSettings(
        schema=args.schema,
        out=Path(args.out),
        spec=spec,
        size=size("--size", args.size),
        events=args.events,
        version=args.version,
        compression=args.compression,
        segment_size=size("--segment-size", args.segment_size) or 32 * 1024 * 1024,
        rate=args.rate,
        sync_ms=args.sync_ms,
        start=args.start,
        leave_open=args.leave_open,
        progress=not args.quiet,
    )
    manifest = generate(settings)
    totals = manifest["totals"]
    print(
        f"{totals['events']} events in {totals['mutations']} mutations, {totals['segments']} segment(s), "
        f"{totals['logical_bytes'] / 1e6:.1f} MB in {manifest['run']['seconds']} s "
        f"({manifest['run']['mb_per_s']} MB/s): {Path(args.out) / 'generated.json'}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cdcfast.demo.run import DemoSettings, run_demo

    settings = DemoSettings(
        seconds=args.seconds,
        rate=args.rate,
        schema=args.schema,
        masking_rules=args.masking_rules,
        sinks=list(args.sink or []),
        keep=args.keep,
    )
    return run_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdcfast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="decode segments and print every partition update")
    _add_reader_options(inspect)
    inspect.add_argument(
        "--format",
        choices=("text", "reference"),
        default="text",
        help="text: a readable view (default); reference: the corpora's reference-decoding JSON lines",
    )
    inspect.set_defaults(func=cmd_inspect)

    bench = commands.add_parser("bench", help="measure cdcfast on your hardware")
    bench_kinds = bench.add_subparsers(dest="bench_kind", required=True)
    parse = bench_kinds.add_parser("parse", help="decode segments on one core, N rounds; prints JSON last")
    _add_reader_options(parse)
    parse.add_argument("--rounds", type=int, default=5)
    parse.add_argument("--framing-only", action="store_true", help="framing and CRCs only, no mutation decoding")
    parse.set_defaults(func=cmd_bench_parse)
    from cdcfast.benchmarks import command as bench_command

    for kind, text in bench_command.HELP.items():
        sub = bench_kinds.add_parser(kind, help=text)
        bench_command.add_arguments(sub, kind)
        sub.set_defaults(func=bench_command.run)

    supervise = commands.add_parser("supervise", help="run the pipeline: cdc_raw -> every sink, exactly once")
    supervise.add_argument("--config", help="pipeline YAML (config/pipeline.example.yaml); or the options below")
    supervise.add_argument("--cdc-raw", help="the node's cdc_raw directory")
    supervise.add_argument("--schema", help="schema NNN.json, a schema/ folder, or cassandra://host:port")
    supervise.add_argument(
        "--sink",
        action="append",
        help="postgresql://..., timescaledb://..., clickhouse://... or null:// (checkpoint only) (repeatable)",
    )
    supervise.add_argument("--state-dir", help="local state (default: beside cdc_raw)")
    supervise.add_argument("--node", help="this node's name in checkpoints (default: host:cdc_raw path)")
    supervise.add_argument(
        "--masking-rules", help="masking rules YAML; secrets from CDCFAST_PII_SALT / CDCFAST_PHI_KEY"
    )
    supervise.add_argument("--metrics-addr", help="HOST:PORT for /metrics, /health, /ready (default 127.0.0.1:9464)")
    supervise.add_argument("--poll-interval", type=float, help="longest wait between cdc_raw scans (default 0.5)")
    supervise.add_argument(
        "--cdc-total-space", help="the node's cdc_total_space (e.g. 4GiB): cdcfast warns at 80%% (default: Cassandra's)"
    )
    supervise.add_argument("--on-error", choices=("skip", "stop"), help="damaged input: skip it (default) or stop")
    supervise.add_argument("--until-idle", action="store_true", help="deliver everything durable, then exit 0")
    supervise.add_argument("--log-level", default="INFO")
    supervise.set_defaults(func=cmd_supervise)

    status = commands.add_parser("status", help="checkpoints, lag, dead letters and processes, on one screen")
    for option in ("--config", "--cdc-raw", "--schema", "--state-dir", "--node", "--masking-rules", "--metrics-addr"):
        status.add_argument(option)
    status.add_argument("--sink", action="append")
    status.add_argument("--poll-interval", type=float)
    status.add_argument("--cdc-total-space")
    status.add_argument("--on-error")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(func=cmd_status)

    dlq = commands.add_parser("dlq", help="dead letters: changes a sink could not store")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, text in (("list", "list them"), ("show", "show one, with its event"), ("replay", "apply them again")):
        sub = dlq_commands.add_parser(name, help=text)
        sub.add_argument("--sink", required=True, help="the sink's DSN")
        sub.add_argument("--sink-name", help="the sink's name in checkpoints (default: its kind)")
        if name == "list":
            sub.add_argument("--json", action="store_true")
        if name == "show":
            sub.add_argument("event_id")
        if name == "replay":
            sub.add_argument("--schema", required=True, help="schema NNN.json, a schema/ folder, or cassandra://")
        sub.set_defaults(func=cmd_dlq)

    gen = commands.add_parser("generate", help="write a realistic CDC workload as commit log segments")
    gen.add_argument("--schema", required=True, help="schema NNN.json, a schema/ folder, or cassandra://host:port")
    gen.add_argument("--out", required=True, help="the folder to write (a cdc_raw)")
    target = gen.add_mutually_exclusive_group()
    target.add_argument("--size", help="logical commit log bytes to write, e.g. 1GiB")
    target.add_argument("--events", type=int, help="change events to write (default 10000 without --size/--rate)")
    gen.add_argument("--mix", help="operation weights, e.g. insert=60,update=25,delete=10 (see README)")
    gen.add_argument("--row-size", help="pad inserted rows (text/blob columns) to about this many bytes")
    gen.add_argument("--version", type=int, choices=(7, 8), default=8, help="descriptor version (default 8)")
    gen.add_argument("--compression", choices=("none", "lz4", "snappy", "deflate", "zstd"), default="none")
    gen.add_argument("--segment-size", help="commitlog_segment_size (default 32MiB)")
    gen.add_argument("--rate", type=float, help="events per second on the wall clock: a live-looking stream")
    gen.add_argument("--sync-ms", type=int, default=2000, help="commit log sync period: one section each")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--start", default="2026-01-01T00:00:00Z", help="first write timestamp (batch), or 'now'")
    gen.add_argument("--keyspace", action="append", help="only this keyspace's CDC tables (repeatable)")
    gen.add_argument("--table", action="append", help="only this table, TABLE or KS.TABLE (repeatable)")
    gen.add_argument("--leave-open", action="store_true", help="leave the last segment open (idx offset only)")
    gen.add_argument("--templates", type=int, default=256, help="byte templates per table and operation")
    gen.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    gen.set_defaults(func=cmd_generate)

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on a generated live workload, into servers it starts (and stops) itself",
        description="Generates live commit log segments, replicates them with cdcfast supervise into a private "
        "PostgreSQL (TimescaleDB and ClickHouse when installed) with progress every second, then shows a summary, "
        "rows from each warehouse and how to query them. The first Ctrl-C ends the stream early; a second stops.",
    )
    demo.add_argument("--seconds", type=float, default=30.0, help="length of the live stream (default 30)")
    demo.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    demo.add_argument("--schema", help="schema NNN.json or folder (default: the demo schema in cdcfast/demo/)")
    demo.add_argument("--masking-rules", help="masking rules (default: cdcfast/demo/masking.yaml with the demo schema)")
    demo.add_argument("--sink", action="append", help="use this running server instead (repeatable): a supervise DSN")
    demo.add_argument("--keep", action="store_true", help="leave the servers running; print how to query and stop them")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CdcfastError as exc:
        print(f"cdcfast: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
