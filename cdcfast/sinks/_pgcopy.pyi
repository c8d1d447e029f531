"""Typed surface of cdcfast/sinks/_pgcopy.pyx (change-log rows in PostgreSQL's binary COPY format)."""

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
