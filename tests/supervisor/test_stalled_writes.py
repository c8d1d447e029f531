"""A write that does not finish is never silent (docs/failures.md, "A write that does not finish").

While a write runs longer than ``tuning.write_watch_seconds``, the writer asks the sink what the write
waits on and says so in a warning, again each period. A PostgreSQL write blocked by a lock another
session holds names that session (pid, user, query); it goes on waiting, and lands once the lock is
released. A connection lost without a word as the write is sent (a frozen server, a network dropping
every packet) leaves the sink unable to answer that question: the write's connection is cut, and the
write is done again on a new one (PostgreSQL: after ending the lost connection's backend, whose
open transaction would block it), exactly once. A connection whose packets vanish while new ones
still work (a firewall that forgot the flow) lets the sink answer; its socket gives up by itself
once the server's machine acknowledges nothing for ``tuning.tcp_timeout_seconds``, and the write is
done again likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest
import structlog
from clickhouse_driver import Client
from conftest import CORPUS_ROOT, Corpus
from support.replay import cdc_events
from support.services import ensure_services
from support.silent_server import SilentServer
from support.sinks import fresh_clickhouse, fresh_database

from cdcfast.config import ClickHouseSink as ClickHouseSpec
from cdcfast.config import PipelineConfig, PostgresSink, SourceConfig, TuningConfig
from cdcfast.events import ChangeEvent
from cdcfast.log import get_logger
from cdcfast.sinks import cut
from cdcfast.sinks.clickhouse import ClickHouseSink
from cdcfast.sinks.errors import ErrorClass
from cdcfast.supervisor.messages import EventBatch, schema_fingerprint
from cdcfast.supervisor.writer import Writer

pytestmark = pytest.mark.services
CORPUS = "c50-v7-plain"
CUT = "sink not answering: cutting the write's connection"
CONNECT_CUT = "sink not answering: cutting the connection being made"
TABLE = ("shop", "returns")


class FreezableProxy:
    """A TCP proxy to a server, in a thread of its own, whose connections can be lost without a
    word: a freeze makes every open connection forward nothing ever again, either way, without
    closing it (a frozen server, a network dropping every packet), and holds new ones until
    :meth:`thaw`. It freezes once a client sends the bytes given to :meth:`freeze_on` (mid-write: the
    statement is on its way). Its own thread: a sink whose driver blocks its thread still gets
    through."""

    def __init__(self, dsn: str) -> None:
        self.freeze_at: bytes | None = None
        parts = urlsplit(dsn)
        self.dsn = dsn
        self.upstream = (parts.hostname or "127.0.0.1", parts.port)
        self.loop = asyncio.new_event_loop()
        self.open = asyncio.Event()  # new connections go through
        self.open.set()
        self.lost: list[asyncio.Event] = []  # one per connection: set once it is lost
        self.streams: list[asyncio.StreamWriter] = []  # both ends of every connection, closed at the end
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)

    @property
    def proxied_dsn(self) -> str:
        parts = urlsplit(self.dsn)
        user = parts.netloc.rsplit("@", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}"))

    def freeze_on(self, marker: bytes) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "freeze_at", marker)

    def _freeze(self) -> None:
        self.open.clear()
        for lost in self.lost:
            lost.set()

    def thaw(self) -> None:
        self.loop.call_soon_threadsafe(self.open.set)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.thread.join(10)

    async def _stop(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in self.streams:  # a server waiting for a frozen insert's data would hold its table
            stream.transport.abort()
        self.loop.call_soon(self.loop.stop)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.open.wait()
        lost = asyncio.Event()
        self.lost.append(lost)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.streams += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer, lost, True), self._pipe(up_reader, writer, lost, False))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lost: asyncio.Event, from_client: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while (data := await reader.read(65536)) and not lost.is_set():
                writer.write(data)
                await writer.drain()
                if from_client and self.freeze_at is not None and self.freeze_at in data:
                    self.freeze_at = None
                    self._freeze()
        if lost.is_set():
            await asyncio.Event().wait()  # never forwards again, never closes
        writer.close()


@pytest.fixture
def returns_changes(corpus_scratch: Path) -> tuple[Corpus, list[ChangeEvent]]:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    _, events = cdc_events(corpus)
    return corpus, [e for e in events if (e.keyspace, e.table) == TABLE][:40]


def writer_for(dsn: str, corpus: Corpus, tmp_path: Path, **tuning: float) -> Writer:
    sink = ClickHouseSpec(name="ch", dsn=dsn) if dsn.startswith("clickhouse") else PostgresSink(name="pg", dsn=dsn)
    config = PipelineConfig(
        sources=[SourceConfig(node="n1", cdc_raw=str(tmp_path), schema=str(corpus.schema_dir))],
        sinks=[sink],
        state_dir=str(tmp_path / "state"),
        tuning=TuningConfig(**{"write_watch_seconds": 1.0, "retry_base_seconds": 0.1, **tuning}),
    )
    return Writer(config, 0, queue.Queue())  # type: ignore[arg-type]


def empty_sink(kind: str) -> str:
    """The DSN of a sink of ``kind`` (postgres, clickhouse) holding none of the corpora's tables."""
    if kind == "clickhouse":
        dsn = ensure_services(["clickhouse"])["clickhouse"]
        fresh_clickhouse(dsn)
        return dsn
    return asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))


