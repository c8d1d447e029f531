"""Typed surface of cdcfast/sinks/_merge.pyx (merge planning's per-event loops, compiled)."""

from collections.abc import Callable
from typing import Any

from cdcfast.events import ChangeEvent
from cdcfast.sinks.state import VisibleRow

class BatchKeys:
    pks: list[tuple[bytes, ...]]
    keys: list[bytes | None]
    pk_bytes: dict[tuple[bytes, ...], bytes]
    partitions: dict[bytes, tuple[bytes, ...]]
    partition_level: dict[tuple[bytes, ...], None]
    counts: dict[bytes, int]
    def scope(self, whole_partitions: bool) -> tuple[list[tuple[bytes, ...]], list[bytes]]: ...

def batch_keys(events: list[ChangeEvent]) -> BatchKeys: ...
def new_rows(
    events: list[ChangeEvent],
    keys: BatchKeys,
    stored: dict[tuple[bytes, ...], Any],
    simple: set[str],
    complex_columns: frozenset[str],
    fresh_view: Callable[[Any], tuple[dict[str, Any], dict[str, int], bool] | None],
    plans: dict[tuple[bytes, ...], Any],
    views: dict[tuple[bytes, ...], tuple[dict[str, Any], dict[str, int], bool] | None],
    plan_type: Callable[..., Any],
) -> list[tuple[ChangeEvent, tuple[bytes, ...], bytes | None]]: ...
def simple_event(event: ChangeEvent, simple: set[str], complex_columns: frozenset[str] = ...) -> bool: ...
def new_row(
    pk: tuple[bytes, ...], key: bytes, event: ChangeEvent, static: tuple[dict[str, Any], dict[str, int], bool]
) -> tuple[bytes, VisibleRow, bytes] | None: ...
def apply_events(
    slow: list[tuple[ChangeEvent, tuple[bytes, ...], bytes | None]],
    model: Any,
    load: Callable[[tuple[bytes, ...]], None],
    touched: dict[tuple[bytes, ...], dict[tuple[Any, ...], bytes]],
    row_type: Callable[[], Any],
    counter: Callable[[Any, Any], None],
) -> None: ...
def plan_partitions(
    model: Any,
    stored: dict[tuple[bytes, ...], Any],
    pk_bytes: dict[tuple[bytes, ...], bytes],
    touched: dict[tuple[bytes, ...], dict[tuple[Any, ...], bytes]],
    kept: set[tuple[bytes, ...]],
    blobs_of: dict[tuple[bytes, ...], dict[tuple[Any, ...], bytes]],
    plans: dict[tuple[bytes, ...], Any],
    plan_type: Callable[..., Any],
    encode_partition: Callable[[Any], bytes],
    empty_partition: bytes,
) -> dict[tuple[bytes, ...], tuple[dict[str, Any], dict[str, int], bool]]: ...
