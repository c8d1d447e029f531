"""PII/PHI masking of change events, before anything reaches a sink (docs/masking.md).

Rules (``config/masking-rules.yaml``) classify columns, UDT/tuple fields and map keys of tables as
``pii`` or ``phi``; :class:`Masker` rewrites the serialized values of every matching cell, cell path
and primary-key component, keeping each value's CQL type:

* ``hash`` (the default for ``pii``): the 64 hex digits of SHA-256(salt || value);
* ``token`` (the default for ``phi``): ``"tok_"`` + the first 32 hex digits of HMAC-SHA256(key, value);
* ``drop``: the value becomes null (a cell tombstone; a cleared collection; a null field).

``hash`` and ``token`` only apply to text (``text``/``varchar``/``ascii``) leaves, whose masked value
is still text; anything else must be dropped. Both are deterministic: the same value gives the same
output in every table, column and process that shares the secret, so masked keys stay unique and
joins keep working. The secret salt and key come from the environment only (:class:`MaskingSecrets`)
and are never logged, printed or put in an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import ColumnDef, Schema, TableDef
from cdcfast.config import YamlDocument, load_yaml
from cdcfast.errors import CdcfastError, ConfigError
from cdcfast.events import CLEAR, TOMBSTONE, Cell, ChangeEvent
from cdcfast.values import EMPTY, ValueDecodeError, ValueEncodeError, decode, encode

PII, PHI = "pii", "phi"
HASH, TOKEN, DROP = "hash", "token", "drop"
CLASSIFICATIONS = (PII, PHI)
STRATEGIES = (HASH, TOKEN, DROP)
DEFAULT_STRATEGY = {PII: HASH, PHI: TOKEN}
TEXT_KINDS = frozenset({"text", "ascii"})  # varchar is text
TOKEN_PREFIX = "tok_"
TOKEN_HEX_DIGITS = 32
MIN_SECRET_BYTES = 16
ALL_TEXT = "(all text)"

PII_SALT_ENV, PHI_KEY_ENV = "CDCFAST_PII_SALT", "CDCFAST_PHI_KEY"
_SECRET_KEYS = frozenset({"salt", "key", "secret", "pii_salt", "phi_key", "hmac_key", "password", "pepper"})
_SECRETS_GO = (
    f"secrets do not belong in the rules file: set {PII_SALT_ENV} or {PII_SALT_ENV}_FILE (for hash) and "
    f"{PHI_KEY_ENV} or {PHI_KEY_ENV}_FILE (for token) in the environment"
)
_COLLECTIONS = frozenset({"list", "set", "map", "vector"})

AuditKey = tuple[str, str, str, str]  # (table, column, classification, strategy)


class MaskingError(CdcfastError):
    """An event could not be masked (a value that does not decode as its type, a column or UDT field the
    rules' schema does not know in a fully masked table). The event must not be emitted; the message names
    table, column and event position, never a value."""


# -- secrets ----------------------------------------------------------------------------------------------


def _secret_bytes(value: str | bytes | None, name: str) -> bytes | None:
    if value is None:
        return None
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{name}: the secret is {len(raw)} bytes; use at least {MIN_SECRET_BYTES} random bytes "
            "(for example the output of `openssl rand -hex 32`)"
        )
    return raw


def _read_secret_file(variable: str, path: str) -> bytes:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{variable}={path}: not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{variable}={path}: permissions are {mode:04o}; a secret file must be readable by its owner "
                f"only (0600 or stricter): chmod 600 {path}"
            )
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read the secret file: {exc.strerror}") from None
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def _secret_from(environ: Mapping[str, str], variable: str) -> bytes | None:
    direct, path = environ.get(variable), environ.get(f"{variable}_FILE")
    if direct is not None and path is not None:
        raise ConfigError(f"both {variable} and {variable}_FILE are set: set one of them")
    if path is not None:
        return _secret_bytes(_read_secret_file(f"{variable}_FILE", path), f"{variable}_FILE={path}")
    return _secret_bytes(direct, variable)


class MaskingSecrets:
    """The PII salt and the PHI key. Their ``repr`` and ``str`` say only whether each is set."""

    __slots__ = ("_pii_salt", "_phi_key")

    def __init__(self, pii_salt: str | bytes | None = None, phi_key: str | bytes | None = None) -> None:
        self._pii_salt = _secret_bytes(pii_salt, PII_SALT_ENV)
        self._phi_key = _secret_bytes(phi_key, PHI_KEY_ENV)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MaskingSecrets:
        """``CDCFAST_PII_SALT`` / ``CDCFAST_PHI_KEY``, or ``..._FILE`` naming a file of mode 0600 or stricter
        (one trailing newline is ignored)."""
        env = os.environ if environ is None else environ
        secrets = cls()
        secrets._pii_salt = _secret_from(env, PII_SALT_ENV)
        secrets._phi_key = _secret_from(env, PHI_KEY_ENV)
        return secrets

    @property
    def has_salt(self) -> bool:
        return self._pii_salt is not None

    @property
    def has_key(self) -> bool:
        return self._phi_key is not None

    def __repr__(self) -> str:
        def shown(value: bytes | None) -> str:
            return "<redacted>" if value is not None else "<unset>"

        return f"MaskingSecrets(pii_salt={shown(self._pii_salt)}, phi_key={shown(self._phi_key)})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("MaskingSecrets are not pickled: build them in each process with MaskingSecrets.from_env()")


# -- rules ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleInfo:
    """One rule as written: ``target`` is the column selector (``contact.email``) or ``(all text)``."""

    table: str
    target: str
    classification: str
    strategy: str


@dataclass(frozen=True)
class _Action:
    strategy: str
    audit: AuditKey


class _Node:
    """One node of a column's CQL type tree, with what to do to it."""

    __slots__ = ("ctype", "children", "action", "active", "is_text")

    def __init__(self, ctype: CqlType) -> None:
        self.ctype = ctype
        self.children = [_Node(p) for p in ctype.params] if ctype.params else []
        self.action: _Action | None = None
        self.active = False
        self.is_text = ctype.kind in TEXT_KINDS

    def finish(self) -> bool:
        self.active = any([child.finish() for child in self.children]) or self.action is not None
        return self.active

    def leaves(self, label: str, keys: bool) -> Iterator[tuple[str, _Node]]:
        """The leaves below, labelled; map keys only when ``keys`` (a rule on a map covers its values)."""
        if not self.children:
            yield label, self
        elif self.ctype.kind == "map":
            if keys:
                yield from self.children[0].leaves(f"{label}.key", keys)
            yield from self.children[1].leaves(f"{label}.value", keys)
        elif self.ctype.kind == "udt":
            for name, child in zip(self.ctype.field_names, self.children):
                yield from child.leaves(f"{label}.{name}", keys)
        elif self.ctype.kind == "tuple":
            for i, child in enumerate(self.children):
                yield from child.leaves(f"{label}.{i}", keys)
        else:
            yield from self.children[0].leaves(label, keys)


class _TablePlan:
    __slots__ = ("table", "partition_key", "clustering", "columns", "known", "fail_closed", "key_active")

    def __init__(self, table: TableDef, roots: dict[str, _Node], all_text: bool) -> None:
        self.table = table.qualified_name
        for root in roots.values():
            root.finish()
        self.partition_key = [roots[c.name] if roots[c.name].active else None for c in table.partition_key]
        self.clustering = [roots[c.name] if roots[c.name].active else None for c in table.clustering]
        self.key_active = any(n is not None for n in self.partition_key + self.clustering)
        data = [*table.columns, *table.dropped]
        self.columns = {name: roots[name] for name in data if roots[name].active}
        self.known = frozenset(data)
        self.fail_closed = all_text  # a column the schema does not know may hold text: refuse to guess


@dataclass(frozen=True)
class _RuleSpec:
    target: str
    classification: str
    strategy: str
    where: tuple[str | int, ...]  # key path in the YAML document


@dataclass(frozen=True)
class _TableSpec:
    name: str
    all_text: str | None
    rules: tuple[_RuleSpec, ...]
    where: tuple[str | int, ...]


class MaskingRules:
    """Masking rules, validated against a :class:`Schema` (every table, column and field they name must
    exist; a column dropped from the table is accepted, to mask the cells old segments still carry)."""

    def __init__(self, document: Any, schema: Schema, source: str = "<rules>", yaml: YamlDocument | None = None):
        self.source = source
        self._yaml = yaml
        self._specs = self._parse(document)
        self.schema_source = schema.source
        self._plans = self._compile(schema)

    @classmethod
    def load(cls, path: str | Path, schema: Schema) -> MaskingRules:
        document = load_yaml(path)
        return cls(document.data, schema, str(path), document)

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], schema: Schema, source: str = "<rules>") -> MaskingRules:
        return cls(document, schema, source)

    def rebind(self, schema: Schema) -> MaskingRules:
        """The same rules validated and compiled against another schema (after a schema change)."""
        clone = object.__new__(MaskingRules)
        clone.source, clone._yaml, clone._specs = self.source, self._yaml, self._specs
        clone.schema_source = schema.source
        clone._plans = clone._compile(schema)
        return clone

    def describe(self) -> list[RuleInfo]:
        infos = []
        for spec in self._specs:
            if spec.all_text:
                infos.append(RuleInfo(spec.name, ALL_TEXT, spec.all_text, DEFAULT_STRATEGY[spec.all_text]))
            infos.extend(RuleInfo(spec.name, r.target, r.classification, r.strategy) for r in spec.rules)
        return infos

    @property
    def tables(self) -> list[str]:
        return [spec.name for spec in self._specs]

    def _first_using(self, strategy: str) -> RuleInfo | None:
        return next((r for r in self.describe() if r.strategy == strategy), None)

    @property
    def needs_salt(self) -> bool:
        return self._first_using(HASH) is not None

    @property
    def needs_key(self) -> bool:
        return self._first_using(TOKEN) is not None

    def __repr__(self) -> str:
        return f"MaskingRules({self.source!r}, tables={self.tables!r})"

    # -- parsing --------------------------------------------------------------------------------------

    def _error(self, where: tuple[str | int, ...], message: str, key: bool = True) -> ConfigError:
        place = self._yaml.where(where, key=key) if self._yaml is not None else self.source
        return ConfigError(f"{place}: {message}")

    def _check_keys(
        self, mapping: Mapping[Any, Any], allowed: tuple[str, ...], where: tuple[str | int, ...], what: str
    ):
        for key in mapping:
            if str(key).lower() in _SECRET_KEYS:
                hint = " (to classify a map's keys, write a rule for `column.key`)" if key == "key" else ""
                raise self._error((*where, key), f"{what}: {key!r}: {_SECRETS_GO}{hint}")
            if key not in allowed:
                raise self._error((*where, key), f"{what}: unknown key {key!r}; expected {', '.join(allowed)}")

    def _parse(self, document: Any) -> tuple[_TableSpec, ...]:
        if document is None:
            document = {}
        if not isinstance(document, Mapping):
            raise self._error((), "expected a mapping with `tables:` (see docs/masking.md)", key=False)
        self._check_keys(document, ("version", "tables"), (), "top level")
        if document.get("version", 1) != 1:
            raise self._error(("version",), f"version: expected 1, got {document['version']!r}")
        tables = document.get("tables") or {}
        if not isinstance(tables, Mapping):
            raise self._error(("tables",), "tables: expected a mapping of keyspace.table to rules")
        specs = []
        for name, body in tables.items():
            where: tuple[str | int, ...] = ("tables", name)
            if not isinstance(name, str) or name.count(".") != 1 or "" in name.split("."):
                raise self._error(where, f"table {name!r}: expected a keyspace.table name")
            body = body or {}
            if not isinstance(body, Mapping):
                raise self._error(where, f"table {name}: expected a mapping with `columns:` and/or `mask_all_text:`")
            self._check_keys(body, ("columns", "mask_all_text"), where, f"table {name}")
            all_text = body.get("mask_all_text")
            if all_text is not None and all_text not in CLASSIFICATIONS:
                raise self._error(
                    (*where, "mask_all_text"), f"table {name}: mask_all_text: expected pii or phi, got {all_text!r}"
                )
            columns = body.get("columns") or {}
            if not isinstance(columns, Mapping):
                raise self._error((*where, "columns"), f"table {name}: columns: expected a mapping of column to rule")
            rules = tuple(
                self._parse_rule(name, target, rule, (*where, "columns", target)) for target, rule in columns.items()
            )
            specs.append(_TableSpec(name, all_text, rules, where))
        return tuple(specs)

    def _parse_rule(self, table: str, target: Any, rule: Any, where: tuple[str | int, ...]) -> _RuleSpec:
        what = f"table {table}: column rule {target!r}"
        if not isinstance(target, str) or not target or "" in target.split("."):
            raise self._error(where, f"{what}: expected a column name, optionally with .field parts")
        classification: Any
        strategy: Any
        if isinstance(rule, str):
            classification, strategy = rule, None
        elif isinstance(rule, Mapping):
            self._check_keys(rule, ("class", "strategy"), where, what)
            classification, strategy = rule.get("class"), rule.get("strategy")
        else:
            raise self._error(where, f"{what}: expected pii, phi or {{class: pii|phi, strategy: hash|token|drop}}")
        if classification not in CLASSIFICATIONS:
            raise self._error(where, f"{what}: class: expected pii or phi, got {classification!r}")
        if strategy is None:
            strategy = DEFAULT_STRATEGY[classification]
        if strategy not in STRATEGIES:
            raise self._error(where, f"{what}: strategy: expected hash, token or drop, got {strategy!r}")
        return _RuleSpec(target, classification, strategy, where)

    # -- compiling against a schema -----------------------------------------------------------------------

    def _compile(self, schema: Schema) -> dict[str, dict[str, _TablePlan]]:
        by_name = {(t.keyspace, t.name): t for t in schema.tables.values()}
        keyspaces = {t.keyspace for t in schema.tables.values()}
        plans: dict[str, dict[str, _TablePlan]] = {}
        for spec in self._specs:
            keyspace, name = spec.name.split(".")
            if keyspace not in keyspaces:
                raise self._error(
                    spec.where, f"table {spec.name}: no keyspace {keyspace!r} in the schema ({schema.source})"
                )
            table = by_name.get((keyspace, name))
            if table is None:
                raise self._error(spec.where, f"table {spec.name}: no such table in the schema ({schema.source})")
            plans.setdefault(keyspace, {})[name] = self._compile_table(spec, table)
        return plans

    def _compile_table(self, spec: _TableSpec, table: TableDef) -> _TablePlan:
        columns: dict[str, ColumnDef] = {c.name: c for c in table.partition_key + table.clustering}
        columns.update(table.columns)
        columns.update({name: c for name, c in table.dropped.items() if name not in columns})
        roots = {name: _Node(c.type) for name, c in columns.items()}
        if spec.all_text:
            strategy = DEFAULT_STRATEGY[spec.all_text]
            for name, root in roots.items():
                for _, leaf in root.leaves(name, keys=True):
                    if leaf.is_text:
                        leaf.action = _Action(strategy, (spec.name, name, spec.all_text, strategy))
        dropped: dict[int, str] = {}  # id(node) -> the rule that drops it
        for rule in sorted(spec.rules, key=lambda r: r.target.count(".")):
            what = f"table {spec.name}: column rule {rule.target!r}"
            column_name, *parts = rule.target.split(".")
            if column_name not in columns:
                known = ", ".join(columns)
                raise self._error(
                    rule.where, f"{what}: no such column {column_name!r} in {spec.name} (columns: {known})"
                )
            column = columns[column_name]
            node, parent_kind, chain = self._resolve(rule, what, roots[column_name], column, parts)
            for ancestor in chain:
                if id(ancestor) in dropped:
                    raise self._error(rule.where, f"{what}: it is inside {dropped[id(ancestor)]!r}, which is dropped")
            audit = (spec.name, rule.target, rule.classification, rule.strategy)
            if rule.strategy == DROP:
                if column.kind in ("partition_key", "clustering"):
                    raise self._error(
                        rule.where,
                        f"{what}: {column_name} is part of the primary key and cannot be dropped (it identifies the "
                        "row); mask it with hash or token instead",
                    )
                if parts and parent_kind not in ("udt", "tuple"):
                    raise self._error(
                        rule.where,
                        f"{what}: drop applies to a whole column or to a UDT or tuple field, not to a map key, map "
                        f"value or collection element; drop the column {column_name} instead",
                    )
                node.action = _Action(DROP, audit)
                dropped[id(node)] = rule.target
                continue
            leaves = list(node.leaves(rule.target, keys=False))
            wrong = [(label, leaf) for label, leaf in leaves if not leaf.is_text]
            if wrong:
                label, leaf = wrong[0]
                raise self._error(
                    rule.where,
                    f"{what}: {rule.strategy} masks text only (text, varchar, ascii), and {label} is "
                    f"{leaf.ctype.cql()}; use strategy drop for it, or classify the text parts only",
                )
            for _, leaf in leaves:
                leaf.action = _Action(rule.strategy, audit)
        return _TablePlan(table, roots, bool(spec.all_text))

    def _resolve(
        self, rule: _RuleSpec, what: str, node: _Node, column: ColumnDef, parts: list[str]
    ) -> tuple[_Node, str, list[_Node]]:
        """The node a selector names, its parent's kind, and the nodes on the way."""
        label, parent_kind, chain = column.name, "", [node]
        for part in parts:
            while True:
                ctype = node.ctype
                if ctype.kind == "map" and part in ("key", "value"):
                    node, parent_kind = node.children[0 if part == "key" else 1], "map"
                    break
                if ctype.kind in _COLLECTIONS:  # elements (map: values) are implied
                    node, parent_kind = node.children[-1], ctype.kind
                    chain.append(node)
                    continue
                if ctype.kind == "udt":
                    if part not in ctype.field_names:
                        raise self._error(
                            rule.where,
                            f"{what}: {label} is the UDT {ctype.name}, which has no field {part!r} "
                            f"(fields: {', '.join(ctype.field_names)})",
                        )
                    node, parent_kind = node.children[ctype.field_names.index(part)], "udt"
                    break
                if ctype.kind == "tuple":
                    if not part.isdigit() or int(part) >= len(ctype.params):
                        raise self._error(
                            rule.where,
                            f"{what}: {label} is {ctype.cql()}: fields are numbered 0 to {len(ctype.params) - 1}",
                        )
                    node, parent_kind = node.children[int(part)], "tuple"
                    break
                raise self._error(rule.where, f"{what}: {label} is {ctype.cql()}, which has no part {part!r}")
            chain.append(node)
            label = f"{label}.{part}"
        return node, parent_kind, chain

    def plans(self) -> dict[str, dict[str, _TablePlan]]:
        return self._plans


