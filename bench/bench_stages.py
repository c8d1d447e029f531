"""Where a change event's CPU goes on its way through the pipeline, stage by stage, on one core.

    python bench/bench_stages.py --segments DIR [--count 4] [--schema ../shared/corpus/c50-v8-lz4/schema]

On the first ``--count`` segments of DIR (``cdcfast generate`` output), in one process, each stage
timed on its own in CPU seconds (``time.process_time``), per event:

* ``decode``: the Cython decoder, segments -> columnar batches (``CommitLogReader``);
* ``events``: ``events_from_batch`` (a Python ChangeEvent per change, its content id included);
  ``content_id`` alone, computed again over the same events, says how much of that is the id;
* ``cdc_filter``: keeping the CDC tables' events (the parser's ``_is_cdc``);
* ``encode`` / ``decode_msgpack``: an EventBatch of 5000 events to msgpack and back (the rings;
  every writer decodes every batch);
* ``null_apply``: the null sink's bookkeeping (no fsync).

Run twice, in fresh processes: with Python's cyclic garbage collector as the pipeline runs it, and
with it disabled (``gc.disable()``), which shows what the collector costs while millions of event
objects are alive. Prints a table and writes ``bench/results/stages.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cdcfast.commitlog import CommitLogReader, discover, load_schema  # noqa: E402
from cdcfast.events import content_id, events_from_batch  # noqa: E402
from cdcfast.sinks.null import NullSink  # noqa: E402
from cdcfast.supervisor.messages import BATCH_DECODER, BATCH_ENCODER, EventBatch  # noqa: E402
from cdcfast.supervisor.parser import split_at_mutations  # noqa: E402


def stages(schema_path: str, folder: Path, count: int, collect: bool, scratch: Path) -> dict:
    if not collect:
        gc.disable()
    schema = load_schema(schema_path)
    cdc = {(t.keyspace, t.name) for t in schema.cdc_tables()}
    cpu = dict.fromkeys(("decode", "events", "content_id", "cdc_filter", "encode", "decode_msgpack", "null_apply"), 0.0)
    sink = NullSink(f"null://{scratch}?fsync=0")
    asyncio.run(sink.connect())
    events_total = 0
    for segment in discover([folder])[:count]:
        reader = CommitLogReader(schema)
        c0 = time.process_time()
        batches = list(reader.read_segment(segment))
        c1 = time.process_time()
        events = [e for b in batches for e in events_from_batch(b)]
        c2 = time.process_time()
        for e in events:
            content_id(e)
        c3 = time.process_time()
        events = [e for e in events if (e.keyspace, e.table) in cdc]
        c4 = time.process_time()
        messages = [
            BATCH_ENCODER.encode(EventBatch(0, n, False, segment.segment_id, 0, part))
            for n, part in enumerate(split_at_mutations(events, 5000))
        ]
        c5 = time.process_time()
        decoded = [BATCH_DECODER.decode(m) for m in messages]
        c6 = time.process_time()
        for batch in decoded:
            asyncio.run(sink.apply(batch.events, {}, "stages", (segment.segment_id, batch.events[-1].position)))
        c7 = time.process_time()
        for name, seconds in zip(cpu, (c1 - c0, c2 - c1, c3 - c2, c4 - c3, c5 - c4, c6 - c5, c7 - c6)):
            cpu[name] += seconds
        events_total += len(events)
        del batches, events, messages, decoded
    return {"events": events_total, "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=Path, required=True)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--schema", default=str(REPO.parent / "shared" / "corpus" / "c50-v8-lz4" / "schema"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "stages.json")
    parser.add_argument("--child", choices=("gc", "nogc"), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/cdcfast-stages"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(stages(args.schema, args.segments, args.count, args.child == "gc", args.scratch)))
        return 0
    results = {}
    for mode in ("gc", "nogc"):
        command = [sys.executable, __file__, "--segments", str(args.segments), "--count", str(args.count)]
        command += ["--schema", args.schema, "--child", mode, "--scratch", str(args.scratch / mode)]
        results[mode] = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    events = results["gc"]["events"]
    print(f"{events:,} events; CPU microseconds per event (one core)")
    print(f"{'stage':<16}{'gc on':>10}{'gc off':>10}")
    for stage in results["gc"]["cpu_seconds"]:
        on = results["gc"]["cpu_seconds"][stage] / events * 1e6
        off = results["nogc"]["cpu_seconds"][stage] / events * 1e6
        print(f"{stage:<16}{on:>10.2f}{off:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"segments": str(args.segments), "count": args.count, **results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
