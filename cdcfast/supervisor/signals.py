"""Children leave SIGTERM and SIGINT to the supervisor: a Ctrl-C or a service manager stopping the
whole process group must not cut a writer off mid-batch; the supervisor drains them in order."""

from __future__ import annotations

import signal


def ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
