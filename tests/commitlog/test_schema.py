"""Schema loading: CQL type strings, dropped columns, files and folders."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import CORPUS_ROOT

from cdcfast.commitlog.cqltypes import parse_cql_type
from cdcfast.commitlog.schema import load_schema, parse_dropped_time
from cdcfast.errors import SchemaError


def corpus_schema_files() -> list[Path]:
    return sorted(CORPUS_ROOT.glob("*/schema/*.json"))


def test_every_corpus_type_prints_as_cassandra_spells_it() -> None:
    files = corpus_schema_files()
    if not files:
        pytest.skip("no corpora")
    seen = 0
    for path in files:
        document = json.loads(path.read_text())
        udts = {}
        for t in document["types"]:
            udts.setdefault(t["keyspace_name"], {})[t["type_name"]] = (tuple(t["field_names"]), tuple(t["field_types"]))
        for column in document["columns"] + document["dropped_columns"]:
            ctype = parse_cql_type(column["type"], udts.get(column["keyspace_name"], {}))
            assert ctype.cql() == column["type"]
            seen += 1
    assert seen > 1000


def test_wire_properties() -> None:
    assert parse_cql_type("int").fixed_length == 4
    assert parse_cql_type("date").fixed_length == -1  # fixed size, but length-prefixed on the wire
    assert parse_cql_type("vector<float, 3>").fixed_length == 12
    assert parse_cql_type("vector<text, 3>").fixed_length == -1
    assert parse_cql_type("list<int>").is_complex and not parse_cql_type("frozen<list<int>>").is_complex
    assert parse_cql_type("frozen<tuple<int, text>>").cql() == "frozen<tuple<int, text>>"
    with pytest.raises(SchemaError, match="unknown type 'nope'"):
        parse_cql_type("list<nope>")
    with pytest.raises(SchemaError, match="map takes 2"):
        parse_cql_type("map<int>")


def test_dropped_times_in_any_year() -> None:
    when = dt.datetime(2026, 11, 26, 6, 7, 43, 40000, tzinfo=dt.timezone.utc)
    assert parse_dropped_time("2026-11-26 06:07:43.040Z") == int(when.timestamp() * 1000) * 1000
    assert parse_dropped_time("2026-11-26 07:07:43.040+0100") == parse_dropped_time("2026-11-26 06:07:43.040Z")
    assert parse_dropped_time("1969-12-31 23:59:59.999Z") == -1000
    # A drop written USING TIMESTAMP near Long.MAX_VALUE: year 294247, beyond datetime's range.
    assert parse_dropped_time("+294247-01-10 04:00:54.775Z") == (2**63 - 1) // 1000 * 1000
    with pytest.raises(SchemaError, match="dropped_time"):
        parse_dropped_time("yesterday")


def test_a_folder_means_its_highest_numbered_file(tmp_path: Path) -> None:
    files = corpus_schema_files()
    if not files:
        pytest.skip("no corpora")
    folder = files[0].parent
    newest = max(folder.glob("*.json"), key=lambda p: int(p.stem))
    assert load_schema(folder).source == str(newest)
    with pytest.raises(SchemaError, match="no NNN.json"):
        load_schema(tmp_path)
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(SchemaError, match="not a schema file"):
        load_schema(tmp_path / "x.json")
    with pytest.raises(SchemaError, match="no such schema"):
        load_schema(tmp_path / "missing.json")
