"""Watching a running pipeline from outside: its log lines (errors, readiness) and each sink's own
checkpoint, polled where the sink keeps it, to see when data is committed and visible."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any


@dataclass(frozen=True)
class Landing:
    """A checkpoint first seen in a sink: at ``at`` (epoch seconds) it covers ``key``."""

    at: float
    key: tuple[int, int]


class LogWatch(threading.Thread):
    """Reads the supervisor's stderr (the JSON log lines of every process): errors and readiness."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(name="cdcfast-bench-logs", daemon=True)
        self.stream = stream
        self.errors: list[str] = []
        self.tail: deque[str] = deque(maxlen=40)
        self.resumed = threading.Event()

    def run(self) -> None:
        traceback: list[str] | None = None  # a child's traceback being read, line by line
        for raw in self.stream:
            text = raw.decode(errors="replace").rstrip()
            self.tail.append(text)
            if traceback is not None:
                traceback.append(text)
                if text and not text[0].isspace():  # the exception line ends it
                    self._error("\n".join(traceback))
                    traceback = None
                continue
            if text.startswith("Traceback"):
                traceback = [text]
                continue
            if '"resuming"' in text:
                self.resumed.set()
            if '"level": "error"' in text or '"level": "critical"' in text:
                self._error(text)

    def _error(self, text: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(text[-4000:])


class CheckpointWatch(threading.Thread):
    """Polls one sink's checkpoint for ``node`` every ``interval`` seconds and records each new one
    with the time it was first seen: for PostgreSQL and TimescaleDB the row in
    ``cdcfast.checkpoints`` (committed with the data), for ClickHouse the same table (written after
    the data), for the null sink its checkpoint file, whose commit time it records itself."""

    def __init__(self, kind: str, dsn: str, name: str, node: str, interval: float) -> None:
        super().__init__(name=f"cdcfast-bench-{name}", daemon=True)
        self.kind, self.dsn, self.name, self.node = kind, dsn, name, node
        self.interval = interval
        self.landings: list[Landing] = []
        self.checkpoint: tuple[int, int] = (-1, -1)
        self.polls = 0
        self.last_error: str | None = None
        self.stop = threading.Event()
        # Made here, in the caller's thread: importing a sink's module from this thread later could
        # meet a source tree edited since this process started.
        from cdcfast.sinks import open_sink

        self.sink: Any = open_sink(kind, dsn, name)

    def run(self) -> None:
        if self.kind == "null":
            self._watch_file()
        else:
            asyncio.run(self._watch_sink())

    def _seen(self, key: tuple[int, int] | None, at: float) -> None:
        self.polls += 1
        if key is not None and key > self.checkpoint:
            self.checkpoint = key
            self.landings.append(Landing(at, key))

    def _watch_file(self) -> None:
        from cdcfast.sinks.null import read_state

        path = self.sink.path(self.node)
        while not self.stop.is_set():
            try:
                state = read_state(path)
                # the file says when it was committed: the landing time itself, not when it was seen
                self._seen(state.checkpoint, state.updated_at or time.time())
            except Exception as exc:  # noqa: BLE001 - a half-written file is read again next time
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.stop.wait(self.interval)

    async def _watch_sink(self) -> None:
        connected = False
        while not self.stop.is_set():
            try:
                if not connected:
                    await self.sink.connect()
                    connected = True
                key = await self.sink.checkpoint(self.node)
                self._seen(tuple(key) if key else None, time.time())
            except Exception as exc:  # noqa: BLE001 - a sink that does not answer is asked again
                self.last_error = f"{type(exc).__name__}: {exc}"
                if connected:
                    connected = False
                    try:
                        await self.sink.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        pass
            await asyncio.sleep(self.interval)
        if connected:
            await self.sink.close()
