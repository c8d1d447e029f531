"""Masking of PII/PHI in change events, held against the real corpora.

The raw sensitive values come from ``ops.jsonl.gz`` (the values the workload bound to the sensitive
columns of ``shop.users`` and ``clinic.patients``), never from the code under test: none of them may
remain anywhere in a masked event (cell values, cell paths, key components, the encoded event).
"""

from __future__ import annotations

import collections
import gzip
import json
import logging
import os
import re
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import USER_KEYSPACES, Corpus

from cdcfast.commitlog import CommitLogReader, load_schema
from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.commitlog.schema import Schema, TableDef
from cdcfast.errors import ConfigError
from cdcfast.events import CLEAR, SET, TOMBSTONE, Cell, ChangeEvent, content_id, events_from_batch
from cdcfast.transform.masking import Masker, MaskingError, MaskingRules, MaskingSecrets
from cdcfast.values import decode, decode_cell_path, decode_cell_value, encode

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "masking-rules.example.yaml"

SALT = "pii-salt-for-tests-0123456789"
KEY = "phi-key-for-tests-abcdefghijklmnop"
SECRETS = MaskingSecrets(pii_salt=SALT, phi_key=KEY)

SENSITIVE = {
    "shop.users": {"email", "phone", "ssn", "full_name"},
    "clinic.patients": {
        "medical_record_number",
        "name",
        "dob",
        "ssn",
        "email",
        "diagnosis_codes",
        "vitals",
        "contact",
        "notes",
    },
}
# Too short to search for in bytes without chance matches (vitals keys such as "hr", codes such as "I10");
# the structural checks below cover them.
MIN_SEARCH_LENGTH = 4
TOKEN = re.compile(r"tok_[0-9a-f]{32}|[0-9a-f]{64}")


# -- the workload's bound values ---------------------------------------------------------------------

_TOKENS = re.compile(r"%s|[A-Za-z_][\w.]*|[()]")
_KEYWORDS = {"TIMESTAMP", "TTL", "USING", "SET", "WHERE", "AND", "IF", "BATCH", "APPLY", "BEGIN", "FROM", "VALUES"}


def bound_values(op: dict) -> Iterator[tuple[str | None, str | None, Any]]:
    """(table, column, value) for every bound value of a statement: ``%s`` placeholders are matched to
    the column before them (``SET email = %s``, ``prefs[%s] = %s``, ``contact.city = %s``) or, inside
    ``VALUES (...)``, to the column list by position; ``INSERT ... JSON %s`` gives one per JSON key."""
    params = iter(op.get("params") or [])
    for statement in op["cql"].split(";"):
        table_match = re.search(r"\b(?:INSERT\s+INTO|UPDATE|FROM)\s+(\w+\.\w+)", statement, re.I)
        table = table_match.group(1) if table_match else None
        insert_match = re.search(r"\(([^)]*)\)\s*VALUES", statement, re.I)
        insert_columns = [c.strip() for c in insert_match.group(1).split(",")] if insert_match else []
        in_values, position, last = False, 0, None
        for token in _TOKENS.findall(statement):
            if token.upper() == "VALUES":
                in_values = True
            elif token == ")" and in_values and position:
                in_values = False
            elif token == "%s":
                value = next(params)
                if in_values:
                    yield table, insert_columns[position], value
                    position += 1
                elif last == "JSON":
                    for column, item in json.loads(value).items():
                        yield table, column, item
                elif last is not None and last.upper() not in _KEYWORDS:
                    yield table, last.split(".")[0], value
                else:
                    yield table, None, value
            elif token not in "()":
                last = token


