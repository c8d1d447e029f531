"""The pipeline processes' collector: off by allocation counts, run now and then, back on at the end."""

from __future__ import annotations

import gc
import weakref

from cdcfast.supervisor.collector import Collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def cyclic_garbage() -> weakref.ref:
    return weakref.ref(Node())


def test_cyclic_garbage_waits_for_the_next_collection_then_goes() -> None:
    assert gc.isenabled()
    collector = Collector(every=3600)
    try:
        assert not gc.isenabled()
        garbage = cyclic_garbage()
        made = [[n] for n in range(100_000)]  # allocations that would have triggered the automatic collector
        assert len(made) == 100_000
        collector.now_and_then()  # not due yet
        assert garbage() is not None
        collector.every = 0
        collector.now_and_then()
        assert garbage() is None
    finally:
        collector.resume()
    assert gc.isenabled()


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    try:
        collector = Collector()
        collector.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
