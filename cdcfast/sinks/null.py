"""The null sink (``null://``): accepts batches and stores nothing but its checkpoint, for measuring
the pipeline without a warehouse.

Exactly-once bookkeeping still runs: per source, the checkpoint ``(segment, position)`` and the
events counted (in total and per table) are written together, atomically (a temporary file, fsync,
rename), after each batch, as a real sink commits its rows and its checkpoint in one transaction. A
batch applied again (a restart before the checkpoint was read, a replica replaying the same
stretch) counts only the events past the stored checkpoint, so a replay never counts an event twice.

DSN: ``null://`` keeps the files in the pipeline's state dir (``<state_dir>/null/<sink name>``; the
configuration fills that in), ``null:///some/folder`` in that folder. ``?fsync=0`` skips the
fsync (the checkpoint then survives a crash of cdcfast, not of the machine).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from cdcfast.commitlog.schema import Schema, TableDef
from cdcfast.errors import ConfigError
from cdcfast.events import ChangeEvent

SCHEME = "null://"
FORMAT = 1


def is_null_dsn(dsn: str) -> bool:
    return dsn.lower().startswith(SCHEME)


def null_dsn_in(dsn: str, state_dir: str | Path, name: str) -> str:
    """``null://`` (no folder) -> ``null://<state_dir>/null/<name>``; other DSNs are returned as they are."""
    if not is_null_dsn(dsn):
        return dsn
    parts = urlsplit(dsn)
    if parts.netloc or parts.path:
        return dsn
    folder = Path(state_dir).resolve() / "null" / name
    return f"{SCHEME}{folder}" + (f"?{parts.query}" if parts.query else "")


def parse_null_dsn(dsn: str) -> tuple[Path, bool]:
    """(folder, fsync) of a ``null://`` DSN that names its folder."""
    if not is_null_dsn(dsn):
        raise ConfigError(f"null sink: expected a null:// DSN, got {dsn!r}")
    parts = urlsplit(dsn)
    folder = parts.netloc + parts.path
    if not folder:
        raise ConfigError("null sink: null:// needs a folder (null:///path), or a pipeline state dir to keep it in")
    options = parse_qs(parts.query)
    fsync = options.get("fsync", ["1"])[-1].lower() not in ("0", "false", "no", "off")
    return Path(folder), fsync


class SourceState:
    """What one source has delivered into the null sink."""

    __slots__ = ("checkpoint", "events", "tables", "batches", "duplicates", "updated_at")

    def __init__(self) -> None:
        self.checkpoint: tuple[int, int] | None = None
        self.events = 0  # events counted once each
        self.tables: dict[str, int] = {}  # keyspace.table -> events
        self.batches = 0  # batches that moved the checkpoint
        self.duplicates = 0  # events handed again at or before the checkpoint, not counted
        self.updated_at = 0.0

    def to_json(self, source: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": source,
            "checkpoint": list(self.checkpoint) if self.checkpoint else None,
            "events": self.events,
            "tables": dict(sorted(self.tables.items())),
            "batches": self.batches,
            "duplicates": self.duplicates,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> SourceState:
        state = cls()
        checkpoint = document.get("checkpoint")
        state.checkpoint = (int(checkpoint[0]), int(checkpoint[1])) if checkpoint else None
        state.events = int(document.get("events", 0))
        state.tables = {str(k): int(v) for k, v in document.get("tables", {}).items()}
        state.batches = int(document.get("batches", 0))
        state.duplicates = int(document.get("duplicates", 0))
        state.updated_at = float(document.get("updated_at", 0.0))
        return state


class NullSink:
    """Counts what it is given, once, and keeps its checkpoint in a local file per source."""

    kind = "null"

    def __init__(self, dsn: str, name: str = "null") -> None:
        self.dsn = dsn
        self.name = name
        self.folder, self.fsync = parse_null_dsn(dsn)
        self.sources: dict[str, SourceState] = {}
        self.connected = False

    # -- the sink interface -------------------------------------------------------------------------

    async def waiting_on(self) -> dict[str, Any] | None:
        return None  # a file written: nothing to ask

    def abort(self) -> bool:
        return False  # nothing to cut: a null sink's work never waits on a server

    async def dlq_depth(self) -> int:
        return 0  # stores no change, so refuses none
    async def connect(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sources = {}
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def prepare(self, schema: Schema) -> None:
        """Nothing to create."""

    async def checkpoint(self, source: str) -> tuple[int, int] | None:
        return self.state(source).checkpoint

    async def apply(
        self,
        events: Sequence[ChangeEvent],
        tables: dict[tuple[str, str], TableDef],
        source: str,
        position: tuple[int, int] | None,
    ) -> None:
        """Count the events past the checkpoint and move it to ``position``, in one atomic write."""
        state = self.state(source)
        done = state.checkpoint or (-1, -1)
        fresh = 0
        for event in events:
            if (event.segment_id, event.position) > done:
                fresh += 1
                name = f"{event.keyspace}.{event.table}"
                state.tables[name] = state.tables.get(name, 0) + 1
        state.events += fresh
        state.duplicates += len(events) - fresh
        if position is not None and position > done:
            state.checkpoint = (int(position[0]), int(position[1]))
            state.batches += 1
        state.updated_at = time.time()
        self._commit(source, state)

    async def dead_letters(self) -> list[dict[str, Any]]:
        """The null sink stores every event it is given: no dead letters."""
        return []

    async def truncations(self, table: TableDef) -> list[tuple[str, int, int]]:
        """No state, no truncations kept."""
        return []

    async def mark_replayed(self, event_ids: list[bytes]) -> None:
        """No dead letters to mark."""

    # -- the files ------------------------------------------------------------------------------------
    def path(self, source: str) -> Path:
        return self.folder / f"checkpoint-{quote(source, safe='')}.json"

    def state(self, source: str) -> SourceState:
        state = self.sources.get(source)
        if state is None:
            state = read_state(self.path(source))
            self.sources[source] = state
        return state

    def _commit(self, source: str, state: SourceState) -> None:
        path = self.path(source)
        temporary = path.with_name(path.name + ".tmp")
        data = json.dumps(state.to_json(source)).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)


def read_state(path: Path) -> SourceState:
    """A source's state as last committed (a fresh one if there is none yet)."""
    try:
        return SourceState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return SourceState()
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ConfigError(f"null sink: {path} is not a checkpoint file this cdcfast wrote: {exc}") from exc


def read_checkpoints(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Every source's committed state in a null sink's folder (for benchmarks and tests)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("checkpoint-*.json")):
        document = json.loads(path.read_text())
        out[str(document["source"])] = document
    return out
