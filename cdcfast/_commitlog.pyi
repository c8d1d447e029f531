"""Typed surface of the Cython decoder (cdcfast/_commitlog.pyx)."""

from typing import Any

ROW: int
STATIC_ROW: int
RT_BOUND: int
RT_BOUNDARY: int
ERROR_MESSAGES: dict[int, str]

def marker_crc(segment_id: int, marker_offset: int) -> int: ...
def crc_of(data: Any, crc: int = 0) -> int: ...
def walk_sync_markers(
    data: Any, segment_id: int, header_len: int, file_len: int, compressed: bool
) -> tuple[list[tuple[int, int]], str | tuple[str, int]]: ...

class DecoderSchema:
    tables: list[Any]
    def __init__(self, schema: Any) -> None: ...

class Decoder:
    issues: list[tuple[str, int, int, str, int]]
    unknown_tables: dict[bytes, int]
    verify_only: bool
    mutation_bytes: int
    mutation_count: int
    pending_mutations: int
    pending_bytes: int
    def __init__(self, schema: DecoderSchema) -> None: ...
    def take(self) -> tuple[bytes, bytes, bytes, bytes, bytes]: ...
    def take_issues(self) -> list[tuple[str, int, int, str, int]]: ...
    def decode_region(
        self,
        data: Any,
        start: int,
        end: int,
        logical_base: int,
        segment_id: int,
        version: int,
        messaging: int,
        limit: int,
        after: int = 0,
    ) -> tuple[int, bool]: ...
