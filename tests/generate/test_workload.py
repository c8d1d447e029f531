"""``cdcfast generate`` (issue 7): workloads written as commit log segments that cdcfast reads back.

What is checked is what a reader sees, never the generator's own view of itself: segments are
decoded with cdcfast's reader (zero issues), the change events it makes of them are counted per
table and operation and compared with the manifest, and the manifest with what was asked (event
count, size, mix). Values are decoded with cdcfast's codecs to show they are valid for their CQL
type; the ``types`` keyspace of each corpus shows every CQL type it uses gets values. Cassandra's
own reader is the judge of the bytes in ``test_java_roundtrip.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT, REPO, corpus_names
from hypothesis import given
from hypothesis import strategies as st

from cdcfast.commitlog import CommitLogReader, Schema, load_schema
from cdcfast.commitlog.batch import Batch
from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.segment import discover, open_segment, read_cdc_index, read_descriptor
from cdcfast.errors import ConfigError
from cdcfast.events import SET, TOMBSTONE, ChangeEvent, events_from_batch
from cdcfast.generate.run import GenerateSettings, generate
from cdcfast.generate.segments import SegmentStream
from cdcfast.generate.workload import Workload, WorkloadSpec, fast_uvint, parse_mix
from cdcfast.values import decode, decode_cell_path, decode_cell_value
from cdcfast.values.vint import encode_uvint

CORPORA = corpus_names()
pytestmark = pytest.mark.skipif(not CORPORA, reason="no corpora")
MAIN = "c50-v8-lz4" if "c50-v8-lz4" in CORPORA else (CORPORA[0] if CORPORA else "")


def schema_dir(name: str = MAIN) -> Path:
    return CORPUS_ROOT / name / "schema"


def run(out: Path, name: str = MAIN, spec: WorkloadSpec | None = None, **settings: object) -> dict:
    options: dict = {"segment_size": 512 * 1024, "sync_ms": 300, "progress": False, **settings}
    return generate(GenerateSettings(str(schema_dir(name)), out, spec or WorkloadSpec(seed=7), **options))


def read_all(schema: Schema, out: Path) -> tuple[CommitLogReader, list[Batch]]:
    reader = CommitLogReader(schema)
    return reader, list(reader.read_paths([out]))


def events(batches: list[Batch]) -> Iterator[ChangeEvent]:
    for batch in batches:
        yield from events_from_batch(batch)


def decoded_counts(name: str, out: Path) -> tuple[dict[str, Counter], int]:
    """Change events per table and operation, and mutations, as cdcfast reads ``out``."""
    reader, batches = read_all(load_schema(schema_dir(name)), out)
    assert reader.issues == [], reader.issues[:5]
    assert not reader.stats.unknown_tables
    per_table: dict[str, Counter] = {}
    for event in events(batches):
        per_table.setdefault(event.qualified_table, Counter())[event.op] += 1
    return per_table, sum(b.mutation_count for b in batches)


def manifest_counts(manifest: dict) -> dict[str, Counter]:
    return {name: Counter(t["event_ops"]) for name, t in manifest["tables"].items()}


# -- decoding -----------------------------------------------------------------------------------

FORMATS = [(7, "none"), (8, "none"), (7, "lz4"), (8, "snappy"), (7, "deflate"), (8, "zstd")]


@pytest.mark.parametrize(("version", "compression"), FORMATS, ids=[f"v{v}-{c}" for v, c in FORMATS])
def test_segments_decode_with_zero_issues_and_the_events_the_manifest_claims(
    tmp_path: Path, version: int, compression: str
) -> None:
    # few templates: most mutations come from byte templates, some are built fresh
    manifest = run(
        tmp_path, spec=WorkloadSpec(seed=version, templates=8), events=3000, version=version, compression=compression
    )
    per_table, mutations = decoded_counts(MAIN, tmp_path)
    assert sum(sum(c.values()) for c in per_table.values()) == 3000 == manifest["totals"]["events"]
    assert per_table == manifest_counts(manifest)
    assert mutations == manifest["totals"]["mutations"]
    assert manifest["run"]["templated_mutations"] > 1000  # the template path was exercised

    segments = discover([tmp_path])
    assert len(segments) == manifest["totals"]["segments"] >= 2
    expected_class = {
        "none": None,
        "lz4": "LZ4Compressor",
        "snappy": "SnappyCompressor",
        "deflate": "DeflateCompressor",
        "zstd": "ZstdCompressor",
    }[compression]
    listed = {s["name"]: s for s in manifest["segments"]}
    for segment in segments:
        data = open_segment(segment.path)
        descriptor = read_descriptor(segment.path, data)
        assert (segment.version, descriptor.version, descriptor.compression) == (version, version, expected_class)
        assert descriptor.messaging_version == (13 if version == 8 else 12)
        idx = read_cdc_index(segment.idx_path) if segment.idx_path else None
        assert idx is not None and idx.completed
        assert idx.offset == listed[segment.path.name]["logical_bytes"]
        if compression == "none":
            assert len(data) == 512 * 1024  # pre-allocated, like a memory-mapped segment
        else:
            assert len(data) == listed[segment.path.name]["file_bytes"] < idx.offset  # logical offsets
    assert sum(s["logical_bytes"] for s in manifest["segments"]) == manifest["totals"]["logical_bytes"]


def test_several_sync_sections_per_segment_and_increasing_timestamps(tmp_path: Path) -> None:
    manifest = run(tmp_path, events=4000, segment_size=1024 * 1024)
    assert all(s["sections"] >= 3 for s in manifest["segments"][:-1]), manifest["segments"]
    _, batches = read_all(load_schema(schema_dir()), tmp_path)
    newest = [max(e.ts, e.deletion_ts or 0) for e in events(batches)]
    positions = [(e.segment_id, e.position) for e in events(batches)]
    assert positions == sorted(positions)
    # each mutation is written after the one before it: its newest timestamp is later
    by_mutation: dict[tuple[int, int], int] = {}
    for where, ts in zip(positions, newest):
        by_mutation[where] = max(by_mutation.get(where, 0), ts)
    stamps = [by_mutation[w] for w in sorted(by_mutation)]
    assert all(a < b for a, b in zip(stamps, stamps[1:]))


def test_every_event_is_distinct(tmp_path: Path) -> None:
    # a replay keyed on content ids must not collapse two generated changes into one
    run(tmp_path, spec=WorkloadSpec(seed=3, templates=4), events=5000)
    _, batches = read_all(load_schema(schema_dir()), tmp_path)
    ids = [e.event_id for e in events(batches)]
    assert len(ids) == 5000 == len(set(ids))


# -- what was asked -------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "templates"), [(1, 256), (2, 256), (17, 256), (999, 256), (999, 1), (2001, 2)])
def test_exactly_the_events_asked_for(tmp_path: Path, count: int, templates: int) -> None:
    # (with few templates, the last mutations come from templates chosen to fit the events left)
    manifest = run(tmp_path, events=count, spec=WorkloadSpec(seed=count, templates=templates))
    per_table, _ = decoded_counts(MAIN, tmp_path)
    assert sum(sum(c.values()) for c in per_table.values()) == count == manifest["totals"]["events"]
    assert per_table == manifest_counts(manifest)


def test_single_event_mutations_from_full_template_pools(tmp_path: Path) -> None:
    """Near the end of an --events run only one event may be left: templates of two events (an
    insert with static columns) are passed over for ones of one event, or a fresh build."""
    schema = load_schema(schema_dir())
    workload = Workload(schema, WorkloadSpec(seed=5, templates=2))
    ts = 1_767_225_600_000_000
    stream = SegmentStream(tmp_path, segment_size=4 * 1024 * 1024, first_id=1)
    claimed: dict[str, Counter] = {}
    for i in range(3000):
        ts += 1000
        made = workload.next(ts, ts // 1_000_000, max_events=1 if i >= 1000 else None)
        if i >= 1000:
            assert len(made.events) == 1
        stream.append(made.mutation, len(made.events))
        claimed.setdefault(made.table.qualified_name, Counter()).update(made.events)
    stream.close_segment()
    assert workload.reused > 2000
    per_table, mutations = decoded_counts(MAIN, tmp_path)
    assert mutations == 3000 and per_table == claimed


def test_the_mix_holds_over_the_run(tmp_path: Path) -> None:
    mix = "insert=50,update=20,collection=5,ttl=5,delete=10,partition_delete=4,range_delete=6"
    manifest = run(tmp_path, spec=WorkloadSpec(mix=parse_mix(mix), seed=11, templates=32), events=8000)
    asked = parse_mix(mix)
    done = manifest["operations"]
    total = sum(done.values())
    assert total == manifest["totals"]["mutations"]
    for operation, weight in asked.items():
        share = done.get(operation, 0) / total
        assert abs(share - weight / 100) < 0.02, (operation, share, weight)
    # and what the reader sees follows: range deletes are range_delete events, inserts insert rows
    per_table, _ = decoded_counts(MAIN, tmp_path)
    seen = sum(per_table.values(), Counter())
    assert seen["range_delete"] == done["range_delete"]
    assert seen["insert"] == done["insert"] + done["ttl"]


def test_operations_a_table_cannot_take_are_left_out(tmp_path: Path) -> None:
    # shop.users has no clustering columns (no range deletes) and no counters
    spec = WorkloadSpec(mix=parse_mix("insert=50,range_delete=50"), tables=("shop.users",), seed=1)
    manifest = run(tmp_path, spec=spec, events=300)
    assert manifest["settings"]["unsupported_operations"] == ["range_delete"]
    assert manifest["operations"] == {"insert": 300}
    per_table, _ = decoded_counts(MAIN, tmp_path)
    assert per_table == {"shop.users": Counter(insert=300)}


def test_keyspace_and_table_filters(tmp_path: Path) -> None:
    manifest = run(tmp_path / "a", spec=WorkloadSpec(keyspaces=("shop",), seed=2), events=800)
    per_table, _ = decoded_counts(MAIN, tmp_path / "a")
    # shop.sessions is not a CDC table: never written
    assert set(per_table) == set(manifest["tables"]) == {"shop.users", "shop.orders", "shop.page_views", "shop.returns"}
    run(tmp_path / "b", spec=WorkloadSpec(tables=("orders", "telemetry.readings"), seed=2), events=300)
    per_table, _ = decoded_counts(MAIN, tmp_path / "b")
    assert set(per_table) == {"shop.orders", "telemetry.readings"}
    with pytest.raises(ConfigError, match="no CDC table"):
        run(tmp_path / "c", spec=WorkloadSpec(tables=("sessions",)), events=10)


def test_size_target(tmp_path: Path) -> None:
    size = 3 * 1024 * 1024
    manifest = run(tmp_path, size=size, segment_size=1024 * 1024)
    logical = manifest["totals"]["logical_bytes"]
    assert size <= logical < size + 2 * 4096  # stops at the first mutation past the target
    indexes = [read_cdc_index(s.idx_path) for s in discover([tmp_path]) if s.idx_path]
    assert sum(i.offset or 0 for i in indexes) == logical
    assert 3 <= len(indexes) <= 5 and all(i.completed for i in indexes)
    assert all(i.offset is not None and i.offset <= 1024 * 1024 for i in indexes)


def test_row_size_pads_inserted_rows(tmp_path: Path) -> None:
    spec = WorkloadSpec(mix=parse_mix("insert=1"), row_size=3000, seed=4, templates=16)
    manifest = run(tmp_path, spec=spec, events=400)
    _, batches = read_all(load_schema(schema_dir()), tmp_path)
    sizes = [p[2] for batch in batches for p in batch.partitions.tolist()]
    assert len(sizes) == manifest["totals"]["mutations"] > 300  # (an insert with static columns: 2 events)
    # every table that takes inserts has a text or blob column to pad
    assert all(2900 <= s <= 3100 for s in sizes), sorted(sizes)[:5] + sorted(sizes)[-5:]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith("CommitLog-")}

    for name in ("a", "b"):
        run(tmp_path / name, spec=WorkloadSpec(seed=42, templates=16), events=2000, compression="lz4")
    run(tmp_path / "c", spec=WorkloadSpec(seed=43, templates=16), events=2000, compression="lz4")
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a").keys() == files(tmp_path / "c").keys()
    assert files(tmp_path / "a") != files(tmp_path / "c")


def test_leave_open_keeps_the_last_segment_open(tmp_path: Path) -> None:
    manifest = run(tmp_path, events=2500, leave_open=True)
    segments = discover([tmp_path])
    indexes = [read_cdc_index(s.idx_path) for s in segments if s.idx_path]
    assert [i.completed for i in indexes] == [True] * (len(indexes) - 1) + [False]
    assert indexes[-1].offset == manifest["segments"][-1]["logical_bytes"]
    per_table, _ = decoded_counts(MAIN, tmp_path)  # everything synced is durable
    assert per_table == manifest_counts(manifest)


def test_a_second_run_continues_after_the_segments_present(tmp_path: Path) -> None:
    first = run(tmp_path, events=500)
    second = run(tmp_path, events=500, spec=WorkloadSpec(seed=8))
    ids = [s["segment_id"] for s in first["segments"]] + [s["segment_id"] for s in second["segments"]]
    assert ids == sorted(set(ids))
    per_table, _ = decoded_counts(MAIN, tmp_path)
    assert sum(sum(c.values()) for c in per_table.values()) == 1000


# -- values ------------------------------------------------------------------------------------------


def type_nodes(ctype: CqlType) -> Iterator[CqlType]:
    yield ctype
    for param in ctype.params:
        yield from type_nodes(param)


def comparator_sorted(values: list, key=lambda v: v) -> bool:  # noqa: ANN001
    keys = [key(v) for v in values]
    return all(a < b for a, b in zip(keys, keys[1:]))


@pytest.mark.parametrize("name", CORPORA)
def test_every_cql_type_of_the_types_keyspace_gets_valid_values(tmp_path: Path, name: str) -> None:
    schema = load_schema(schema_dir(name))
    types_tables = [t for t in schema.cdc_tables() if t.keyspace == "types"]
    if not types_tables:
        pytest.skip(f"{name} has no types keyspace")
    run(tmp_path, name, spec=WorkloadSpec(keyspaces=("types",), seed=5, templates=64), events=3000)
    _, batches = read_all(schema, tmp_path)
    written: dict[tuple[str, str], int] = Counter()
    tombstones: Counter = Counter()
    for event in events(batches):
        table = schema.by_name(event.keyspace, event.table)
        for ctype, raw in zip([c.type for c in table.partition_key], event.partition_key):
            decode(ctype, raw)
        for column, raw in zip(table.clustering, event.clustering):
            decode(column.type, raw)
        for cell in event.cells:
            column = table.columns[cell.column]
            if cell.kind == TOMBSTONE:
                tombstones[(event.table, cell.column)] += 1
            if cell.kind != SET:
                continue
            written[(event.table, cell.column)] += 1
            if cell.path is not None:
                decode_cell_path(column.type, cell.path)
            value = decode_cell_value(column.type, cell.value or b"", cell.path)
            if column.type.kind == "set" and column.type.frozen:
                assert comparator_sorted(value), (cell.column, value)  # stored in comparator order
            if column.type.kind == "map" and column.type.frozen:
                assert comparator_sorted([k for k, _ in value]), (cell.column, value)
    for table in types_tables:
        missing = [c for c in table.columns if not written[(table.name, c)]]
        assert not missing, f"{table.qualified_name}: no values written for {missing}"
        complex_columns = [c.name for c in table.columns.values() if c.type.is_complex]
        assert all(tombstones[(table.name, c)] for c in complex_columns), tombstones
    columns = [c for t in types_tables for c in [*t.columns.values(), *t.clustering]]
    used = {node.kind for c in columns for node in type_nodes(c.type)}
    assert {"int", "text", "map", "set", "list", "tuple", "udt"} <= used  # (the test covers what it claims)


def test_complex_cells_are_in_path_order(tmp_path: Path) -> None:
    """Cassandra keeps the cells of a non-frozen collection sorted by path (its comparator)."""
    schema = load_schema(schema_dir())
    run(tmp_path, spec=WorkloadSpec(seed=9, templates=64), events=3000)
    _, batches = read_all(schema, tmp_path)
    checked = 0
    for event in events(batches):
        table = schema.by_name(event.keyspace, event.table)
        paths: dict[str, list[bytes]] = {}
        for cell in event.cells:
            if cell.path is not None:
                paths.setdefault(cell.column, []).append(cell.path)
        for column, found in paths.items():
            ctype = table.columns[column].type
            if ctype.kind == "list":
                assert comparator_sorted([decode_cell_path(ctype, p).time for p in found]), found
            elif ctype.kind == "udt":
                assert comparator_sorted(found), found
            else:
                element = ctype.params[0]
                assert comparator_sorted([decode(element, p) for p in found]) or element.kind in ("text", "ascii")
                assert comparator_sorted(found) or element.kind not in ("text", "ascii")
            checked += len(found) > 1
    assert checked > 100


# -- small parts -----------------------------------------------------------------------------------


@given(st.integers(0, 2**64 - 1) | st.integers(0, 300))
def test_fast_uvint_is_cassandras_vint(value: int) -> None:
    assert fast_uvint(value) == encode_uvint(value)


def test_mix_parsing() -> None:
    assert parse_mix("insert=3, delete=1")["insert"] == 3.0
    for bad, message in [
        ("insert", "OPERATION=WEIGHT"),
        ("upsert=1", "unknown operation"),
        ("insert=x", "number"),
        ("insert=-1", "negative"),
        ("insert=0", "every weight"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_mix(bad)


# -- the command and the live mode -----------------------------------------------------------------------


def cli(*args: str, **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-m", "cdcfast.cli", "generate", *args], cwd=REPO, text=True, **kwargs
    )


def test_the_command_writes_segments_and_a_manifest(tmp_path: Path) -> None:
    process = cli(
        "--schema",
        str(schema_dir()),
        "--out",
        str(tmp_path),
        "--events",
        "500",
        "--compression",
        "zstd",
        "--version",
        "7",
        "--mix",
        "insert=1,update=1",
        "--seed",
        "3",
        "--segment-size",
        "256KiB",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "500 events" in stdout
    manifest = json.loads((tmp_path / "generated.json").read_text())
    assert (manifest["seed"], manifest["settings"]["version"], manifest["settings"]["compression"]) == (3, 7, "zstd")
    assert set(manifest["operations"]) == {"insert", "update"}
    assert all(p.name.startswith("CommitLog-7-") for p in tmp_path.glob("*.log"))
    per_table, _ = decoded_counts(MAIN, tmp_path)
    assert per_table == manifest_counts(manifest)

    bad = cli(
        "--schema",
        str(schema_dir()),
        "--out",
        str(tmp_path / "x"),
        "--mix",
        "upsert=1",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, stderr = bad.communicate(timeout=60)
    assert bad.returncode == 1 and "unknown operation 'upsert'" in stderr


def test_live_rate_mode_advances_the_idx_over_time(tmp_path: Path) -> None:
    """--rate: sections appended and the idx offset advanced every sync, as on a node, at the rate
    asked for (not faster, and not slower either, from the first second); whatever a follower reads
    at any moment is a prefix of the final stream."""
    RATE, EVENTS = 5000, 6000  # noqa: N806
    out = tmp_path / "cdc_raw"
    process = cli(
        "--schema",
        str(schema_dir()),
        "--out",
        str(out),
        "--rate",
        str(RATE),
        "--events",
        str(EVENTS),
        "--sync-ms",
        "150",
        "--segment-size",
        "8MiB",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: list[tuple[float, int, bool]] = []
    snapshots: list[Path] = []
    started = time.monotonic()
    try:
        while process.poll() is None and time.monotonic() - started < 60:
            for idx_path in out.glob("*_cdc.idx") if out.exists() else []:
                idx = read_cdc_index(idx_path)
                if idx.offset is not None and (not seen or seen[-1][1:] != (idx.offset, idx.completed)):
                    seen.append((time.monotonic() - started, idx.offset, idx.completed))
                    if len(snapshots) < 3 and not idx.completed:
                        copy = tmp_path / f"snapshot{len(snapshots)}"
                        copy.mkdir()
                        shutil.copy(idx_path, copy)  # the idx first: the segment holds at least that
                        shutil.copy(idx_path.with_name(idx_path.name.replace("_cdc.idx", ".log")), copy)
                        snapshots.append(copy)
            time.sleep(0.02)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "cdcfast generate:" in stderr  # progress lines
    offsets = [offset for _, offset, _ in seen]
    assert len(offsets) >= 4 and offsets == sorted(offsets), seen
    assert seen[-1][2], "the segment is COMPLETED at the end"
    assert seen[-1][0] - seen[0][0] > 0.5, "the idx advanced over time, not all at once"
    stream = json.loads((out / "generated.json").read_text())["run"]["seconds"]
    assert EVENTS / RATE * 0.9 <= stream, "paced: not faster than --rate"
    assert EVENTS / stream >= RATE * 0.6, f"{EVENTS / stream:.0f} events/s for --rate {RATE}"
    final = [e.event_id for e in events(read_all(load_schema(schema_dir()), out)[1])]
    assert len(final) == EVENTS
    for snapshot in snapshots:
        partial = [e.event_id for e in events(read_all(load_schema(schema_dir()), snapshot)[1])]
        assert 0 < len(partial) < EVENTS and partial == final[: len(partial)]
