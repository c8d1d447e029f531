"""Shared fixtures: the real corpora in ../shared/corpus, unpacked once per test session."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path

import pytest

# support.throwaway: the databases a test makes are dropped when it ends; pytester: tests of that.
pytest_plugins = ("support.throwaway", "pytester")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CDCFAST_SHARED", REPO.parent / "shared"))
CORPUS_ROOT = SHARED / "corpus"
USER_KEYSPACES = ("shop", "clinic", "telemetry", "types")


def corpus_names() -> list[str]:
    if not CORPUS_ROOT.is_dir():
        return []
    return sorted(p.name for p in CORPUS_ROOT.iterdir() if (p / "cdc_raw.tar.gz").exists())


class Corpus:
    """One corpus folder, with its archives unpacked on demand into a session temp folder."""

    def __init__(self, name: str, scratch: Path) -> None:
        self.name = name
        self.root = CORPUS_ROOT / name
        self.scratch = scratch / name
        self.schema_dir = self.root / "schema"

    def _unpack(self, archive: str, inner: str) -> Path:
        target = self.scratch / archive.replace(".tar.gz", "")
        if not target.exists():
            target.mkdir(parents=True)
            with tarfile.open(self.root / archive) as tar:
                tar.extractall(target, filter="data")
        return target / inner

    @property
    def cdc_raw(self) -> Path:
        return self._unpack("cdc_raw.tar.gz", "cdc_raw")

    @property
    def snapshots(self) -> Path:
        return self._unpack("snapshots.tar.gz", "snapshots")

    def reference_lines(self, keyspaces: tuple[str, ...] = USER_KEYSPACES) -> list[dict]:
        with gzip.open(self.root / "reference-decoding.jsonl.gz", "rt") as handle:
            lines = [json.loads(line) for line in handle]
        return [line for line in lines if line["keyspace"] in keyspaces]

    def summary(self) -> dict:
        return json.loads((self.root / "reference-summary.json").read_text())

    def ops(self) -> list[dict]:
        with gzip.open(self.root / "ops.jsonl.gz", "rt") as handle:
            return [json.loads(line) for line in handle]


@pytest.fixture(scope="session")
def corpus_scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpora")


@pytest.fixture(scope="session", params=corpus_names() or [pytest.param(None, marks=pytest.mark.skip("no corpora"))])
def corpus(request: pytest.FixtureRequest, corpus_scratch: Path) -> Corpus:
    return Corpus(request.param, corpus_scratch)


# CI runs the slow suites "as far as time allows": past CDCFAST_START_DEADLINE (epoch seconds) no
# further test starts; each is reported as skipped with the reason, never silently dropped.
START_DEADLINE = float(os.environ.get("CDCFAST_START_DEADLINE", "0") or 0)


# When time may run out, what proves the pipeline goes first: kill -9 and outages, then live nodes.
SLOW_FIRST = ("tests/supervisor/", "tests/live/test_live_cluster", "tests/live/test_live_cdc_space")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if START_DEADLINE:
        def rank(item: pytest.Item) -> int:
            path = item.nodeid
            return next((i for i, prefix in enumerate(SLOW_FIRST) if path.startswith(prefix)), len(SLOW_FIRST))

        items.sort(key=rank)  # stable: file order within each rank


def pytest_runtest_setup(item: pytest.Item) -> None:
    import time

    if START_DEADLINE and time.time() > START_DEADLINE:
        pytest.skip("CI time budget spent (CDCFAST_START_DEADLINE): not started")
