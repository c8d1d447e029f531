"""Observability: the metrics every process records (:mod:`cdcfast.observe.metrics`) and the
supervisor's ``/metrics``, ``/health`` and ``/ready`` endpoint (:mod:`cdcfast.observe.http`)."""

from __future__ import annotations

from cdcfast.observe.http import HealthState, ObserveServer, start_server
from cdcfast.observe.metrics import METRIC_NAMES, LagTracker, mark_dead, setup_multiprocess

__all__ = [
    "METRIC_NAMES",
    "HealthState",
    "LagTracker",
    "ObserveServer",
    "mark_dead",
    "setup_multiprocess",
    "start_server",
]
