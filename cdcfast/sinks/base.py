"""What every warehouse sink keeps besides its connection: its table writers, how it follows schema
changes (docs/schema-evolution.md) and the dead letters it stored since the writer last looked."""

from __future__ import annotations

import uuid
from typing import Any

from cdcfast.log import get_logger
from cdcfast.sinks.migrate import RefusedColumns
from cdcfast.sinks.poison import DeadLetter


class WarehouseSink:
    def __init__(self, name: str, dropped_columns: str, auto_migrate: bool, tcp_timeout_seconds: float) -> None:
        """``dropped_columns`` (keep|remove) and ``auto_migrate``: docs/schema-evolution.md.
        ``tcp_timeout_seconds``: how long a connection whose server acknowledges nothing lives
        (:mod:`cdcfast.sinks.tcp`)."""
        self.name = name
        self.tcp_timeout_seconds = tcp_timeout_seconds
        self.writers: dict[tuple[str, str], Any] = {}  # (keyspace, table) -> its table writer
        self.retired: set[uuid.UUID] = set()  # the last schema's dropped tables (the registry says so)
        self.dead_lettered: list[DeadLetter] = []  # stored since the writer last looked (logs, metrics)
        self.dropped_columns = dropped_columns
        self.auto_migrate = auto_migrate
        self.warned: set[tuple[str, ...]] = set()
        self.refused = RefusedColumns(name)

    async def waiting_on(self) -> dict[str, Any] | None:
        """What the write under way waits on, as the server says (None: nothing to ask). Raises if
        the server does not answer."""
        return None

    def abort(self) -> bool:
        """Cut the write's connection: the write under way fails (as transient) soon. False when
        there is no connection to cut (one still being made by a coroutine): the writer cancels
        the work instead."""
        return False

    def warn_once(self, change: tuple[str, ...], message: str, **context: Any) -> None:
        """A schema change this sink does not follow (or follows loudly), logged once per change."""
        if change not in self.warned:
            self.warned.add(change)
            get_logger("migrate", sink=self.name).warning(message, **context)
