"""CQL types as Cassandra writes them in ``system_schema``: parsing, printing, wire properties.

A type string such as ``frozen<map<text, frozen<list<int>>>>`` is parsed into a :class:`CqlType`
tree. Printing the tree gives back Cassandra's own spelling (``AbstractType.asCQL3Type``), which is
what the reference decoding prints. The two wire properties the decoder needs are
:attr:`CqlType.fixed_length` (no length prefix on the wire) and :attr:`CqlType.is_complex`
(one cell per element).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cdcfast.errors import SchemaError

# Bytes on the wire for the fixed-length types (format reference §6.1); the rest are prefixed.
FIXED_LENGTHS: dict[str, int] = {
    "boolean": 1,
    "int": 4,
    "float": 4,
    "bigint": 8,
    "double": 8,
    "timestamp": 8,
    "uuid": 16,
    "timeuuid": 16,
    "empty": 0,
}

SCALARS = frozenset(
    {
        "ascii",
        "bigint",
        "blob",
        "boolean",
        "counter",
        "date",
        "decimal",
        "double",
        "duration",
        "float",
        "inet",
        "int",
        "smallint",
        "text",
        "time",
        "timestamp",
        "timeuuid",
        "tinyint",
        "uuid",
        "varint",
        "empty",
    }
)
COLLECTIONS = frozenset({"list", "set", "map"})
_ALIASES = {"varchar": "text"}


@dataclass(frozen=True)
class CqlType:
    """One node of a CQL type tree.

    ``kind`` is a scalar name, ``list``/``set``/``map``/``tuple``/``vector``, ``udt`` or
    ``custom``. UDTs carry their keyspace-qualified definition so values can be decoded alone.
    """

    kind: str
    params: tuple[CqlType, ...] = ()
    frozen: bool = False
    name: str = ""  # UDT name, or the quoted class name of a custom type
    field_names: tuple[str, ...] = ()  # UDT fields, in declaration order
    dimension: int = 0  # vector<T, n>

    # -- wire properties -------------------------------------------------------------------
    @property
    def fixed_length(self) -> int:
        """Bytes on the wire when the type has no length prefix, else -1 (format §4.6.6)."""
        if self.kind in FIXED_LENGTHS:
            return FIXED_LENGTHS[self.kind]
        if self.kind == "vector":
            element = self.params[0].fixed_length
            return element * self.dimension if element >= 0 else -1
        return -1

    @property
    def is_complex(self) -> bool:
        """Non-frozen collections and UDTs are stored one cell per element."""
        return not self.frozen and (self.kind in COLLECTIONS or self.kind == "udt")

    @property
    def is_counter(self) -> bool:
        return self.kind == "counter"

    @property
    def is_multicell_udt(self) -> bool:
        return self.kind == "udt" and not self.frozen

    # -- printing --------------------------------------------------------------------------
    def cql(self) -> str:
        """Cassandra's own spelling of this type, e.g. ``frozen<tuple<int, text>>``."""
        if self.kind in SCALARS:
            inner = self.kind
        elif self.kind == "custom":
            inner = self.name
        elif self.kind == "udt":
            inner = self.name
        elif self.kind == "vector":
            inner = f"vector<{self.params[0].cql()}, {self.dimension}>"
        else:
            inner = f"{self.kind}<{', '.join(p.cql() for p in self.params)}>"
        return f"frozen<{inner}>" if self.frozen and self.kind not in ("vector",) else inner

    def __str__(self) -> str:
        return self.cql()


@dataclass
class _Parser:
    text: str
    udts: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]  # name -> (field names, field types)
    pos: int = 0
    resolving: tuple[str, ...] = field(default_factory=tuple)

    def fail(self, what: str) -> SchemaError:
        return SchemaError(f"cannot parse CQL type {self.text!r} at character {self.pos}: {what}")

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def word(self) -> str:
        self.skip_spaces()
        if self.pos < len(self.text) and self.text[self.pos] in "'\"":
            quote = self.text[self.pos]
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                raise self.fail("unterminated quote")
            result = self.text[self.pos : end + 1]
            self.pos = end + 1
            return result
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] in "_."):
            self.pos += 1
        if start == self.pos:
            raise self.fail("expected a type name")
        return self.text[start : self.pos]

    def expect(self, char: str) -> None:
        self.skip_spaces()
        if self.pos >= len(self.text) or self.text[self.pos] != char:
            raise self.fail(f"expected {char!r}")
        self.pos += 1

    def peek(self) -> str:
        self.skip_spaces()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def arguments(self) -> list[CqlType]:
        self.expect("<")
        args = [self.parse(frozen=False)]
        while self.peek() == ",":
            self.pos += 1
            args.append(self.parse(frozen=False))
        self.expect(">")
        return args

    def parse(self, frozen: bool) -> CqlType:
        name = self.word()
        lowered = _ALIASES.get(name.lower(), name.lower())
        if lowered == "frozen":
            self.expect("<")
            inner = self.parse(frozen=True)
            self.expect(">")
            return inner
        if lowered in SCALARS:
            return CqlType(lowered)
        if name[0] in "'\"":
            return CqlType("custom", name=name, frozen=frozen)
        if lowered in COLLECTIONS or lowered == "tuple":
            args = self.arguments()
            expected = {"list": 1, "set": 1, "map": 2}.get(lowered)
            if expected is not None and len(args) != expected:
                raise self.fail(f"{lowered} takes {expected} type argument(s)")
            # Tuples are always frozen; Cassandra prints them as frozen<tuple<...>>.
            return CqlType(lowered, tuple(args), frozen=frozen or lowered == "tuple")
        if lowered == "vector":
            self.expect("<")
            element = self.parse(frozen=False)
            self.expect(",")
            dim = self.word()
            self.expect(">")
            if not dim.isdigit():
                raise self.fail("vector dimension must be a number")
            return CqlType("vector", (element,), frozen=True, dimension=int(dim))
        return self.udt(name, frozen)

    def udt(self, name: str, frozen: bool) -> CqlType:
        if name not in self.udts:
            raise self.fail(f"unknown type {name!r}")
        if name in self.resolving:
            raise self.fail(f"type {name!r} refers to itself")
        field_names, field_types = self.udts[name]
        sub = _Parser("", self.udts, resolving=self.resolving + (name,))
        params = tuple(sub.parse_text(t) for t in field_types)
        return CqlType("udt", params, frozen=frozen, name=name, field_names=tuple(field_names))

    def parse_text(self, text: str) -> CqlType:
        self.text, self.pos = text, 0
        result = self.parse(frozen=False)
        self.skip_spaces()
        if self.pos != len(self.text):
            raise self.fail("unexpected trailing characters")
        return result


def parse_cql_type(text: str, udts: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None) -> CqlType:
    """Parse a ``system_schema`` type string; ``udts`` maps a UDT name to (fields, field types)."""
    return _Parser(text, udts or {}).parse_text(text)
