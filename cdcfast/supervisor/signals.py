"""Signals in parser and writer processes.

Children leave SIGTERM and SIGINT to the supervisor: a Ctrl-C or a service manager stopping the
whole process group must not cut a writer off mid-batch; the supervisor drains them in order.
And children die with the supervisor: if it is killed (kill -9, the OOM killer), orphans would keep
holding rings and sink connections while a restarted supervisor starts its own.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def become_child_process() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The supervisor may have died while this process was still starting, before the line above.
    # Compare with its pid as known at spawn time: not with `1` (it may be PID 1 in a container, and
    # orphans may go to a subreaper), nor with getppid() read here (already the new parent then).
    supervisor = multiprocessing.parent_process()
    if supervisor is not None and os.getppid() != supervisor.pid:
        os._exit(1)
