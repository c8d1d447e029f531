"""Criterion 1 of the reader: every corpus decodes exactly as Cassandra's own reader decodes it."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import USER_KEYSPACES, Corpus


def run_inspect(schema: Path, *paths: Path) -> list[dict]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdcfast.cli",
            "inspect",
            "--format",
            "reference",
            "--schema",
            str(schema),
            *map(str, paths),
        ],
        capture_output=True,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def readable_diff(mine: list[dict], reference: list[dict], context: int = 2) -> str:
    """The first difference, as a unified diff of pretty-printed lines around it."""
    index = next((i for i, (a, b) in enumerate(zip(mine, reference)) if a != b), min(len(mine), len(reference)))
    lo = max(0, index - context)
    pretty = lambda lines: json.dumps(lines[lo : index + context], indent=1, sort_keys=True).splitlines()  # noqa: E731
    diff = difflib.unified_diff(pretty(reference), pretty(mine), "cassandra", "cdcfast", lineterm="", n=6)
    return (
        f"first difference at partition update {index} (cdcfast has {len(mine)}, Cassandra {len(reference)}):\n"
        + "\n".join(list(diff)[:200])
    )


def test_inspect_equals_cassandra_reader(corpus: Corpus) -> None:
    mine = [line for line in run_inspect(corpus.schema_dir, corpus.cdc_raw) if line["keyspace"] in USER_KEYSPACES]
    reference = corpus.reference_lines()
    assert mine == reference, readable_diff(mine, reference)


def test_counts_match_reference_summary(corpus: Corpus) -> None:
    lines = run_inspect(corpus.schema_dir, corpus.cdc_raw)
    counts: Counter = Counter()
    for line in lines:
        table = f"{line['keyspace']}.{line['table']}"
        counts[table, "partition_updates"] += 1
        for row in line["rows"]:  # the summary counts neither the static row nor its cells
            if row["kind"] == "row":
                counts[table, "rows"] += 1
                counts[table, "cells"] += sum(1 for cell in row["cells"] if "type" in cell)
            else:
                counts[table, "rt_markers"] += 1
    summary = corpus.summary()["tables"]
    for table, expected in summary.items():
        if table.split(".")[0] not in USER_KEYSPACES:
            continue
        got = {key: counts[table, key] for key in expected}
        assert got == expected, f"{corpus.name} {table}: {got} != {expected}"


def assemble_snapshot(corpus: Corpus, label: str, target: Path) -> Path:
    """A cdc_raw folder as a tailing reader saw it: the snapshot's idx files, its copies of the
    segments still being written, and the final copies of segments already COMPLETED."""
    state = corpus.snapshots / label
    target.mkdir(parents=True)
    for idx in state.glob("*.idx"):
        shutil.copy(idx, target / idx.name)
        log = idx.name.replace("_cdc.idx", ".log").replace("-CDC.idx", ".log")
        source = state / log if (state / log).exists() else corpus.cdc_raw / log
        os.symlink(source, target / log)
    return target


def test_every_snapshot_decodes_to_a_prefix(corpus: Corpus, tmp_path: Path) -> None:
    full = run_inspect(corpus.schema_dir, corpus.cdc_raw)
    labels = sorted(p.name for p in corpus.snapshots.iterdir())
    assert labels, "corpus has no snapshots"
    sizes = []
    for label in labels:
        folder = assemble_snapshot(corpus, label, tmp_path / label)
        partial = run_inspect(corpus.schema_dir, folder)
        assert partial, f"{label}: nothing decoded"
        assert partial == full[: len(partial)], f"{label}:\n" + readable_diff(partial, full[: len(partial)])
        idx_offsets = {int(p.name.split("-")[2].split("_")[0]): p.read_text().split("\n") for p in folder.glob("*.idx")}
        for line in partial:
            offset, *completed = idx_offsets[line["segment"]]
            if not completed:
                assert line["position"] <= int(offset), f"{label}: decoded past the durable offset"
        sizes.append(len(partial))
    assert len(set(sizes)) > 1, "snapshots should show the stream growing"
