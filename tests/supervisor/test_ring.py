"""The shared-memory ring: order, wrap-around, backpressure, across real processes."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import time

import pytest

from cdcfast.supervisor.ring import Ring, RingClosed


def produce(name: str, count: int, slow: float) -> None:
    ring = Ring(name)
    for i in range(count):
        ring.put(hashlib.sha256(str(i).encode()).digest() * (1 + i % 97))
        if slow:
            time.sleep(slow)
    ring.close_writing()
    ring.close()


def test_messages_cross_processes_in_order_with_wraparound() -> None:
    ring = Ring(capacity=10_000, create=True)  # far smaller than the traffic: it wraps many times
    child = mp.get_context("spawn").Process(target=produce, args=(ring.name, 3000, 0.0))
    child.start()
    received = []
    while True:
        try:
            message = ring.get(timeout=10)
        except RingClosed:
            break
        assert message is not None, "producer stalled"
        received.append(message)
        assert ring.used <= ring.capacity
    child.join(10)
    ring.close()
    assert received == [hashlib.sha256(str(i).encode()).digest() * (1 + i % 97) for i in range(3000)]


def test_full_ring_blocks_the_producer() -> None:
    ring = Ring(capacity=1000, create=True)
    ring.put(b"x" * 500)
    with pytest.raises(TimeoutError):
        ring.put(b"y" * 600, timeout=0.05)
    assert ring.get() == b"x" * 500
    ring.put(b"y" * 600, timeout=0.05)
    assert ring.get() == b"y" * 600
    assert ring.get(timeout=0.01) is None
    with pytest.raises(ValueError, match="does not fit"):
        ring.put(b"z" * 2000)
    ring.close()
