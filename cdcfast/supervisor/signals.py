"""Signals in parser and writer processes.

Children leave SIGTERM and SIGINT to the supervisor: a Ctrl-C or a service manager stopping the
whole process group must not cut a writer off mid-batch; the supervisor drains them in order.
And children die with the supervisor: if it is killed (kill -9, the OOM killer), orphans would keep
holding rings and sink connections while a restarted supervisor starts its own.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def become_child_process() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before the line above (not `== 1`: it may be PID 1)
        os._exit(1)