def text_leaves(value: Any) -> Iterator[str]:
    """The strings inside a bound value (tagged scalars such as {"uuid": ...} are not text)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from text_leaves(item)
    elif isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in ("set", "map"):
            yield from text_leaves(inner)
        elif tag == "udt":
            for item in inner.values():
                yield from text_leaves(item)


@cache
def sensitive_values(corpus_name: str) -> frozenset[str]:
    values: set[str] = set()
    with gzip.open(Path(Corpus(corpus_name, Path("/nonexistent")).root) / "ops.jsonl.gz", "rt") as handle:
        for line in handle:
            op = json.loads(line)
            if op.get("kind") != "dml" or "cql" not in op:
                continue
            for table, column, value in bound_values(op):
                if table in SENSITIVE and column in SENSITIVE[table]:
                    values.update(text_leaves(value))
    return frozenset(values)


def test_bound_values_parser() -> None:
    op = {
        "cql": "BEGIN BATCH USING TIMESTAMP %s UPDATE shop.users SET email = %s, prefs[%s] = %s WHERE user_id = %s; "
        "INSERT INTO clinic.patients (medical_record_number, name) VALUES (%s, %s) USING TTL %s; APPLY BATCH",
        "params": [1, "a@b", "k", "v", {"uuid": "u"}, "MRN1", "Ann", 5],
    }
    assert list(bound_values(op)) == [
        ("shop.users", None, 1),
        ("shop.users", "email", "a@b"),
        ("shop.users", "prefs", "k"),
        ("shop.users", "prefs", "v"),
        ("shop.users", "user_id", {"uuid": "u"}),
        ("clinic.patients", "medical_record_number", "MRN1"),
        ("clinic.patients", "name", "Ann"),
        ("clinic.patients", None, 5),
    ]
    json_op = {"cql": "INSERT INTO shop.users JSON %s USING TIMESTAMP %s", "params": ['{"email": "j@x", "age": 3}', 9]}
    assert list(bound_values(json_op)) == [
        ("shop.users", "email", "j@x"),
        ("shop.users", "age", 3),
        ("shop.users", None, 9),
    ]
    assert list(text_leaves({"udt": {"city": "Pune", "zip": 1}})) == ["Pune"]
    assert list(text_leaves({"map": [["hr", 63.0]]})) == ["hr"]


# -- corpus events -----------------------------------------------------------------------------------

_EVENTS: dict[tuple[str, str], list[ChangeEvent]] = {}


def user_events(corpus: Corpus, schema_file: str | None = None) -> list[ChangeEvent]:
    key = (corpus.name, schema_file or "final")
    if key not in _EVENTS:
        schema = load_schema(corpus.schema_dir / schema_file if schema_file else corpus.schema_dir)
        reader = CommitLogReader(schema)
        _EVENTS[key] = [
            event
            for batch in reader.read_paths([corpus.cdc_raw])
            for event in events_from_batch(batch)
            if event.keyspace in USER_KEYSPACES
        ]
    return _EVENTS[key]


def example_masker(schema: Schema, secrets: MaskingSecrets = SECRETS) -> Masker:
    return Masker(MaskingRules.load(EXAMPLE, schema), secrets)


def haystack(events: list[ChangeEvent]) -> bytes:
    """Every byte a sink could see: values, paths, key components, and each whole encoded event."""
    parts: list[bytes] = []
    for event in events:
        parts.extend(event.partition_key)
        parts.extend(v for v in event.clustering if v is not None)
        for bound in (event.range_start or []), (event.range_end or []):
            parts.extend(v for v in bound if v is not None)
        for cell in event.cells:
            parts.extend(p for p in (cell.value, cell.path) if p is not None)
        parts.append(msgspec.msgpack.encode(event))
        parts.append(msgspec.json.encode(event))
    return b"\x00".join(parts)


def assert_no_raw_values(corpus_name: str, masked: list[ChangeEvent]) -> int:
    sensitive = [v for v in sensitive_values(corpus_name) if len(v.encode()) >= MIN_SEARCH_LENGTH]
    assert len(sensitive) > 1000
    data = haystack([e for e in masked if e.qualified_table in SENSITIVE])
    leaked = [v for v in sensitive if v.encode() in data]
    assert not leaked, f"{len(leaked)} raw sensitive values survive masking, e.g. {sorted(leaked)[:5]}"
    return len(sensitive)


# -- the example rules against the corpora ----------------------------------------------------------


def test_example_rules_load_against_the_final_schema(corpus: Corpus) -> None:
    rules = MaskingRules.load(EXAMPLE, load_schema(corpus.schema_dir))
    described = {(r.table, r.target) for r in rules.describe()}
    assert ("shop.users", "phone") in described  # dropped, still masked where old events carry it
    assert ("clinic.patients", "medical_record_number") in described
    assert rules.needs_salt and rules.needs_key


def test_example_rules_load_against_every_schema_with_the_tables(corpus: Corpus) -> None:
    loaded = 0
    for path in sorted(corpus.schema_dir.glob("*.json")):
        schema = load_schema(path)
        names = {t.qualified_name for t in schema.tables.values()}
        if {"shop.users", "clinic.patients"} <= names:
            MaskingRules.load(EXAMPLE, schema)
            loaded += 1
    assert loaded >= 5


def test_no_raw_sensitive_value_survives_masking(corpus: Corpus) -> None:
    events = user_events(corpus)
    masked = list(example_masker(load_schema(corpus.schema_dir)).mask_all(events))
    assert_no_raw_values(corpus.name, masked)
    # and the raw values really were there before masking
    raw = haystack([e for e in events if e.qualified_table in SENSITIVE])
    present = [v for v in sensitive_values(corpus.name) if len(v) >= MIN_SEARCH_LENGTH and v.encode() in raw]
    assert len(present) > 1000


def test_dropped_phone_is_masked_where_old_events_carry_it(corpus: Corpus) -> None:
    """Read with the schema from before ``DROP phone`` (015), phone cells are decoded: they must be masked."""
    schema = load_schema(corpus.schema_dir / "015.json")
    assert "phone" in schema.by_name("shop", "users").columns
    events = user_events(corpus, "015.json")
    phones = [c for e in events if e.table == "users" for c in e.cells if c.column == "phone" and c.value]
    assert len(phones) >= 900
    masker = example_masker(schema)
    masked = [masker.mask(e) for e in events]
    assert_no_raw_values(corpus.name, masked)
    masked_phones = [c for e in masked if e.table == "users" for c in e.cells if c.column == "phone" and c.value]
    assert len(masked_phones) == len(phones)
    assert all(re.fullmatch(r"[0-9a-f]{64}", c.value.decode()) for c in masked_phones if c.value)
    assert masker.audit[("shop.users", "phone", "pii", "hash")] == len(phones)


def test_non_text_phi_is_dropped(corpus: Corpus) -> None:
    masked = list(example_masker(load_schema(corpus.schema_dir)).mask_all(user_events(corpus)))
    patients = [e for e in masked if e.qualified_table == "clinic.patients"]
    cells = collections.Counter((c.column, c.kind) for e in patients for c in e.cells)
    assert cells[("dob", TOMBSTONE)] >= 300 and not cells[("dob", SET)]
    assert cells[("vitals", CLEAR)] >= 300 and not cells[("vitals", SET)] and not cells[("vitals", TOMBSTONE)]
    assert not cells[("notes", SET)]
    for event in patients:
        for cell in event.cells:
            if cell.column in ("dob", "vitals", "notes"):
                assert cell.value is None and cell.path is None and cell.ttl == 0


def test_masked_values_keep_their_cql_type(corpus: Corpus) -> None:
    """Masked cells still decode as their column's type, and every text leaf in them is a token."""
    schema = load_schema(corpus.schema_dir)
    masked = list(example_masker(schema).mask_all(user_events(corpus)))
    patients = schema.by_name("clinic", "patients")
    leaves = 0
    for event in masked:
        if event.qualified_table != "clinic.patients":
            continue
        (mrn,) = event.partition_key
        assert TOKEN.fullmatch(decode(patients.partition_key[0].type, mrn))
        for cell in event.cells:
            column = patients.columns[cell.column]
            if cell.kind != SET or column.name not in ("name", "ssn", "email", "diagnosis_codes", "contact"):
                continue
            if column.type.is_complex and cell.path is not None:
                decode_cell_path(column.type, cell.path)
            value = decode_cell_value(column.type, cell.value or b"", cell.path)
            assert isinstance(value, str) and TOKEN.fullmatch(value), (column.name, value)
            leaves += 1
    assert leaves > 2000


