"""The cyclic garbage collector of the pipeline's processes, run now and then instead of by
allocation counts.

Change events hold no cycles: reference counting frees them. But a batch makes tens of thousands of
lists (each event's key, clustering and cells), and the collector, triggered by allocation counts,
scanned every event still waiting again and again: 40% of the null writer's time, decoding its
rings. Cyclic garbage made meanwhile (exceptions, drivers' internals) waits a few seconds instead.
"""

from __future__ import annotations

import gc
import time


class Collector:
    """Switches the automatic collector off for this process; :meth:`now_and_then` collects when
    ``every`` seconds have passed since the last time; :meth:`resume` switches it back on."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.was_enabled = gc.isenabled()
        gc.disable()
        self.last = time.monotonic()

    def now_and_then(self) -> None:
        if time.monotonic() - self.last >= self.every:
            gc.collect()
            self.last = time.monotonic()

    def resume(self) -> None:
        if self.was_enabled:
            gc.enable()
