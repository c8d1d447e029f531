"""Typed surface of cdcfast/sinks/_merge.pyx (rows planned straight from their event, compiled)."""

from typing import Any

from cdcfast.events import ChangeEvent
from cdcfast.sinks.state import VisibleRow

def simple_event(event: ChangeEvent, simple: set[str], complex_columns: frozenset[str] = ...) -> bool: ...
def new_row(
    pk: tuple[bytes, ...], key: bytes, event: ChangeEvent, static: tuple[dict[str, Any], dict[str, int], bool]
) -> tuple[bytes, VisibleRow, bytes] | None: ...