def test_unmasked_columns_and_tables_are_untouched(corpus: Corpus) -> None:
    events = user_events(corpus)
    masker = example_masker(load_schema(corpus.schema_dir))
    masked = [masker.mask(e) for e in events]
    kept_columns = {"user_id", "age", "created_at", "balance", "active", "tags", "prefs", "loyalty_tier"}
    compared = collections.Counter()
    for raw, out in zip(events, masked):
        if raw.qualified_table not in SENSITIVE:
            assert out is raw  # no rules: the very same object
            continue
        assert (out.op, out.ts, out.clustering, out.static, out.deletion_ts, out.liveness_ts) == (
            raw.op,
            raw.ts,
            raw.clustering,
            raw.static,
            raw.deletion_ts,
            raw.liveness_ts,
        )
        assert out.event_id == content_id(out)
        if raw.qualified_table == "shop.users":
            assert out.partition_key == raw.partition_key  # user_id (uuid) is not masked
            raw_kept = [c for c in raw.cells if c.column in kept_columns]
            assert [c for c in out.cells if c.column in kept_columns] == raw_kept
            compared.update(c.column for c in raw_kept)
            assert [(c.column, c.kind, c.ts) for c in out.cells] == [(c.column, c.kind, c.ts) for c in raw.cells]
            if not any(c.column in SENSITIVE["shop.users"] and c.value is not None for c in raw.cells):
                assert out is raw
            else:
                assert out.event_id != raw.event_id
    assert compared["age"] > 1000 and compared["created_at"] > 900


def test_tokens_are_stable_and_keyed(corpus: Corpus) -> None:
    schema = load_schema(corpus.schema_dir)
    events = [e for e in user_events(corpus) if e.qualified_table in SENSITIVE]
    first = list(example_masker(schema).mask_all(events))
    second = list(example_masker(schema).mask_all(events))  # another instance, as on another node
    assert first == second
    other_key = example_masker(schema, MaskingSecrets(pii_salt=SALT, phi_key="another-phi-key-0123456789"))
    other_salt = example_masker(schema, MaskingSecrets(pii_salt="another-pii-salt-0123456789", phi_key=KEY))
    by_key = [other_key.mask(e) for e in events]
    by_salt = [other_salt.mask(e) for e in events]
    for a, b, c in zip(first, by_key, by_salt):
        if a.qualified_table == "clinic.patients":
            assert a.partition_key != b.partition_key and a.partition_key == c.partition_key
        else:
            emails = [x.value for x in a.cells if x.column == "email" and x.value]
            assert emails == [x.value for x in b.cells if x.column == "email" and x.value]
            if emails:
                assert emails != [x.value for x in c.cells if x.column == "email" and x.value]


def test_patient_keys_stay_unique_and_joinable(corpus: Corpus) -> None:
    schema = load_schema(corpus.schema_dir)
    masker = example_masker(schema)
    mapping: dict[bytes, set[bytes]] = collections.defaultdict(set)
    for event in user_events(corpus):
        if event.qualified_table == "clinic.patients":
            mapping[event.partition_key[0]].add(masker.mask(event).partition_key[0])
    assert len(mapping) >= 300
    assert all(len(tokens) == 1 for tokens in mapping.values())  # a function of the raw key
    tokens = [next(iter(t)) for t in mapping.values()]
    assert len(set(tokens)) == len(tokens)  # injective: distinct patients stay distinct
    # the same value gets the same token in any column or table: keys join with tokenized references
    mrn = next(iter(mapping))
    assert masker.token(mrn).encode() == next(iter(mapping[mrn]))


