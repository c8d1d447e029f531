"""Random but valid CQL values for ``cdcfast generate``, serialized with the codecs of :mod:`cdcfast.values`.

:class:`ValueFactory` draws a Python value for any :class:`~cdcfast.commitlog.cqltypes.CqlType` the
schema uses and serializes it with :func:`cdcfast.values.encode`, so every generated value is one
cdcfast (and Cassandra) decodes. Set elements and map keys are written in the element type's
comparator order without duplicates, as Cassandra stores them (:func:`comparator_key`); when that
order is not known here (uuid, tuple, nested collection keys), such collections get one element.

Values depend on the factory's random generator only, never on a write timestamp: the workload
builds the same values again at another time to check its byte templates (see ``workload.py``).
"""

from __future__ import annotations

import decimal
import ipaddress
import random
import string
import struct
import uuid
from collections.abc import Callable
from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values import Duration, encode
from cdcfast.values.counter import CounterContext, CounterShard

GREGORIAN_OFFSET = 0x01B21DD213814000  # 100 ns intervals from 1582-10-15 to 1970-01-01
VALUE_EPOCH_MS = 1_767_225_600_000  # 2026-01-01: timestamps, dates and timeuuids are drawn around it
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu lisboa porto oslo wien kyiv café "
    "naïve straße señor 東京 서울 مرحبا привет ünïcödé"
).split()
ASCII_WORDS = [w for w in WORDS if w.isascii()]
GIVEN = "ana bo chen dara eli fatima goran hana ivan jun kofi lena mia nils olga pedro rui sara tomas zoe".split()
FAMILY = "costa silva tanaka novak haddad okafor larsen kim dubois moreau rossi weber ivanova singh".split()
SORTABLE_BYTES = frozenset({"ascii", "text", "blob", "inet", "boolean", "custom"})
SIGNED_INTS = frozenset({"tinyint", "smallint", "int", "bigint", "timestamp", "time", "varint", "counter"})

ElementKey = Callable[[bytes], Any]


def comparator_key(ctype: CqlType) -> ElementKey | None:
    """A sort key over serialized values of ``ctype`` giving Cassandra's comparator order, or None.

    Equal keys mean Cassandra sees equal elements (e.g. decimals 1.0 and 1.00), which a set or a
    map keeps once."""
    kind = ctype.kind
    if kind in SORTABLE_BYTES:
        return bytes
    if kind in SIGNED_INTS:
        return lambda raw: int.from_bytes(raw, "big", signed=True)
    if kind == "date":
        return lambda raw: int.from_bytes(raw, "big")
    if kind in ("float", "double"):
        fmt = ">f" if kind == "float" else ">d"
        return lambda raw: struct.unpack(fmt, raw)[0]  # finite, never -0.0: see ValueFactory.scalar
    if kind == "decimal":
        return lambda raw: decimal.Decimal(int.from_bytes(raw[4:], "big", signed=True)).scaleb(
            -int.from_bytes(raw[:4], "big", signed=True)
        )
    if kind == "timeuuid":
        return timeuuid_order
    return None


def timeuuid_order(raw: bytes) -> int:
    """TimeUUIDType's order as far as generated values need it: by the 60-bit time (generated
    timeuuids that share a time are kept once)."""
    high = ((raw[6] & 0x0F) << 56) | (raw[7] << 48)
    return high | (int.from_bytes(raw[4:6], "big") << 32) | int.from_bytes(raw[:4], "big")


def time_uuid(millis: int, sequence: int, node: int) -> uuid.UUID:
    """A version 1 UUID at ``millis`` (plus ``sequence`` 100 ns ticks) with a fixed clock sequence and node."""
    ticks = millis * 10_000 + sequence + GREGORIAN_OFFSET
    time_low = ticks & 0xFFFFFFFF
    time_mid = (ticks >> 32) & 0xFFFF
    time_hi = ((ticks >> 48) & 0x0FFF) | 0x1000
    clock_seq = (node >> 48) & 0x3FFF | 0x8000
    fields = (time_low << 96) | (time_mid << 80) | (time_hi << 64) | (clock_seq << 48)
    return uuid.UUID(int=fields | (node & (2**48 - 1)))


