"""Typed surface of cdcfast/sinks/_pgcopy.pyx (change-log rows in PostgreSQL's binary COPY format)."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

COPY_HEADER: bytes
COPY_TRAILER: bytes

def change_row_copy(
    event_id: bytes,
    op: str,
    ts: int,
    segment_id: int,
    position: int,
    source: str,
    key: bytes,
    cells: bytes | None,
    deletion_ts: int | None,
    range_: bytes | None,
) -> bytes: ...

class Unencodable(Exception): ...

def state_kinds(sqls: Iterable[str]) -> bytes | None: ...
def state_row_copy(kinds: bytes, values: Sequence[Any]) -> bytes: ...
def state_rows_copy(
    kinds: bytes,
    plans: Iterable[Any],
    row_values: Callable[[Any, Any, dict[str, Any]], list[Any]],
    codec: Any,
    memo: dict[str, Any],
    rest: list[tuple[bytes, bytes, Any, bytes]],
) -> Iterator[bytes]: ...
