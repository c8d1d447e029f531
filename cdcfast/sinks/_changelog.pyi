"""Typed surface of cdcfast/sinks/_changelog.pyx (change-log rows' JSON rendered in one compiled pass)."""

from collections.abc import Callable, Container, Sequence
from typing import Any

from cdcfast.events import ChangeEvent

class TableRender:
    def __init__(
        self,
        table_codec: Any,
        kinds: Sequence[str],
        raw_json: Callable[[Any], Callable[[bytes], Any]],
        json_columns: Container[str],
    ) -> None: ...

class BatchRender:
    def __init__(
        self, table: TableRender, memo: dict[str, dict[Any, Any]], source: str, record: Callable[..., Any]
    ) -> None: ...
    def row(self, event: ChangeEvent) -> Any: ...
