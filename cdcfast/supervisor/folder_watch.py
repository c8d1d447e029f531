"""Waking the supervisor as soon as ``cdc_raw`` has news, instead of at its next poll only.

Cassandra makes data durable by rewriting a segment's ``_cdc.idx`` (4.0+) or by moving a finished
segment in (3.x). Linux's inotify reports both; waiting on it takes the poll interval out of every
change's latency. The supervisor still looks at least once per poll interval, so where inotify is
missing (another OS, a network file system, the watch limit reached) nothing changes but latency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import time
from pathlib import Path

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_IGNORED = 0x00008000  # the watch is gone (the folder deleted or unmounted)
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WATCHED = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, name length (the name follows)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1, libc.inotify_add_watch  # noqa: B018 - absent outside Linux
    except (OSError, AttributeError, TypeError):
        return None
    return libc


class FolderWatch:
    """``wait(timeout)``: until an idx is written or a segment arrives in ``folder`` (True), or
    ``timeout`` seconds pass (False). Writes into segments (Cassandra appending) are no news."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.libc = _libc()
        self.fd = -1
        self._watch()

    def _watch(self) -> None:
        if self.libc is None or not self.folder.is_dir():
            return
        fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return
        if self.libc.inotify_add_watch(fd, os.fsencode(self.folder), WATCHED) < 0:
            os.close(fd)
            return
        self.fd = fd

    def wait(self, timeout: float) -> bool:
        if self.fd < 0:
            time.sleep(timeout)
            self._watch()  # the folder may exist by now
            return False
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                break
            news, gone = self._read_events()
            if gone:
                self.close()
                return news
            if news:
                return True
        return False

    def _read_events(self) -> tuple[bool, bool]:
        """(whether any event is news, whether the watch is gone)."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return False, False
        news = gone = False
        offset = 0
        while offset + _EVENT.size <= len(data):
            _, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            gone |= bool(mask & IN_IGNORED)
            arrived = bool(mask & (IN_CREATE | IN_MOVED_TO))
            news |= name.endswith(b".idx") or (name.endswith(b".log") and arrived)
        return news, gone

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