# -- masking ----------------------------------------------------------------------------------------------


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after absorbing key XOR ipad and key XOR opad (RFC 2104)."""
    block = hashlib.sha256(key).digest() if len(key) > 64 else key
    block = block.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    return inner, outer


def _text_order(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else b""


class Masker:
    """Masks events with :class:`MaskingRules`; counts every masked value in :attr:`audit`.

    One Masker per process (it holds no lock); build each from the environment's secrets.
    """

    def __init__(self, rules: MaskingRules, secrets: MaskingSecrets | None = None) -> None:
        secrets = MaskingSecrets.from_env() if secrets is None else secrets
        for needed, present, variable in (
            (HASH, secrets.has_salt, PII_SALT_ENV),
            (TOKEN, secrets.has_key, PHI_KEY_ENV),
        ):
            rule = rules._first_using(needed)
            if rule is not None and not present:
                raise ConfigError(
                    f"{rules.source}: table {rule.table}: {rule.target} is masked with {needed}, which needs a "
                    f"secret: set {variable} or {variable}_FILE"
                )
        salt, key = secrets._pii_salt, secrets._phi_key
        self._salted = hashlib.sha256(salt) if salt is not None else None
        # HMAC-SHA256 (RFC 2104) from its two precomputed pad states: the same bytes as hmac.new, faster
        self._keyed = _hmac_states(key) if key is not None else None
        self.rules = rules
        self._plans = rules.plans()
        self._audit: Counter[AuditKey] = Counter()

    def __repr__(self) -> str:
        return f"Masker(rules={self.rules!r}, secrets=<redacted>)"

    __str__ = __repr__

    def update_schema(self, schema: Schema) -> None:
        """Recompile the rules against a new schema (columns or UDT fields added since start)."""
        self.rules = self.rules.rebind(schema)
        self._plans = self.rules.plans()

    # -- primitives ---------------------------------------------------------------------------------------

    def hash(self, value: bytes | str) -> str:
        """The ``hash`` output for ``value`` (its UTF-8 bytes): hex SHA-256(salt || value)."""
        if self._salted is None:
            raise ConfigError(f"no salt: set {PII_SALT_ENV} or {PII_SALT_ENV}_FILE")
        digest = self._salted.copy()
        digest.update(value.encode("utf-8") if isinstance(value, str) else value)
        return digest.hexdigest()

    def token(self, value: bytes | str) -> str:
        """The ``token`` output for ``value`` (its UTF-8 bytes): ``tok_`` + 32 hex digits of HMAC-SHA256."""
        if self._keyed is None:
            raise ConfigError(f"no key: set {PHI_KEY_ENV} or {PHI_KEY_ENV}_FILE")
        inner, outer = self._keyed[0].copy(), self._keyed[1].copy()
        inner.update(value.encode("utf-8") if isinstance(value, str) else value)
        outer.update(inner.digest())
        return TOKEN_PREFIX + outer.hexdigest()[:TOKEN_HEX_DIGITS]

    def _masked(self, action: _Action, raw: bytes) -> str:
        self._audit[action.audit] += 1
        return self.hash(raw) if action.strategy == HASH else self.token(raw)

    def _bytes(self, node: _Node, raw: bytes, where: str) -> bytes:
        """A serialized value with its masked parts rewritten (the same object when nothing changes)."""
        if node.action is not None and node.action.strategy != DROP and not node.children:  # text: UTF-8 bytes
            return self._masked(node.action, raw).encode("ascii")
        try:
            value = decode(node.ctype, raw)
        except ValueDecodeError:
            raise MaskingError(f"{where}: a {node.ctype.cql()} value of {len(raw)} bytes does not decode") from None
        masked, changed = self._walk(node, value)
        if not changed:
            return raw
        try:
            return encode(node.ctype, masked)
        except ValueEncodeError:
            raise MaskingError(f"{where}: the masked {node.ctype.cql()} value does not encode") from None

    def _walk(self, node: _Node, value: Any) -> tuple[Any, bool]:
        if value is None or value is EMPTY:
            return value, False
        action = node.action
        if action is not None:
            if action.strategy == DROP:
                self._audit[action.audit] += 1
                return None, True
            return self._masked(action, value.encode("utf-8")), True
        if not node.active:
            return value, False
        kind, children = node.ctype.kind, node.children
        if kind == "map":
            key_node, value_node = children
            pairs, keys_changed, changed = [], False, False
            for k, v in value:
                new_key, key_changed = self._walk(key_node, k)
                new_value, value_changed = self._walk(value_node, v)
                pairs.append((new_key, new_value))
                keys_changed |= key_changed
                changed |= key_changed or value_changed
            if keys_changed and key_node.is_text:  # keep Cassandra's (byte) order of text keys
                pairs.sort(key=lambda pair: _text_order(pair[0]))
            return pairs, changed
        if kind == "udt":
            fields, changed = {}, False
            for name, child in zip(node.ctype.field_names, children):
                fields[name], field_changed = self._walk(child, value.get(name))
                changed |= field_changed
            return fields, changed
        items, changed = [], False
        element_nodes = children if kind == "tuple" else [children[0]] * len(value)
        for child, item in zip(element_nodes, value):
            new, item_changed = self._walk(child, item)
            items.append(new)
            changed |= item_changed
        if kind == "tuple":
            return tuple(items), changed
        if kind == "set" and changed and children[0].is_text:
            items.sort(key=_text_order)
        return items, changed

    def _key(self, nodes: list[_Node | None], values: list[Any], where: str) -> tuple[list[Any], bool]:
        out, changed = [], False
        for node, value in zip(nodes, values):
            if node is not None and value is not None:
                new = self._bytes(node, value, where)
                changed |= new is not value
                value = new
            out.append(value)
        return out + values[len(out) :], changed

    # -- events -------------------------------------------------------------------------------------------

    def mask(self, event: ChangeEvent) -> ChangeEvent:
        """``event`` with its classified values masked and a recomputed content id; the very same object
        when its table has no rules or nothing in it is classified."""
        tables = self._plans.get(event.keyspace)
        plan = tables.get(event.table) if tables is not None else None
        if plan is None:
            return event
        where = f"{plan.table} (segment {event.segment_id}, position {event.position})"
        changes: dict[str, Any] = {}
        if plan.key_active:
            for field in ("partition_key", "clustering", "range_start", "range_end"):
                values = getattr(event, field)
                if values:
                    nodes = plan.partition_key if field == "partition_key" else plan.clustering
                    masked, changed = self._key(nodes, values, f"{where}, primary key")
                    if changed:
                        changes[field] = masked
        if event.cells:
            cells, changed = self._cells(plan, event.cells, where)
            if changed:
                changes["cells"] = cells
        if not changes:
            return event
        return msgspec.structs.replace(event, **changes).with_content_id()

    def mask_all(self, events: Iterable[ChangeEvent]) -> Iterator[ChangeEvent]:
        for event in events:
            yield self.mask(event)

    def _cells(self, plan: _TablePlan, cells: list[Cell], where: str) -> tuple[list[Cell], bool]:
        out: list[Cell | None] = []
        changed = False
        cleared: dict[str, list[Any]] = {}  # dropped multi-cell column -> [slot in out, newest ts, had a CLEAR]
        for cell in cells:
            node = plan.columns.get(cell.column)
            if node is None:
                if plan.fail_closed and cell.column not in plan.known:
                    raise MaskingError(
                        f"{where}: column {cell.column} is not in the schema the rules were checked against and "
                        "the table masks all text: reload the schema (Masker.update_schema)"
                    )
                out.append(cell)
                continue
            ctype = node.ctype
            dropped = node.action is not None and node.action.strategy == DROP
            if ctype.is_complex and dropped:
                state = cleared.setdefault(cell.column, [None, cell.ts, False])
                if cell.kind == CLEAR:
                    state[2] = True
                    out.append(cell)
                    continue
                assert node.action is not None
                self._audit[node.action.audit] += 1
                changed = True
                if state[0] is None:
                    state[0] = len(out)
                    out.append(None)
                state[1] = max(state[1], cell.ts)
                continue
            if dropped:
                assert node.action is not None
                if cell.value is not None:
                    self._audit[node.action.audit] += 1
                    cell, changed = Cell(cell.column, TOMBSTONE, cell.ts), True
                out.append(cell)
                continue
            new = self._cell(node, cell, f"{where}, column {cell.column}") if cell.kind != CLEAR else cell
            changed |= new is not cell
            out.append(new)
        for column, (slot, ts, had_clear) in cleared.items():
            if slot is not None and not had_clear:
                out[slot] = Cell(column, CLEAR, ts)
        return [c for c in out if c is not None], changed

    def _cell(self, node: _Node, cell: Cell, where: str) -> Cell:
        ctype, value, path = node.ctype, cell.value, cell.path
        if not ctype.is_complex:
            if value is None:
                return cell
            value = self._bytes(node, value, where)
        elif ctype.kind == "udt":
            index = int.from_bytes(path, "big", signed=True) if path is not None and len(path) == 2 else -1
            if not 0 <= index < len(node.children):
                raise MaskingError(
                    f"{where}: field index {index} is not in {ctype.name} as the rules' schema knows it: reload "
                    "the schema (Masker.update_schema)"
                )
            field = node.children[index]
            if field.action is not None and field.action.strategy == DROP:
                if value is None:
                    return cell
                self._audit[field.action.audit] += 1
                return Cell(cell.column, TOMBSTONE, cell.ts, None, path)
            if value is not None and field.active:
                value = self._bytes(field, value, f"{where}.{ctype.field_names[index]}")
        elif ctype.kind == "map":
            key_node, value_node = node.children
            if path is not None and key_node.active:
                path = self._bytes(key_node, path, f"{where}, map key")
            if value is not None and value_node.active:
                value = self._bytes(value_node, value, f"{where}, map value")
        elif ctype.kind == "set":
            if path is not None and node.children[0].active:
                path = self._bytes(node.children[0], path, f"{where}, set element")
        elif value is not None and node.children[0].active:  # list: the path is a timeuuid
            value = self._bytes(node.children[0], value, f"{where}, list element")
        if value is cell.value and path is cell.path:
            return cell
        return msgspec.structs.replace(cell, value=value, path=path)

    # -- audit --------------------------------------------------------------------------------------------

    @property
    def audit(self) -> dict[AuditKey, int]:
        """(table, column or rule target, classification, strategy) -> values masked so far."""
        return dict(self._audit)

    def audit_log(self, logger: Any, reset: bool = False) -> None:
        """One structured record per (table, column, classification, strategy) with its count, never a value.

        A :class:`logging.Logger` gets the fields as record attributes (``extra``) and in the message; any
        other logger (structlog) is called as ``logger.info("masking_audit", table=..., ..., count=...)``.
        """
        for (table, column, classification, strategy), count in sorted(self._audit.items()):
            fields = {
                "table": table,
                "column": column,
                "classification": classification,
                "strategy": strategy,
                "count": count,
            }
            if isinstance(logger, logging.Logger | logging.LoggerAdapter):
                logger.info(
                    "masking audit: table=%s column=%s classification=%s strategy=%s count=%d",
                    table,
                    column,
                    classification,
                    strategy,
                    count,
                    extra=fields,
                )
            else:
                logger.info("masking_audit", **fields)
        if reset:
            self._audit.clear()
