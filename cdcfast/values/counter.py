"""Counter cells: the counter context (format reference §6.5).

A logged counter cell is **not** a delta: it is the leading replica's shard after the write,
``(its CounterId, new clock, its cumulative count)``. Deriving a delta needs the previous count of
that shard.

Layout: i16 ``h`` (number of header entries; negative in legacy contexts, use ``|h|``), ``|h|``
i16 shard indexes (a global shard ``i`` is stored as ``i - 32768``, a legacy local one as ``i``;
shards not listed are legacy "remote" ones), then 32-byte shards: 16-byte CounterId, i64 clock,
i64 count.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Literal, NamedTuple

import msgspec

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values.codec import Codec, decode_error, encode_error, require_int

I16_MIN, I16_MAX = -(2**15), 2**15 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
GLOBAL_OFFSET = -32768
SHARD_SIZE = 32
_SHARD = struct.Struct(">16sqq")


class CounterShard(NamedTuple):
    """One shard: ``(counter_id, clock, count)``; ``count`` is cumulative for that CounterId."""

    counter_id: uuid.UUID
    clock: int
    count: int  # type: ignore[assignment]  # Cassandra's name; it hides tuple.count(), which no one needs here


class CounterContext(msgspec.Struct, frozen=True):
    """A decoded counter context.

    ``header`` keeps the stored i16 header entries in order (global shard ``i`` as ``i - 32768``) and
    ``negative_header`` the sign of the stored entry count, so that encoding gives the same bytes back.
    """

    shards: tuple[CounterShard, ...]
    header: tuple[int, ...] = ()
    negative_header: bool = False

    @classmethod
    def single(cls, counter_id: uuid.UUID, clock: int, count: int) -> CounterContext:
        """One global shard: what a replica leading a counter write logs."""
        return cls(shards=(CounterShard(counter_id, clock, count),), header=(GLOBAL_OFFSET,))

    @property
    def global_indexes(self) -> frozenset[int]:
        return frozenset(entry - GLOBAL_OFFSET for entry in self.header if entry < 0)

    @property
    def local_indexes(self) -> frozenset[int]:
        return frozenset(entry for entry in self.header if entry >= 0)

    def shard_kind(self, index: int) -> Literal["global", "local", "remote"]:
        if index in self.global_indexes:
            return "global"
        if index in self.local_indexes:
            return "local"
        return "remote"

    def total(self) -> int:
        """Sum of all shard counts (Cassandra's ``CounterContext.total``; exact, no 64-bit wrap)."""
        return sum(shard.count for shard in self.shards)


def _decode_counter(ctype: CqlType, data: bytes) -> CounterContext:
    if len(data) < 2:
        raise decode_error(ctype, data, "needs a 2-byte header count")
    stored = int.from_bytes(data[:2], "big", signed=True)
    entries = abs(stored)
    body_start = 2 + 2 * entries
    if len(data) < body_start:
        raise decode_error(
            ctype, data, f"a header of {entries} entries needs {2 * entries} bytes, only {len(data) - 2} remain", 2
        )
    body = len(data) - body_start
    if body % SHARD_SIZE:
        raise decode_error(ctype, data, f"{body} bytes of shards is not a multiple of {SHARD_SIZE}", body_start)
    shard_count = body // SHARD_SIZE
    header = struct.unpack(f">{entries}h", data[2:body_start])
    for position, entry in enumerate(header):
        index = entry - GLOBAL_OFFSET if entry < 0 else entry
        if index >= shard_count:
            raise decode_error(
                ctype,
                data,
                f"header entry {position} names shard index {index}, but there are {shard_count} shards",
                2 + 2 * position,
            )
    shards = []
    for offset in range(body_start, len(data), SHARD_SIZE):
        raw_id, clock, count = _SHARD.unpack_from(data, offset)
        shards.append(CounterShard(uuid.UUID(bytes=raw_id), clock, count))
    return CounterContext(shards=tuple(shards), header=tuple(header), negative_header=stored < 0)


def _encode_counter(ctype: CqlType, value: Any) -> bytes:
    if not isinstance(value, CounterContext):
        raise encode_error(ctype, f"expected a CounterContext, got {type(value).__name__}")
    entries = len(value.header)
    require_int(ctype, entries, 0, I16_MAX, "header entry count")
    for entry in value.header:
        index = entry - GLOBAL_OFFSET if entry < 0 else entry
        require_int(ctype, entry, I16_MIN, I16_MAX, "header entry")
        if index >= len(value.shards):
            raise encode_error(ctype, f"header entry {entry} names shard {index}, there are {len(value.shards)}")
    parts = [
        (-entries if value.negative_header else entries).to_bytes(2, "big", signed=True),
        struct.pack(f">{entries}h", *value.header),
    ]
    for shard in value.shards:
        if not isinstance(shard.counter_id, uuid.UUID):
            raise encode_error(ctype, f"counter id must be a uuid.UUID, not {type(shard.counter_id).__name__}")
        clock = require_int(ctype, shard.clock, I64_MIN, I64_MAX, "clock")
        count = require_int(ctype, shard.count, I64_MIN, I64_MAX, "count")
        parts.append(_SHARD.pack(shard.counter_id.bytes, clock, count))
    return b"".join(parts)


CODECS: dict[str, Codec] = {"counter": Codec(_decode_counter, _encode_counter)}