def batch_of(writer: Writer, events: list[ChangeEvent]) -> EventBatch:
    last = events[-1]
    return EventBatch(0, 0, True, last.segment_id, last.position, events, schema=schema_fingerprint(writer.schema))


async def stored_changes(dsn: str) -> int:
    if dsn.startswith("clickhouse"):
        return Client.from_url(dsn).execute("SELECT count() FROM shop.returns_changes FINAL")[0][0]
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
        # sockets that give up after 1 s of silence: a server waiting on a lock still acknowledges
        writer = writer_for(dsn, corpus, tmp_path, tcp_timeout_seconds=1.0)
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


def thaw_after_cut(proxy: FreezableProxy, logged: list[dict]) -> None:
    """Thaw ``proxy`` once the writer logged that it cut the write's connection (or after 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(line["event"] == CUT for line in list(logged)):
        time.sleep(0.05)
    proxy.thaw()


def write_lost_on(
    marker: bytes,
    dsn: str,
    events: list[ChangeEvent],
    corpus: Corpus,
    tmp_path: Path,
    prepared: Callable[[], object] = lambda: None,
) -> tuple[list[dict], Writer]:
    """A writer applies ``events`` as one batch through a proxy to ``dsn`` that loses every connection
    once a client sends ``marker``, and lets new ones through again once the writer logged the cut.
    ``prepared`` runs after the writer set up its tables. Gives back what the writer logged, and it."""
    proxy = FreezableProxy(dsn)

    async def run() -> tuple[list[dict], Writer]:
        writer = writer_for(proxy.proxied_dsn, corpus, tmp_path)
        await writer.start()
        prepared()
        with structlog.testing.capture_logs() as logged:
            proxy.freeze_on(marker)
            # Watched from a thread of the test's own, whatever the writer's event loop does.
            thawing = threading.Thread(target=thaw_after_cut, args=(proxy, logged))
            thawing.start()
            try:
                await asyncio.wait_for(writer.apply_with_retries([batch_of(writer, events)]), 60)
            except TimeoutError:
                raise AssertionError(f"the write did not finish; the writer logged {logged}") from None
            finally:
                thawing.join()
        await writer.disconnect()
        return logged, writer

    try:
        return asyncio.run(run())
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["postgres", "clickhouse"])
def test_a_connection_lost_silently_is_cut_and_the_write_done_again(kind: str, returns_changes, tmp_path) -> None:  # noqa: ANN001
    corpus, events = returns_changes
    dsn = empty_sink(kind)
    get_logger("test")
    statement = b"INSERT INTO" if kind == "clickhouse" else b"COPY"  # the first write of the batch
    logged, writer = write_lost_on(statement, dsn, events, corpus, tmp_path)
    events_logged = [line["event"] for line in logged]
    assert CUT in events_logged, events_logged
    cut = next(line for line in logged if line["event"] == CUT)
    assert cut["log_level"] == "error" and cut["events"] == len(events), cut
    assert writer.down is None and writer.checkpoint == (events[-1].segment_id, events[-1].position)
    assert asyncio.run(stored_changes(dsn)) == len(events)


def test_a_dead_letter_stored_on_a_lost_clickhouse_connection_is_cut_too(returns_changes, tmp_path) -> None:  # noqa: ANN001
    """Storing a dead letter is part of the watched write: a connection lost as the letter is sent
    is cut (the driver alone would wait 300 s on it), the write is done again, and the letter and
    the changes land once."""
    corpus, events = returns_changes
    dsn = empty_sink("clickhouse")
    get_logger("test")
    last = events[-1]
    poison = msgspec.structs.replace(  # refused once the change log's ts is unsigned (test_poison_isolation.py)
        events[0],
        ts=-1_000_000,
        liveness_ts=-1_000_000 if events[0].liveness_ts is not None else None,
        cells=[msgspec.structs.replace(c, ts=-1_000_000) for c in events[0].cells],
        position=last.position + 1,
    ).with_content_id()
    unsigned = lambda: Client.from_url(dsn).execute("ALTER TABLE shop.returns_changes MODIFY COLUMN ts UInt64")  # noqa: E731
    letter_sent = b"INSERT INTO cdcfast.dead_letters"  # lost as the letter is sent
    logged, writer = write_lost_on(letter_sent, dsn, [*events, poison], corpus, tmp_path, unsigned)
    events_logged = [line["event"] for line in logged]
    assert CUT in events_logged, events_logged
    assert writer.down is None and writer.checkpoint == (poison.segment_id, poison.position)
    assert asyncio.run(stored_changes(dsn)) == len(events)
    letters = Client.from_url(dsn).execute("SELECT event_id FROM cdcfast.dead_letters FINAL")
    assert [row[0].bytes for row in letters] == [poison.event_id]


def test_clickhouse_says_which_of_its_queries_run() -> None:
    dsn = ensure_services(["clickhouse"])["clickhouse"]

    async def run() -> dict | None:
        sink = ClickHouseSink(dsn, name="watched")
        await sink.connect()
        assert sink.client is not None
        slow = threading.Thread(target=sink.client.execute, args=("SELECT sleep(2)",))
        slow.start()
        await asyncio.sleep(0.5)
        answer = await sink.waiting_on()
        slow.join()
        await sink.close()
        return answer

    answer = asyncio.run(run())
    assert answer is not None
    (query,) = answer["running"]
    assert query["query"] == "SELECT sleep(2)" and 0.2 < query["elapsed"] < 2, query


class DroppedFlow:
    """Drops every packet of one loopback TCP connection, both ways, with iptables (root only), while
    new connections still work: a stateful firewall that forgot the flow."""

    def __init__(self) -> None:
        self.rules: list[list[str]] = []

    def drop(self, client_port: int) -> None:
        for flag in ("--sport", "--dport"):
            rule = ["-o", "lo", "-p", "tcp", flag, str(client_port), "-j", "DROP"]
            subprocess.run(["iptables", "-I", "OUTPUT", *rule], check=True, capture_output=True)
            self.rules.append(rule)

    def __enter__(self) -> DroppedFlow:
        return self

    def __exit__(self, *exc: object) -> None:
        for rule in self.rules:
            subprocess.run(["iptables", "-D", "OUTPUT", *rule], check=False, capture_output=True)


def can_drop_packets() -> bool:
    if shutil.which("iptables") is None:
        return False
    listing = subprocess.run(["iptables", "-L", "OUTPUT"], capture_output=True, check=False)
    return listing.returncode == 0


async def drop_as_the_write_is_sent(writer: Writer, flow: DroppedFlow) -> None:
    """Drop the packets of the writer's connection from the write's first statement on (ClickHouse:
    once it is sent, past the driver's ping, which would notice and reconnect by itself)."""
    sink = writer.sink
    if not isinstance(sink, ClickHouseSink):
        flow.drop(await sink.conn.fetchval("SELECT client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()"))
        return
    assert sink.client is not None
    connection = sink.client.connection
    send_query = connection.send_query

    def send_then_drop(*args: object, **kwargs: object) -> None:
        send_query(*args, **kwargs)
        if not flow.rules:
            flow.drop(connection.socket.getsockname()[1])

    connection.send_query = send_then_drop


@pytest.mark.parametrize("kind", ["postgres", "clickhouse"])
def test_a_connection_whose_packets_vanish_is_given_up_by_its_socket(kind: str, returns_changes, tmp_path) -> None:  # noqa: ANN001
    if not can_drop_packets():
        pytest.skip("dropping a connection's packets needs iptables and root")
    corpus, events = returns_changes
    dsn = empty_sink(kind)
    get_logger("test")

    async def run() -> tuple[list[dict], Writer, float]:
        writer = writer_for(dsn, corpus, tmp_path, tcp_timeout_seconds=3.0)
        await writer.start()
        started = time.monotonic()
        with structlog.testing.capture_logs() as logged, DroppedFlow() as flow:
            await drop_as_the_write_is_sent(writer, flow)
            try:
                await asyncio.wait_for(writer.apply_with_retries([batch_of(writer, events)]), 60)
            except TimeoutError:
                raise AssertionError(f"the write did not finish; the writer logged {logged}") from None
        await writer.disconnect()
        return logged, writer, time.monotonic() - started

    logged, writer, seconds = asyncio.run(run())
    events_logged = [line["event"] for line in logged]
    assert "sink write still running" in events_logged, events_logged  # the sink answered: nothing to cut
    retried = next(line for line in logged if line["event"] == "sink write failed: retrying")
    assert retried["attempt"] == 1, retried
    assert writer.down is None and writer.checkpoint == (events[-1].segment_id, events[-1].position)
    assert asyncio.run(stored_changes(dsn)) == len(events)
    assert seconds < 30, seconds


@pytest.mark.parametrize("scheme", ["clickhouse", "postgresql"])
def test_connecting_to_a_server_that_never_answers_is_cut_too(returns_changes, tmp_path, scheme) -> None:  # noqa: ANN001
    corpus, _ = returns_changes
    server = SilentServer()
    get_logger("test")

    async def run() -> tuple[list[dict], Writer, float]:
        writer = writer_for(f"{scheme}://default@127.0.0.1:{server.port}/default", corpus, tmp_path)
        started = time.monotonic()
        with structlog.testing.capture_logs() as logged:
            await writer.start()
        return logged, writer, time.monotonic() - started

    try:
        logged, writer, seconds = asyncio.run(run())
    finally:
        server.close()
    events_logged = [line["event"] for line in logged]
    assert CONNECT_CUT in events_logged, events_logged
    assert writer.down is ErrorClass.TRANSIENT, events_logged  # down, probed later: not stuck
    assert seconds < 20, seconds  # the drivers alone wait 300 s (ClickHouse), 60 s (asyncpg)


def connections_to(port: int) -> int:
    """This process's established TCP connections to ``port`` on 127.0.0.1."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().name
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
            count += 1
    return count


def test_a_clickhouse_connection_given_up_before_its_socket_exists_gives_way_to_the_next() -> None:
    """A connection being made to a server that does not answer the handshake (its SYN dropped) has
    no socket to cut: the writer cancels the attempt (``cut``), and the next one is made. The driver's
    thread of the first goes on until its connect timeout; when the server answers it meanwhile, that
    late connection is closed, not kept beside the next attempt's (nor written through)."""
    if not can_drop_packets():
        pytest.skip("dropping a connection's packets needs iptables and root")
    dsn = ensure_services(["clickhouse"])["clickhouse"]
    port = urlsplit(dsn).port
    assert port is not None
    syn = ["-o", "lo", "-p", "tcp", "--dport", str(port), "--syn", "-j", "DROP"]

    async def run() -> None:
        sink = ClickHouseSink(dsn, name="given-up")
        subprocess.run(["iptables", "-I", "OUTPUT", *syn], check=True, capture_output=True)
        try:
            attempt = asyncio.ensure_future(sink.connect())
            await asyncio.sleep(0.5)
            cut(sink, attempt)
            with pytest.raises(asyncio.CancelledError):
                await attempt
        finally:
            subprocess.run(["iptables", "-D", "OUTPUT", *syn], check=False, capture_output=True)
        await sink.connect()
        client = sink.client
        assert client is not None
        # The first attempt's SYN is sent again 1 s after the first one and answered now, while the
        # sink's connection runs a query: the late one must leave that connection alone.
        assert await asyncio.to_thread(client.execute, "SELECT sleep(3)") == [(0,)]
        await asyncio.sleep(1)
        assert connections_to(port) == 1
        assert sink.client is client
        assert await sink.checkpoint("node1") is None  # the connection kept works
        await sink.close()
        assert connections_to(port) == 0

    asyncio.run(run())