def test_every_masked_field_is_audited(corpus: Corpus) -> None:
    schema = load_schema(corpus.schema_dir)
    masker = example_masker(schema)
    events = user_events(corpus)
    for event in events:
        masker.mask(event)
    users = [e for e in events if e.qualified_table == "shop.users"]
    patients = [e for e in events if e.qualified_table == "clinic.patients"]

    def values(table: list[ChangeEvent], column: str) -> int:
        return sum(1 for e in table for c in e.cells if c.column == column and c.value is not None)

    def elements(table: list[ChangeEvent], column: str) -> int:
        return sum(1 for e in table for c in e.cells if c.column == column and c.path is not None)

    expected = {
        ("shop.users", "email", "pii", "hash"): values(users, "email"),
        ("shop.users", "ssn", "pii", "hash"): values(users, "ssn"),
        ("shop.users", "full_name", "pii", "hash"): values(users, "full_name"),
        ("clinic.patients", "medical_record_number", "phi", "token"): len(patients),
        ("clinic.patients", "name", "phi", "token"): values(patients, "name"),
        ("clinic.patients", "ssn", "phi", "token"): values(patients, "ssn"),
        ("clinic.patients", "email", "phi", "token"): values(patients, "email"),
        ("clinic.patients", "diagnosis_codes", "phi", "token"): values(patients, "diagnosis_codes"),
        ("clinic.patients", "contact", "phi", "token"): values(patients, "contact"),
        ("clinic.patients", "dob", "phi", "drop"): values(patients, "dob"),
        ("clinic.patients", "vitals", "phi", "drop"): elements(patients, "vitals"),
    }
    expected = {k: v for k, v in expected.items() if v}
    assert len(expected) == 11
    assert dict(masker.audit) == expected


