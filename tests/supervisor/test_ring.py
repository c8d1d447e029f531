"""The shared-memory ring: order, wrap-around, backpressure, across real processes."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdcfast.supervisor.ring import Ring, RingClosed, remove_stale_rings, ring_name


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


def test_batches_never_split_a_mutation() -> None:
    from cdcfast.events import ChangeEvent
    from cdcfast.supervisor.parser import split_at_mutations

    events = [
        ChangeEvent(bytes([i]), "ks", "t", "insert", [b"k"], [], ts=i, segment_id=1, position=100 + i // 3)
        for i in range(20)
    ]
    parts = split_at_mutations(events, 4)
    assert [e for part in parts for e in part] == events
    for a, b in zip(parts, parts[1:]):
        assert a[-1].position != b[0].position
    assert split_at_mutations([], 4) == [[]]


def test_rings_of_a_dead_supervisor_are_removed_and_live_ones_kept() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Ring(ring_name(dead.pid, 0, "pg"), capacity=4096, create=True)
    live = Ring(ring_name(os.getpid(), 0, "pg"), capacity=4096, create=True)
    try:
        removed = remove_stale_rings()
        assert stale.name in removed and live.name not in removed
        assert not Path("/dev/shm", stale.name).exists()
        assert Path("/dev/shm", live.name).exists()
    finally:
        live.close()
        stale.shm.close()
