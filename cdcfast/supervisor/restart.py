"""When to restart the pipeline after a child failed, and when to give up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartPolicy:
    """Doubling delays for real failures (a crash loop slows down), a fixed short delay for children
    killed from outside (kill -9, the OOM killer: that says nothing about the next attempt).
    ``give_up_after`` real failures in a row without progress ends the run (None: never)."""

    give_up_after: int | None
    base: float = 1.0
    cap: float = 30.0
    failures: int = 0
    delay: float = 0.0

    def after_failure(self, killed: bool, made_progress: bool) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if made_progress:  # a failure after progress is not a crash loop: count anew
            self.failures, self.delay = 0, 0.0
        if killed:
            return self.base
        self.failures += 1
        if self.give_up_after is not None and self.failures >= self.give_up_after:
            return None
        self.delay = self.base if self.delay == 0.0 else min(self.delay * 2, self.cap)
        return self.delay
