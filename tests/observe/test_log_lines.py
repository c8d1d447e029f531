"""Log lines of the supervisor's children share one stderr: each line must reach it whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import sys
from cdcfast.log import get_logger
log = get_logger("writer", sink="null")
for n in range(int(sys.argv[1])):
    log.info("batch written", events=n, padding="x" * 150)
"""


def test_lines_of_processes_logging_at_once_never_mix() -> None:
    """Four processes log 3,000 lines each into one pipe, unbuffered (PYTHONUNBUFFERED=1, as in
    containers): every line read back is one whole JSON object."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    read, write = os.pipe()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, "3000"], stderr=write, env=env) for _ in range(4)]
    os.close(write)
    with os.fdopen(read) as lines:
        records = [json.loads(line) for line in lines]  # a mixed line fails here
    assert all(child.wait(60) == 0 for child in children)
    assert len(records) == 4 * 3000
    assert all(r["event"] == "batch written" and r["component"] == "writer" for r in records)
