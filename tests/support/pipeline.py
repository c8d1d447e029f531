"""``cdcfast supervise`` command lines for tests: local metrics port, fast polling, node1."""

from __future__ import annotations

import sys
from pathlib import Path


def supervise_command(
    cdc_raw: Path,
    schema: Path,
    *sinks: str,
    state: Path | None = None,
    until_idle: bool = False,
    poll: float = 0.2,
    extra: tuple[str, ...] = (),
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "cdcfast.cli",
        "supervise",
        "--cdc-raw",
        str(cdc_raw),
        "--schema",
        str(schema),
        "--node",
        "node1",
        "--poll-interval",
        str(poll),
        "--metrics-addr",
        "127.0.0.1:0",
        *extra,
    ]
    if state is not None:
        command += ["--state-dir", str(state)]
    if until_idle:
        command.append("--until-idle")
    for sink in sinks:
        command += ["--sink", sink]
    return command


def timescale_dsn(postgresql_dsn: str) -> str:
    """The same database, named as a TimescaleDB sink."""
    return "timescaledb://" + postgresql_dsn.split("://", 1)[1]
