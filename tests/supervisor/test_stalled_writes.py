"""A write that does not finish is never silent (docs/failures.md, "A write that does not finish").

While a write runs longer than ``tuning.write_watch_seconds``, the writer asks the sink what the write
waits on and says so in a warning, again each period. A PostgreSQL write blocked by a lock another
session holds names that session (pid, user, query); it goes on waiting, and lands once the lock is
released. A server that does not even answer that question (frozen, or a network that drops
everything without a reset) gets the write's connection cut: the write fails as transient and is
retried on a new connection, so the usual retry, down and probe policy applies instead of a hang.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog
from conftest import CORPUS_ROOT, Corpus
from support.replay import cdc_events
from support.services import ensure_services
from support.sinks import fresh_database

from cdcfast.config import PipelineConfig, PostgresSink, SourceConfig, TuningConfig
from cdcfast.events import ChangeEvent
from cdcfast.log import get_logger
from cdcfast.supervisor.messages import EventBatch, schema_fingerprint
from cdcfast.supervisor.writer import Writer

pytestmark = pytest.mark.services
CORPUS = "c50-v7-plain"
TABLE = ("shop", "returns")


class FreezableProxy:
    """A TCP proxy to a server that can freeze: while frozen it forwards nothing either way and opens
    nothing upstream, without closing anything (a frozen server, a network dropping every packet)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.running = asyncio.Event()
        self.running.set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.running.clear()

    def thaw(self) -> None:
        self.running.set()

    async def close(self) -> None:
        self.thaw()
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.running.wait()
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.running.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


def through(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    user = parts.netloc.rsplit("@", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))


@pytest.fixture
def returns_changes(corpus_scratch: Path) -> Iterator[tuple[Corpus, list[ChangeEvent]]]:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    _, events = cdc_events(corpus)
    yield corpus, [e for e in events if (e.keyspace, e.table) == TABLE][:40]


def writer_for(dsn: str, corpus: Corpus, tmp_path: Path) -> Writer:
    config = PipelineConfig(
        sources=[SourceConfig(node="n1", cdc_raw=str(tmp_path), schema=str(corpus.schema_dir))],
        sinks=[PostgresSink(name="pg", dsn=dsn)],
        state_dir=str(tmp_path / "state"),
        tuning=TuningConfig(write_watch_seconds=1.0, retry_base_seconds=0.1),
    )
    return Writer(config, 0, queue.Queue())  # type: ignore[arg-type]


def batch_of(writer: Writer, events: list[ChangeEvent]) -> EventBatch:
    last = events[-1]
    return EventBatch(0, 0, True, last.segment_id, last.position, events, schema=schema_fingerprint(writer.schema))


async def stored_changes(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM shop.returns_changes")
    finally:
        await conn.close()


def test_a_write_waiting_on_a_lock_names_who_holds_it_and_lands_once_released(returns_changes, tmp_path) -> None:  # noqa: ANN001
    corpus, events = returns_changes
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    get_logger("test")  # logging set up first: set up inside capture_logs, it would replace the capture

    async def run() -> tuple[list[dict], int, Writer]:
        writer = writer_for(dsn, corpus, tmp_path)
        await writer.start()
        locker = await asyncpg.connect(dsn, server_settings={"application_name": "analyst"})
        holder = locker.get_server_pid()
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE shop.returns_changes IN ACCESS EXCLUSIVE MODE")
        with structlog.testing.capture_logs() as logged:
            write = asyncio.create_task(writer.apply_with_retries([batch_of(writer, events)]))
            await asyncio.sleep(2.5)
            assert not write.done()
            await tx.rollback()
            await asyncio.wait_for(write, 30)
        await locker.close()
        await writer.disconnect()
        return logged, holder, writer

    logged, holder, writer = asyncio.run(run())
    waits = [line for line in logged if line["event"] == "sink write still running"]
    assert waits, logged
    first = waits[0]
    assert first["log_level"] == "warning" and first["events"] == len(events) and first["seconds"] >= 1
    assert first["sink_waits_on"]["wait_event_type"] == "Lock", first
    (blocker,) = first["sink_waits_on"]["blocked_by"]
    assert blocker["pid"] == holder and blocker["application"] == "analyst", blocker
    assert "LOCK TABLE shop.returns_changes" in blocker["query"], blocker
    assert writer.down is None and writer.checkpoint == (events[-1].segment_id, events[-1].position)
    assert not [line for line in logged if line["event"] == "sink write failed: retrying"]  # waited, not retried
    assert asyncio.run(stored_changes(dsn)) == len(events)


def test_a_server_that_stops_answering_has_the_write_cut_and_retried(returns_changes, tmp_path) -> None:  # noqa: ANN001
    corpus, events = returns_changes
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    get_logger("test")

    async def run() -> tuple[list[dict], Writer]:
        parts = urlsplit(dsn)
        proxy = FreezableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        writer = writer_for(through(dsn, proxy.port), corpus, tmp_path)
        await writer.start()
        with structlog.testing.capture_logs() as logged:
            proxy.freeze()
            write = asyncio.create_task(writer.apply_with_retries([batch_of(writer, events)]))
            for _ in range(100):  # until the writer gave up on the frozen connection
                await asyncio.sleep(0.1)
                if any(line["event"] == "sink not answering: cutting the write's connection" for line in logged):
                    break
            proxy.thaw()
            await asyncio.wait_for(write, 60)
        await writer.disconnect()
        await proxy.close()
        return logged, writer

    logged, writer = asyncio.run(run())
    events_logged = [line["event"] for line in logged]
    assert "sink not answering: cutting the write's connection" in events_logged, events_logged
    cut = next(line for line in logged if line["event"] == "sink not answering: cutting the write's connection")
    assert cut["log_level"] == "error" and cut["events"] == len(events), cut
    assert "sink write failed: retrying" in events_logged  # the usual policy from there
    assert writer.down is None and writer.checkpoint == (events[-1].segment_id, events[-1].position)
    assert asyncio.run(stored_changes(dsn)) == len(events)
