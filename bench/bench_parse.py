"""Parse speed against Cassandra's own reader, on the same segments, in the same run.

    python bench/bench_parse.py [--rounds 15] [--corpus NAME ...] [--out bench/results/parse.json]

For each corpus: Cassandra's CommitLogReader (../shared/java-reader/run.sh bench: its best warmed
round), then ``cdcfast bench parse`` (full decode into columnar records, one core) and
``cdcfast bench parse --framing-only`` (sync markers, entry framing and both CRCs). Prints each,
and the ratio of mutations/s, which is the figure the targets are set on (full decode >= 3x;
framing+CRC >= 2 GB/s).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def java_bench(schema_archive: Path, segments: Path, rounds: int) -> dict:
    run = subprocess.run(
        ["bash", str(SHARED / "java-reader" / "run.sh"), "bench", str(schema_archive), str(segments), str(rounds)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [dict(re.findall(r"(\w+)=([\d.]+)", line)) for line in run.stdout.splitlines() if line.startswith("round=")]
    warmed = rows[len(rows) // 3 :] or rows  # the JIT needs the first rounds
    best = min(warmed, key=lambda r: float(r["seconds"]))
    return {
        "mutations": int(best["mutations"]),
        "bytes": int(best["bytes"]),
        "best_seconds": float(best["seconds"]),
        "mutations_per_s": float(best["mutations_per_s"]),
        "mb_per_s": float(best["MB_per_s"]),
    }


def cdcfast_bench(schema: Path, segments: Path, rounds: int, *extra: str) -> dict:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdcfast.cli",
            "bench",
            "parse",
            "--schema",
            str(schema),
            str(segments),
            "--rounds",
            str(rounds),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--corpus", action="append", help="corpus names (default: all in ../shared/corpus)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "parse.json")
    args = parser.parse_args()
    names = args.corpus or sorted(p.name for p in (SHARED / "corpus").iterdir() if p.is_dir())
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}}
    for name in names:
        corpus = SHARED / "corpus" / name
        with tempfile.TemporaryDirectory() as scratch:
            with tarfile.open(corpus / "cdc_raw.tar.gz") as tar:
                tar.extractall(scratch, filter="data")
            segments = Path(scratch) / "cdc_raw"
            java = java_bench(corpus / "system_schema.tar.gz", segments, args.rounds)
            full = cdcfast_bench(corpus / "schema", segments, args.rounds)
            framing = cdcfast_bench(corpus / "schema", segments, args.rounds, "--framing-only")
        ratio = full["mutations_per_s"] / java["mutations_per_s"]
        results[name] = {
            "cassandra_reader": java,
            "cdcfast_decode": full,
            "cdcfast_framing_crc": framing,
            "decode_ratio": round(ratio, 2),
        }
        print(
            f"{name}: Cassandra reader {java['mutations_per_s']:,.0f} mutations/s ({java['mb_per_s']} MB/s) | "
            f"cdcfast decode {full['mutations_per_s']:,.0f} mutations/s ({full['mb_per_s']} MB/s) = {ratio:.2f}x | "
            f"framing+CRC {framing['mb_per_s']:,.0f} MB/s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