class ValueFactory:
    """Draws valid values of any CQL type from ``rng``; ``encoded`` gives their serialized bytes."""

    def __init__(self, rng: random.Random, max_elements: int = 4) -> None:
        self.rng = rng
        self.max_elements = max_elements
        self.node = rng.getrandbits(62)  # timeuuid clock sequence + node of this "writer"

    # -- text helpers ------------------------------------------------------------------------------
    def words(self, count: int, ascii_only: bool = False) -> str:
        pool = ASCII_WORDS if ascii_only else WORDS
        return " ".join(self.rng.choice(pool) for _ in range(count))

    def text_for(self, column: str, ascii_only: bool = False) -> str:
        """Text that looks like what a column of that name holds (names, emails, codes), else words."""
        rng = self.rng
        lowered = column.lower()
        if "email" in lowered:
            return f"{rng.choice(GIVEN)}.{rng.choice(FAMILY)}{rng.randint(0, 999)}@example.com"
        if "name" in lowered:
            return f"{rng.choice(GIVEN).title()} {rng.choice(FAMILY).title()}"
        if "ssn" in lowered:
            return f"{rng.randint(100, 899):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        if "phone" in lowered:
            return f"+1-{rng.randint(200, 999)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
        return self.words(rng.randint(1, 4), ascii_only)

    def padding(self, size: int) -> str:
        """``size`` bytes of ASCII text, for row-size padding."""
        letters = string.ascii_letters + string.digits + " "
        chunk = "".join(self.rng.choice(letters) for _ in range(min(size, 64)))
        return (chunk * (size // max(len(chunk), 1) + 1))[:size]

    def timeuuid(self) -> uuid.UUID:
        millis = VALUE_EPOCH_MS + self.rng.randint(-86_400_000 * 30, 86_400_000 * 30)
        return time_uuid(millis, self.rng.randrange(10_000), self.node)

    # -- values ------------------------------------------------------------------------------------
    def value(self, ctype: CqlType, column: str = "") -> Any:
        """A Python value of ``ctype`` that :func:`cdcfast.values.encode` accepts."""
        kind = ctype.kind
        if kind in ("list", "set"):
            return self.collection(ctype)
        if kind == "map":
            return self.mapping(ctype)
        if kind == "tuple":
            return tuple(self.value(t) if self.rng.random() > 0.1 else None for t in ctype.params)
        if kind == "udt":
            return {
                name: (self.value(t, name) if self.rng.random() > 0.1 else None)
                for name, t in zip(ctype.field_names, ctype.params)
            }
        if kind == "vector":
            return [self.value(ctype.params[0]) for _ in range(ctype.dimension)]
        return self.scalar(ctype, column)

    def scalar(self, ctype: CqlType, column: str = "") -> Any:
        rng = self.rng
        kind = ctype.kind
        if kind == "text":
            return self.text_for(column)
        if kind == "ascii":
            return self.text_for(column, ascii_only=True)
        if kind in ("blob", "custom"):
            return rng.randbytes(rng.randint(1, 24))
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "tinyint":
            return rng.randint(-128, 127)
        if kind == "smallint":
            return rng.randint(-(2**15), 2**15 - 1)
        if kind == "int":
            return rng.randint(0, 1000) if rng.random() < 0.5 else rng.randint(-(2**31), 2**31 - 1)
        if kind == "bigint":
            return rng.randint(0, 10**6) if rng.random() < 0.5 else rng.randint(-(2**63), 2**63 - 1)
        if kind == "varint":
            bits = rng.choice((8, 40, 64, 100))
            return rng.randint(-(2**bits), 2**bits)
        if kind in ("float", "double"):
            value = round(rng.uniform(-1e6, 1e6), rng.randint(0, 6))
            return value if value != 0 else 0.0  # never -0.0 (comparator_key assumes it)
        if kind == "decimal":
            return decimal.Decimal(rng.randint(-(10**12), 10**12)).scaleb(-rng.randint(0, 8))
        if kind == "date":
            return VALUE_EPOCH_MS // 86_400_000 + rng.randint(-40_000, 3_000)
        if kind == "time":
            return rng.randint(0, 86_400 * 10**9 - 1)
        if kind == "timestamp":
            return VALUE_EPOCH_MS + rng.randint(-(10**10), 10**9)
        if kind == "duration":
            sign = -1 if rng.random() < 0.1 else 1
            months, days, nanos = rng.randint(0, 24), rng.randint(0, 60), rng.randint(0, 86_400 * 10**9)
            return Duration(sign * months, sign * days, sign * nanos)
        if kind == "uuid":
            return uuid.UUID(bytes=rng.randbytes(16), version=4)
        if kind == "timeuuid":
            return self.timeuuid()
        if kind == "inet":
            if rng.random() < 0.8:
                return ipaddress.IPv4Address(rng.getrandbits(32))
            return ipaddress.IPv6Address(rng.getrandbits(128))
        if kind == "counter":
            return self.counter(rng.randint(1, 10**6), 1)
        if kind == "empty":
            return b""
        raise ValueError(f"no generator for CQL type {ctype.cql()}")

    def counter(self, count: int, clock: int, counter_id: uuid.UUID | None = None) -> CounterContext:
        """A counter context as a logged counter cell holds it: the leader's global shard."""
        shard = CounterShard(counter_id or uuid.UUID(int=self.node), clock, count)
        return CounterContext(shards=(shard,), header=(-32768,), negative_header=False)

    def elements(self, ctype: CqlType, count: int, column: str = "") -> list[tuple[bytes, Any]]:
        """Up to ``count`` distinct (serialized, value) elements of ``ctype`` in comparator order."""
        key = comparator_key(ctype)
        if key is None:
            count = min(count, 1)
        found: dict[Any, tuple[bytes, Any]] = {}
        for _ in range(count):
            value = self.value(ctype, column)
            raw = encode(ctype, value)
            found.setdefault(key(raw) if key is not None else raw, (raw, value))
        return [found[k] for k in (sorted(found) if key is not None else found)]

    def collection(self, ctype: CqlType) -> list[Any]:
        count = self.rng.randint(0, self.max_elements)
        element = ctype.params[0]
        if ctype.kind == "set":
            return [value for _, value in self.elements(element, count)]
        return [self.value(element) for _ in range(count)]

    def mapping(self, ctype: CqlType) -> list[tuple[Any, Any]]:
        keys = self.elements(ctype.params[0], self.rng.randint(0, self.max_elements))
        return [(value, self.value(ctype.params[1])) for _, value in keys]

    def encoded(self, ctype: CqlType, column: str = "") -> bytes:
        return encode(ctype, self.value(ctype, column))
