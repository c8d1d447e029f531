"""A single-producer, single-consumer ring buffer of messages in shared memory.

Parser workers publish encoded batches into one ring per writer; a full ring makes the producer
wait (backpressure: a slow sink slows reading, memory never grows). Each message is a 4-byte
length and its bytes, wrapping around the end of the buffer.

Layout of the shared block: ``written`` (u64, total bytes ever written), ``read`` (u64), ``closed``
(u64), padding to 64 bytes, then ``capacity`` bytes of data. Only the producer moves ``written``
and only the consumer moves ``read``; each is stored after the bytes it publishes (x86-64 makes
stores visible in program order, which is what the handover relies on).
"""

from __future__ import annotations

import struct
import time
from multiprocessing import shared_memory
from pathlib import Path

HEADER = 64
_U64 = struct.Struct("<Q")
_LEN = struct.Struct("<I")


RING_PREFIX = "cdcfast-"


def ring_name(owner_pid: int, worker: int, sink: str) -> str:
    """``cdcfast-<supervisor pid>-<parser>-<sink>``: whose ring it is, for operators and for cleanup."""
    return f"{RING_PREFIX}{owner_pid}-{worker}-{sink}"


def remove_stale_rings() -> list[str]:
    """Unlink rings whose supervisor is gone (killed together with its resource tracker, which would
    otherwise have unlinked them). Returns their names."""
    removed = []
    for path in Path("/dev/shm").glob(RING_PREFIX + "*"):
        try:
            owner = int(path.name[len(RING_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if not Path(f"/proc/{owner}").exists():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


class RingClosed(Exception):
    """The other side closed the ring."""


class Ring:
    def __init__(self, name: str | None = None, capacity: int = 64 << 20, create: bool = False) -> None:
        if create:
            self.shm = shared_memory.SharedMemory(name=name, create=True, size=HEADER + capacity)
            self.capacity = capacity
        else:
            self.shm = shared_memory.SharedMemory(name=name)
            self.capacity = self.shm.size - HEADER
        buf = self.shm.buf
        assert buf is not None
        self.buf: memoryview = buf
        if create:
            self.buf[:HEADER] = bytes(HEADER)
        self.name = self.shm.name
        self.owner = create

    # -- counters ---------------------------------------------------------------------------
    def _get(self, offset: int) -> int:
        return _U64.unpack_from(self.buf, offset)[0]

    def _set(self, offset: int, value: int) -> None:
        _U64.pack_into(self.buf, offset, value)

    @property
    def used(self) -> int:
        return self._get(0) - self._get(8)

    @property
    def closed(self) -> bool:
        return self._get(16) != 0

    def close_writing(self) -> None:
        """Tell the consumer no more messages will come."""
        self._set(16, 1)

    # -- copying with wrap-around ----------------------------------------------------------
    def _write(self, position: int, data: bytes | memoryview) -> None:
        start = position % self.capacity
        first = min(len(data), self.capacity - start)
        self.buf[HEADER + start : HEADER + start + first] = data[:first]
        if first < len(data):
            self.buf[HEADER : HEADER + len(data) - first] = data[first:]

    def _read(self, position: int, length: int) -> bytes:
        start = position % self.capacity
        first = min(length, self.capacity - start)
        out = bytes(self.buf[HEADER + start : HEADER + start + first])
        if first < length:
            out += bytes(self.buf[HEADER : HEADER + length - first])
        return out

    # -- producer ---------------------------------------------------------------------------
    def put(self, message: bytes, timeout: float | None = None, alive: object = None) -> None:
        """Append a message, waiting while the ring is full (``timeout`` None: forever)."""
        need = 4 + len(message)
        if need > self.capacity:
            raise ValueError(f"message of {len(message)} bytes does not fit a ring of {self.capacity}")
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0001
        while self.capacity - self.used < need:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("ring full")
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
        written = self._get(0)
        self._write(written, _LEN.pack(len(message)))
        self._write(written + 4, message)
        self._set(0, written + need)

    # -- consumer ---------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> bytes | None:
        """The next message; None on timeout. Raises :class:`RingClosed` once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0001
        while self._get(0) == self._get(8):
            if self.closed and self._get(0) == self._get(8):
                raise RingClosed()
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
        read = self._get(8)
        (length,) = _LEN.unpack(self._read(read, 4))
        message = self._read(read + 4, length)
        self._set(8, read + 4 + length)
        return message

    def close(self) -> None:
        del self.buf
        self.shm.close()
        if self.owner:
            self.shm.unlink()