def test_audit_log_and_reprs_hold_no_values_or_secrets(corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    schema = load_schema(corpus.schema_dir)
    masker = example_masker(schema)
    for event in user_events(corpus):
        masker.mask(event)
    logger = logging.getLogger("cdcfast.test.audit")
    with caplog.at_level(logging.INFO, logger="cdcfast.test.audit"):
        masker.audit_log(logger)
    assert len(caplog.records) == len(masker.audit)
    record = caplog.records[0]
    assert {"table", "column", "classification", "strategy", "count"} <= set(vars(record))
    assert (record.table, record.column, record.classification, record.strategy) in masker.audit  # type: ignore[attr-defined]

    calls: list[tuple[str, dict]] = []

    class StructLogger:  # structlog-style: keyword fields
        def info(self, event: str, **fields: Any) -> None:
            calls.append((event, fields))

    masker.audit_log(StructLogger())
    assert sorted((f["table"], f["column"], f["classification"], f["strategy"]) for _, f in calls) == sorted(
        masker.audit
    )
    assert all(
        f["count"] == masker.audit[(f["table"], f["column"], f["classification"], f["strategy"])] for _, f in calls
    )

    texts = [caplog.text, repr(calls), repr(masker), str(masker), repr(masker.rules), repr(SECRETS), str(SECRETS)]
    texts += [repr(masker.audit)]
    blob = "\n".join(texts)
    for secret in (SALT, KEY):
        assert secret not in blob
    for value in sensitive_values(corpus.name):
        if len(value) >= MIN_SEARCH_LENGTH:
            assert value not in blob


# -- mask_all_text on every CQL type ---------------------------------------------------------------


def text_leaves_of(ctype: CqlType, value: Any) -> Iterator[str]:
    if value is None or not isinstance(value, (str, list, tuple, dict)):
        return
    if ctype.kind in ("text", "ascii"):
        yield value
    elif ctype.kind in ("list", "set", "vector"):
        for item in value:
            yield from text_leaves_of(ctype.params[0], item)
    elif ctype.kind == "map":
        for k, v in value:
            yield from text_leaves_of(ctype.params[0], k)
            yield from text_leaves_of(ctype.params[1], v)
    elif ctype.kind in ("tuple", "udt"):
        items = value.values() if isinstance(value, dict) else value
        for t, item in zip(ctype.params, items):
            yield from text_leaves_of(t, item)


def column_type(table: TableDef, name: str) -> CqlType:
    return (table.columns.get(name) or table.dropped[name]).type


def test_mask_all_text_covers_every_type(corpus: Corpus, tmp_path: Path) -> None:
    schema = load_schema(corpus.schema_dir)
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text("tables:\n  types.all_types:\n    mask_all_text: pii\n")
    masker = Masker(MaskingRules.load(rules_path, schema), SECRETS)
    table = schema.by_name("types", "all_types")
    text_columns = {"ck1", "st", "a_ascii", "a_text", "a_varchar", "s_text", "m_text_int", "f_list", "f_map"}
    text_columns |= {"tup", "udt_nf", "udt_f", "nested"}
    seen: collections.Counter[str] = collections.Counter()
    events = [e for e in user_events(corpus) if e.qualified_table == "types.all_types"]
    assert events
    for raw in events:
        out = masker.mask(raw)
        assert out.partition_key == raw.partition_key  # id int
        for r, o in (
            (raw.clustering, out.clustering),
            (raw.range_start, out.range_start),
            (raw.range_end, out.range_end),
        ):
            for i, (a, b) in enumerate(zip(r or [], o or [])):
                if i == 1 or a is None:  # ck2 bigint
                    assert a == b
                else:
                    assert TOKEN.fullmatch(b.decode()), b
                    seen["ck1"] += 1
        assert len(out.cells) == len(raw.cells)
        for a, b in zip(raw.cells, out.cells):
            ctype = column_type(table, a.column)
            assert (a.column, a.kind, a.ts, a.ttl) == (b.column, b.kind, b.ts, b.ttl)
            if a.column not in text_columns:
                assert a == b
                continue
            if a.path is not None and ctype.kind in ("set", "map"):
                key = decode_cell_path(ctype, b.path or b"")
                for leaf in text_leaves_of(ctype.params[0], key):
                    assert TOKEN.fullmatch(leaf)
                    seen[a.column] += 1
            if b.value is None:
                continue
            value = decode_cell_value(ctype, b.value, b.path)
            if ctype.is_complex:
                element = {"list": 0, "set": 0, "map": 1}.get(ctype.kind)
                if element is not None:
                    leaf_type = ctype.params[element]
                else:
                    leaf_type = ctype.params[int.from_bytes(b.path or b"", "big")]
            else:
                leaf_type = ctype
            leaves = list(text_leaves_of(leaf_type, value))
            raw_leaves = list(text_leaves_of(leaf_type, decode_cell_value(ctype, a.value or b"", a.path)))
            assert len(leaves) == len(raw_leaves)
            for leaf in leaves:
                assert TOKEN.fullmatch(leaf), (a.column, leaf)
            seen[a.column] += len(leaves)
            if not raw_leaves:  # e.g. udt_nf.zip (int) or the int list inside nested
                assert a.value == b.value
    for column in text_columns:
        assert seen[column] > 0, column
    assert sum(masker.audit.values()) == sum(seen.values())


# -- rules and masking, unit by unit ----------------------------------------------------------------


@pytest.fixture(scope="module")
def final_schema() -> Schema:
    from conftest import corpus_names

    names = corpus_names()
    if not names:
        pytest.skip("no corpora")
    return load_schema(Corpus(names[0], Path("/nonexistent")).schema_dir)


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "masking-rules.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def rule_error(tmp_path: Path, schema: Schema, text: str) -> str:
    path = rules_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        MaskingRules.load(path, schema)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_table_is_named(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(tmp_path, final_schema, "tables:\n  shop.customers:\n    columns: {email: pii}\n")
    assert "shop.customers" in message and "no such table" in message


def test_missing_keyspace_is_named(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(tmp_path, final_schema, "tables:\n  crm.users:\n    columns: {email: pii}\n")
    assert "crm.users" in message and "no keyspace 'crm'" in message


def test_bad_table_name(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(tmp_path, final_schema, "tables:\n  users:\n    columns: {email: pii}\n")
    assert "'users'" in message and "keyspace.table" in message


def test_missing_column_is_named(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(tmp_path, final_schema, "tables:\n  shop.users:\n    columns: {e_mail: pii}\n")
    assert "shop.users" in message and "e_mail" in message and "no such column" in message
    assert ":3:" in message  # line of the rule


def test_missing_udt_field_is_named(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(tmp_path, final_schema, "tables:\n  clinic.patients:\n    columns: {contact.fax: phi}\n")
    assert "clinic.patients" in message and "contact.fax" in message and "no field 'fax'" in message
    assert "phone, email, city" in message


def test_non_text_column_needs_drop(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(tmp_path, final_schema, "tables:\n  clinic.patients:\n    columns: {dob: phi}\n")
    assert "clinic.patients" in message and "dob" in message and "date" in message and "drop" in message


def test_map_with_non_text_values_needs_drop(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(tmp_path, final_schema, "tables:\n  clinic.patients:\n    columns: {vitals: phi}\n")
    assert "vitals" in message and "double" in message


def test_drop_of_a_key_column_is_refused(tmp_path: Path, final_schema: Schema) -> None:
    text = "tables:\n  clinic.patients:\n    columns:\n      medical_record_number: {class: phi, strategy: drop}\n"
    message = rule_error(tmp_path, final_schema, text)
    assert "medical_record_number" in message and "primary key" in message


def test_drop_of_a_collection_element_is_refused(tmp_path: Path, final_schema: Schema) -> None:
    text = "tables:\n  shop.users:\n    columns:\n      prefs.key: {class: pii, strategy: drop}\n"
    message = rule_error(tmp_path, final_schema, text)
    assert "prefs.key" in message and "drop" in message


def test_unknown_keys_are_refused(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(tmp_path, final_schema, "tables:\n  shop.users:\n    colums: {email: pii}\n")
    assert "colums" in message and "unknown key" in message and "columns" in message
    message = rule_error(tmp_path, final_schema, "tables: {}\nversoin: 1\n")
    assert "versoin" in message and "unknown key" in message
    message = rule_error(tmp_path, final_schema, "tables:\n  shop.users:\n    columns: {email: secret}\n")
    assert "email" in message and "pii" in message and "phi" in message
    message = rule_error(tmp_path, final_schema, "tables:\n  shop.users:\n    columns: {email: {class: pii, via: x}}\n")
    assert "via" in message and "unknown key" in message
    message = rule_error(tmp_path, final_schema, "tables:\n  shop.users:\n    mask_all_text: yes\n")
    assert "mask_all_text" in message


@pytest.mark.parametrize(
    "text",
    [
        "salt: s3cr3t-value-in-yaml\ntables: {}\n",
        "tables:\n  shop.users:\n    key: s3cr3t-value-in-yaml\n    columns: {email: pii}\n",
        "tables:\n  shop.users:\n    columns: {email: {class: phi, key: s3cr3t-value-in-yaml}}\n",
        "phi_key: s3cr3t-value-in-yaml\ntables: {}\n",
    ],
)
def test_secrets_in_yaml_are_refused(tmp_path: Path, final_schema: Schema, text: str) -> None:
    message = rule_error(tmp_path, final_schema, text)
    assert "CDCFAST_PII_SALT" in message and "CDCFAST_PHI_KEY" in message
    assert "s3cr3t" not in message


def test_a_column_named_key_is_a_column(tmp_path: Path, final_schema: Schema) -> None:
    # under `columns:` a name is a column, so `key` there is not mistaken for a secret
    message = rule_error(tmp_path, final_schema, "tables:\n  shop.users:\n    columns: {key: pii}\n")
    assert "no such column" in message


def test_duplicate_rule_is_refused(tmp_path: Path, final_schema: Schema) -> None:
    message = rule_error(
        tmp_path, final_schema, "tables:\n  shop.users:\n    columns:\n      email: pii\n      email: phi\n"
    )
    assert "duplicate key" in message and "email" in message


def test_example_is_valid_for_a_rule_on_a_dropped_column(final_schema: Schema) -> None:
    users = final_schema.by_name("shop", "users")
    assert "phone" not in users.columns and "phone" in users.dropped
    MaskingRules.load(EXAMPLE, final_schema)


# -- secrets -----------------------------------------------------------------------------------------


def secret_file(tmp_path: Path, name: str, content: bytes, mode: int) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def test_secrets_from_environment() -> None:
    secrets = MaskingSecrets.from_env({"CDCFAST_PII_SALT": SALT, "CDCFAST_PHI_KEY": KEY})
    assert secrets.has_salt and secrets.has_key
    assert SALT not in repr(secrets) and KEY not in repr(secrets) and "redacted" in repr(secrets)


def test_secrets_from_files(tmp_path: Path) -> None:
    salt = secret_file(tmp_path, "salt", b"file-salt-0123456789abcdef\n", 0o600)
    key = secret_file(tmp_path, "key", b"file-key-0123456789abcdef", 0o400)
    from_files = MaskingSecrets.from_env({"CDCFAST_PII_SALT_FILE": str(salt), "CDCFAST_PHI_KEY_FILE": str(key)})
    direct = MaskingSecrets(pii_salt="file-salt-0123456789abcdef", phi_key="file-key-0123456789abcdef")
    schema_free = MaskingRules.from_mapping({"tables": {}}, Schema(tables={}))
    assert Masker(schema_free, from_files).token(b"x") == Masker(schema_free, direct).token(b"x")
    assert Masker(schema_free, from_files).hash(b"x") == Masker(schema_free, direct).hash(b"x")


def test_world_readable_secret_file_is_refused(tmp_path: Path) -> None:
    key = secret_file(tmp_path, "key", b"file-key-0123456789abcdef", 0o644)
    with pytest.raises(ConfigError) as info:
        MaskingSecrets.from_env({"CDCFAST_PHI_KEY_FILE": str(key)})
    message = str(info.value)
    assert "CDCFAST_PHI_KEY_FILE" in message and str(key) in message and "0644" in message and "0600" in message
    assert "file-key" not in message


def test_missing_secret_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CDCFAST_PII_SALT_FILE"):
        MaskingSecrets.from_env({"CDCFAST_PII_SALT_FILE": str(tmp_path / "absent")})


def test_both_variable_and_file_is_ambiguous(tmp_path: Path) -> None:
    salt = secret_file(tmp_path, "salt", b"file-salt-0123456789abcdef", 0o600)
    with pytest.raises(ConfigError, match="both"):
        MaskingSecrets.from_env({"CDCFAST_PII_SALT": SALT, "CDCFAST_PII_SALT_FILE": str(salt)})


def test_short_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16") as info:
        MaskingSecrets.from_env({"CDCFAST_PHI_KEY": "tiny-key"})
    assert "CDCFAST_PHI_KEY" in str(info.value) and "tiny-key" not in str(info.value)


def test_missing_secret_when_a_rule_needs_it(final_schema: Schema) -> None:
    rules = MaskingRules.load(EXAMPLE, final_schema)
    with pytest.raises(ConfigError) as info:
        Masker(rules, MaskingSecrets(pii_salt=SALT))
    assert "CDCFAST_PHI_KEY" in str(info.value) and "clinic.patients" in str(info.value)
    with pytest.raises(ConfigError, match="CDCFAST_PII_SALT"):
        Masker(rules, MaskingSecrets(phi_key=KEY))
    only_drop = MaskingRules.from_mapping(
        {"tables": {"clinic.patients": {"columns": {"dob": {"class": "phi", "strategy": "drop"}}}}}, final_schema
    )
    Masker(only_drop, MaskingSecrets())  # drop needs no secret


def test_masker_reads_the_environment(final_schema: Schema, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CDCFAST_PII_SALT_FILE", "CDCFAST_PHI_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CDCFAST_PII_SALT", SALT)
    monkeypatch.setenv("CDCFAST_PHI_KEY", KEY)
    rules = MaskingRules.load(EXAMPLE, final_schema)
    assert Masker(rules).token(b"MRN1") == Masker(rules, SECRETS).token(b"MRN1")


# -- synthetic events: selectors, nesting, strategies ------------------------------------------------


def make_event(table: TableDef, cells: list[Cell], key: list[bytes], clustering: list[bytes | None] | None = None):
    return ChangeEvent(
        b"",
        keyspace=table.keyspace,
        table=table.name,
        op="update",
        partition_key=key,
        clustering=clustering or [],
        ts=10,
        cells=cells,
    ).with_content_id()


def test_token_and_hash_formats() -> None:
    import hashlib
    import hmac

    masker = Masker(MaskingRules.from_mapping({"tables": {}}, Schema(tables={})), SECRETS)
    assert masker.hash(b"alice") == hashlib.sha256(SALT.encode() + b"alice").hexdigest()
    assert masker.token(b"alice") == "tok_" + hmac.new(KEY.encode(), b"alice", "sha256").hexdigest()[:32]
    long_key = "k" * 100  # longer than SHA-256's block: hashed first, as HMAC does
    masker = Masker(MaskingRules.from_mapping({"tables": {}}, Schema(tables={})), MaskingSecrets(phi_key=long_key))
    assert masker.token("bob") == "tok_" + hmac.new(long_key.encode(), b"bob", "sha256").hexdigest()[:32]


def test_map_values_by_default_and_keys_when_classified(tmp_path: Path, final_schema: Schema) -> None:
    users = final_schema.by_name("shop", "users")
    prefs = users.columns["prefs"].type
    uid = bytes(16)
    cell = Cell("prefs", SET, 10, encode(prefs.params[1], "dark"), encode(prefs.params[0], "theme"))
    event = make_event(users, [cell], [uid])
    values_only = Masker(
        MaskingRules.from_mapping({"tables": {"shop.users": {"columns": {"prefs": "pii"}}}}, final_schema), SECRETS
    )
    out = values_only.mask(event).cells[0]
    assert out.path == b"theme" and out.value == values_only.hash(b"dark").encode()
    keys_too = Masker(
        MaskingRules.from_mapping(
            {"tables": {"shop.users": {"columns": {"prefs": "pii", "prefs.key": "phi"}}}}, final_schema
        ),
        SECRETS,
    )
    out = keys_too.mask(event).cells[0]
    assert out.path == keys_too.token(b"theme").encode() and out.value == keys_too.hash(b"dark").encode()
    assert keys_too.audit == {
        ("shop.users", "prefs", "pii", "hash"): 1,
        ("shop.users", "prefs.key", "phi", "token"): 1,
    }


def test_udt_field_rules(final_schema: Schema) -> None:
    patients = final_schema.by_name("clinic", "patients")
    contact = patients.columns["contact"].type
    rules = MaskingRules.from_mapping(
        {
            "tables": {
                "clinic.patients": {
                    "columns": {"contact.email": "phi", "contact.city": {"class": "pii", "strategy": "drop"}}
                }
            }
        },
        final_schema,
    )
    masker = Masker(rules, SECRETS)
    cells = [
        Cell("contact", SET, 10, b"+1-555", (0).to_bytes(2, "big")),
        Cell("contact", SET, 10, b"ann@example.com", (1).to_bytes(2, "big")),
        Cell("contact", SET, 10, b"Pune", (2).to_bytes(2, "big"), ttl=5, expires_at=99),
        Cell("contact", CLEAR, 9),
    ]
    out = masker.mask(make_event(patients, cells, [b"MRN1"])).cells
    assert out[0] == cells[0]  # phone: no rule
    assert out[1].value == masker.token(b"ann@example.com").encode()
    assert out[2] == Cell("contact", TOMBSTONE, 10, None, (2).to_bytes(2, "big"))
    assert out[3] == cells[3]
    assert decode_cell_path(contact, out[1].path or b"") == "email"


def test_frozen_udt_and_tuples_in_a_list(final_schema: Schema) -> None:
    orders = final_schema.by_name("shop", "orders")
    shipping, items = orders.columns["shipping"].type, orders.columns["items"].type
    rules = MaskingRules.from_mapping(
        {
            "tables": {
                "shop.orders": {
                    "columns": {
                        "shipping.street": "pii",
                        "shipping.zip": {"class": "pii", "strategy": "drop"},
                        "items.0": "phi",
                    }
                }
            }
        },
        final_schema,
    )
    masker = Masker(rules, SECRETS)
    address = {"street": "1 Main St", "city": "Lyon", "zip": "69001", "country": "FR", "apartment": None}
    from decimal import Decimal

    item = ("SKU-123", 2, Decimal("9.99"))
    cells = [
        Cell("shipping", SET, 10, encode(shipping, address)),
        Cell("items", SET, 10, encode(items.params[0], item), bytes(16)),
    ]
    out = masker.mask(make_event(orders, cells, [bytes(16)], [bytes(16)])).cells
    masked_address = decode(shipping, out[0].value or b"")
    assert masked_address == {**address, "street": masker.hash(b"1 Main St"), "zip": None}
    assert decode(items.params[0], out[1].value or b"") == (masker.token(b"SKU-123"), 2, Decimal("9.99"))
    assert out[1].path == bytes(16)


def test_frozen_set_is_resorted(final_schema: Schema) -> None:
    table = final_schema.by_name("types", "all_types")
    rules = MaskingRules.from_mapping({"tables": {"types.all_types": {"columns": {"f_list": "pii"}}}}, final_schema)
    masker = Masker(rules, SECRETS)
    ctype = table.columns["f_list"].type
    out = masker.mask(
        make_event(table, [Cell("f_list", SET, 1, encode(ctype, ["b", "a"]))], [bytes(4)], [b"a", bytes(8)])
    )
    assert decode(ctype, out.cells[0].value or b"") == [masker.hash(b"b"), masker.hash(b"a")]  # a list keeps its order
    # a non-frozen set<text>: the element is the path
    s_text = table.columns["s_text"].type
    rules = MaskingRules.from_mapping({"tables": {"types.all_types": {"columns": {"s_text": "phi"}}}}, final_schema)
    masker = Masker(rules, SECRETS)
    out = masker.mask(make_event(table, [Cell("s_text", SET, 1, b"", encode(s_text.params[0], "x"))], [bytes(4)]))
    assert out.cells[0].path == masker.token(b"x").encode() and out.cells[0].value == b""


def test_drop_of_a_simple_and_a_complex_column(final_schema: Schema) -> None:
    patients = final_schema.by_name("clinic", "patients")
    masker = Masker(MaskingRules.load(EXAMPLE, final_schema), SECRETS)
    cells = [
        Cell("dob", SET, 10, (2**31 + 5).to_bytes(4, "big"), ttl=60, expires_at=100),
        Cell("vitals", SET, 10, encode(patients.columns["vitals"].type.params[1], 98.6), b"temp"),
        Cell("vitals", TOMBSTONE, 12, None, b"hr"),
        Cell("notes", TOMBSTONE, 10),
    ]
    out = masker.mask(make_event(patients, cells, [b"MRN1"]))
    # the collection's cells become one CLEAR (at the newest of their timestamps), where they were
    assert out.cells == [Cell("dob", TOMBSTONE, 10), Cell("vitals", CLEAR, 12), Cell("notes", TOMBSTONE, 10)]
    assert out.partition_key == [masker.token(b"MRN1").encode()]


def test_drop_keeps_an_existing_clear(final_schema: Schema) -> None:
    patients = final_schema.by_name("clinic", "patients")
    masker = Masker(MaskingRules.load(EXAMPLE, final_schema), SECRETS)
    cells = [Cell("vitals", CLEAR, 9), Cell("vitals", SET, 10, bytes(8), b"temp")]
    out = masker.mask(make_event(patients, cells, [b"MRN1"]))
    assert out.cells == [Cell("vitals", CLEAR, 9)]


def test_unknown_column_in_an_all_text_table_fails_closed(final_schema: Schema) -> None:
    users = final_schema.by_name("shop", "users")
    rules = MaskingRules.from_mapping({"tables": {"shop.users": {"mask_all_text": "pii"}}}, final_schema)
    masker = Masker(rules, SECRETS)
    event = make_event(users, [Cell("nickname", SET, 10, b"Secret Nick")], [bytes(16)])
    with pytest.raises(MaskingError) as info:
        masker.mask(event)
    assert "shop.users" in str(info.value) and "nickname" in str(info.value)
    assert "Secret Nick" not in str(info.value)


def test_undecodable_value_fails_closed_without_the_value(final_schema: Schema) -> None:
    orders = final_schema.by_name("shop", "orders")
    rules = MaskingRules.from_mapping({"tables": {"shop.orders": {"columns": {"shipping": "pii"}}}}, final_schema)
    masker = Masker(rules, SECRETS)
    event = make_event(orders, [Cell("shipping", SET, 10, b"\x00\x00\x00\x09Rue Secret")], [bytes(16)], [bytes(16)])
    with pytest.raises(MaskingError) as info:
        masker.mask(event)
    assert "shop.orders" in str(info.value) and "shipping" in str(info.value)
    assert "Secret" not in str(info.value)


def test_mask_all_text_with_explicit_overrides(final_schema: Schema) -> None:
    patients = final_schema.by_name("clinic", "patients")
    rules = MaskingRules.from_mapping(
        {"tables": {"clinic.patients": {"mask_all_text": "pii", "columns": {"contact.email": "phi"}}}}, final_schema
    )
    masker = Masker(rules, SECRETS)
    cells = [
        Cell("contact", SET, 10, b"a@b.c", (1).to_bytes(2, "big")),
        Cell("contact", SET, 10, b"Pune", (2).to_bytes(2, "big")),
        Cell("name", SET, 10, b"Ann"),
        Cell("dob", SET, 10, (2**31).to_bytes(4, "big")),
    ]
    out = masker.mask(make_event(patients, cells, [b"MRN1"]))
    assert out.partition_key == [masker.hash(b"MRN1").encode()]
    assert [c.value for c in out.cells] == [
        masker.token(b"a@b.c").encode(),
        masker.hash(b"Pune").encode(),
        masker.hash(b"Ann").encode(),
        (2**31).to_bytes(4, "big"),  # not text: mask_all_text leaves it
    ]
    assert masker.audit == {
        ("clinic.patients", "medical_record_number", "pii", "hash"): 1,
        ("clinic.patients", "contact.email", "phi", "token"): 1,
        ("clinic.patients", "contact", "pii", "hash"): 1,
        ("clinic.patients", "name", "pii", "hash"): 1,
    }


def test_rebind_to_a_new_schema(final_schema: Schema) -> None:
    rules = MaskingRules.load(EXAMPLE, final_schema)
    rebound = rules.rebind(final_schema)
    assert rebound.describe() == rules.describe()
