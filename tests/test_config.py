"""The pipeline configuration: the shipped example loads, and every mistake is reported with the file,
the line, the key path (``sinks[1].dsn``) and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cdcfast.config import (
    ClickHouseSink,
    PipelineConfig,
    PostgresSink,
    TimescaleSink,
    load_config,
    parse_duration,
    parse_size,
)
from cdcfast.errors import ConfigError
from cdcfast.sinks import sink_kind

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "pipeline.example.yaml"

MINIMAL = """\
sources:
  - node: cass-1
    cdc_raw: /var/lib/cassandra/cdc_raw
    schema: cassandra://127.0.0.1:9042
sinks:
  - name: pg
    kind: postgresql
    dsn: postgresql://cdc@db.internal:5432/warehouse
  - name: ch
    kind: clickhouse
    dsn: clickhouse://default@ch.internal:9000/cdc
state_dir: /var/lib/cdcfast
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message, f"the file is not named: {message}"
    return message


# -- the example -------------------------------------------------------------------------------------


def test_example_loads_with_its_documented_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_PASSWORD", "pg-secret-password")
    monkeypatch.setenv("TSDB_PASSWORD", "tsdb-secret-password")
    monkeypatch.setenv("CH_PASSWORD", "ch-secret-password")
    config = load_config(EXAMPLE)
    assert isinstance(config, PipelineConfig)
    assert [s.node for s in config.sources] == ["cass-node-1"]
    source = config.sources[0]
    assert source.require_idx is True and source.on_error == "skip"
    assert source.poll_interval == 0.5
    assert [type(s) for s in config.sinks] == [PostgresSink, TimescaleSink, ClickHouseSink]
    assert [s.kind for s in config.sinks] == ["postgresql", "timescaledb", "clickhouse"]
    assert "pg-secret-password" in config.sinks[0].dsn  # ${PG_PASSWORD} was substituted
    timescale = config.sinks[1]
    assert isinstance(timescale, TimescaleSink)
    assert timescale.hypertables["telemetry.readings"].time_column == "ts"
    assert timescale.hypertables["telemetry.readings"].chunk_interval == 86400.0
    assert config.sinks[2].dropped_columns == "remove"
    assert config.masking is not None and Path(config.masking.rules).is_absolute()
    assert config.masking.rules.endswith("masking-rules.yaml")
    assert config.metrics_addr == "127.0.0.1:9464"
    assert config.tuning.parser_workers >= 1 and config.tuning.ring_buffer_size == 64 * 1024 * 1024
    # passwords never show in a repr (logs, tracebacks)
    assert "secret-password" not in repr(config)
    assert "secret-password" not in repr(config.sinks)


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        sources:
          - {node: n1, cdc_raw: data/cdc_raw, schema: schema}
        sinks:
          - {name: pg, kind: postgresql, dsn: "postgres:///warehouse?host=/run/postgresql"}
        masking: {rules: masking.yaml}
        state_dir: state
        """,
    )
    config = load_config(path)
    assert config.metrics_addr == "127.0.0.1:9464"
    assert config.sources[0].cdc_raw == str(tmp_path / "data" / "cdc_raw")
    assert config.sources[0].schema == str(tmp_path / "schema")
    assert config.state_dir == str(tmp_path / "state")
    assert config.masking is not None and config.masking.rules == str(tmp_path / "masking.yaml")
    assert config.sinks[0].dropped_columns == "keep" and config.sinks[0].batch_size is None
    assert config.sources[0].poll_interval == 0.5 and config.sources[0].on_error == "skip"


def test_minimal_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.sources[0].schema == "cassandra://127.0.0.1:9042"
    assert [s.name for s in config.sinks] == ["pg", "ch"]
    assert config.masking is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(2, 2.0), (0.25, 0.25), ("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0), ("2h", 7200.0), ("7d", 604800.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [(4096, 4096), ("64MiB", 64 << 20), ("1 GiB", 1 << 30), ("10MB", 10**7)])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


# -- structural errors: file, line, key path, expectation --------------------------------------------


def test_wrong_type_names_key_path_line_and_expectation(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("dsn: clickhouse://default@ch.internal:9000/cdc", "dsn: 9000"))
    assert "sinks[1].dsn" in message
    assert "expected a string, got an integer" in message
    assert ":11:" in message  # the line of the offending value


def test_missing_required_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("    dsn: postgresql://cdc@db.internal:5432/warehouse\n", ""))
    assert "sinks[0].dsn" in message and "required key is missing" in message


def test_missing_top_level_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("state_dir: /var/lib/cdcfast\n", ""))
    assert "state_dir" in message and "required key is missing" in message


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    text = MINIMAL.replace("    kind: postgresql\n", "    kind: postgresql\n    batchsize: 10\n")
    message = error_of(tmp_path, text)
    assert "sinks[0].batchsize" in message and "unknown key" in message
    assert "did you mean 'batch_size'" in message
    assert ":8:" in message


def test_unknown_sink_kind(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("kind: clickhouse", "kind: mysql"))
    assert "sinks[1].kind" in message
    assert "expected one of clickhouse, null, postgresql, timescaledb" in message and "'mysql'" in message


def test_hypertables_only_for_timescale(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "    kind: postgresql\n", "    kind: postgresql\n    hypertables: {telemetry.readings: {time_column: ts}}\n"
    )
    message = error_of(tmp_path, text)
    assert "sinks[0].hypertables" in message and "unknown key" in message


def test_bad_enum_value(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, MINIMAL.replace("    schema: cassandra", "    on_error: ignore\n    schema: cassandra")
    )
    assert "sources[0].on_error" in message and "expected one of skip, stop" in message


def test_bad_batch_size(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "tuning: {batch_size: 0}\n")
    assert "tuning.batch_size" in message and "expected an integer >= 1" in message


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "tuning: {parser_workers: yes}\n")
    assert "tuning.parser_workers" in message and "expected an integer, got true/false" in message


def test_sources_must_be_a_list(tmp_path: Path) -> None:
    text = "sources: {node: cass-1}\nsinks:" + MINIMAL.split("sinks:")[1]
    message = error_of(tmp_path, text)
    assert "sources" in message and "expected a list" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping" in error_of(tmp_path, "- just\n- a list\n")
    assert "empty" in error_of(tmp_path, "# nothing\n")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "sources: [\nsinks: {\n")
    assert "not valid YAML" in message and "line" in message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "state_dir: /elsewhere\n")
    assert "state_dir" in message and "duplicate key" in message


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no-such-pipeline.yaml"):
        load_config("/nonexistent/no-such-pipeline.yaml")


# -- semantic errors ---------------------------------------------------------------------------------


def test_dsn_scheme_must_match_kind_without_printing_the_dsn(tmp_path: Path) -> None:
    text = MINIMAL.replace("clickhouse://default@ch.internal", "postgresql://user:hunter2hunter2@ch.internal")
    message = error_of(tmp_path, text)
    assert "sinks[1].dsn" in message
    assert "clickhouse sink needs a clickhouse:// or clickhouses:// DSN, got postgresql://" in message
    assert "hunter2" not in message


def test_dsn_without_scheme(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("postgresql://cdc@db.internal:5432/warehouse", "db.internal"))
    assert "sinks[0].dsn" in message and "postgresql://" in message


def test_sink_names_are_unique(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("name: ch", "name: pg"))
    assert "sinks[1].name" in message and "'pg'" in message and "sinks[0]" in message


def test_source_nodes_are_unique(tmp_path: Path) -> None:
    text = MINIMAL.replace("sinks:", "  - {node: cass-1, cdc_raw: /x, schema: cassandra://h:9042}\nsinks:")
    message = error_of(tmp_path, text)
    assert "sources[1].node" in message and "'cass-1'" in message


@pytest.mark.parametrize("value", ["0", "-1", "0s", "'-5ms'"])
def test_durations_must_be_positive(tmp_path: Path, value: str) -> None:
    message = error_of(
        tmp_path, MINIMAL.replace("    schema: cassandra", f"    poll_interval: {value}\n    schema: cassandra")
    )
    assert "sources[0].poll_interval" in message and "positive" in message


def test_duration_syntax(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, MINIMAL.replace("    schema: cassandra", "    poll_interval: soon\n    schema: cassandra")
    )
    assert "sources[0].poll_interval" in message and "expected a duration" in message and "500ms" in message


def test_hypertable_chunk_interval(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "  - name: ch\n",
        "  - name: ts\n    kind: timescaledb\n    dsn: postgresql://ts@tsdb:5432/metrics\n"
        "    hypertables:\n      telemetry.readings: {time_column: ts, chunk_interval: 0}\n  - name: ch\n",
    )
    message = error_of(tmp_path, text)
    assert "sinks[1].hypertables.telemetry.readings.chunk_interval" in message and "positive" in message


def test_hypertable_table_names(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "  - name: ch\n",
        "  - name: ts\n    kind: timescaledb\n    dsn: postgresql://ts@tsdb:5432/metrics\n"
        "    hypertables:\n      readings: {time_column: ts}\n  - name: ch\n",
    )
    message = error_of(tmp_path, text)
    assert "sinks[1].hypertables.readings" in message and "keyspace.table" in message


@pytest.mark.parametrize("addr", ["9464", "localhost:", ":9464", "localhost:99999", "localhost:http", "::1:9464"])
def test_metrics_addr(tmp_path: Path, addr: str) -> None:
    message = error_of(tmp_path, MINIMAL + f"metrics_addr: '{addr}'\n")
    assert "metrics_addr" in message and "host:port" in message


@pytest.mark.parametrize("addr", ["0.0.0.0:9464", "[::1]:9464", "metrics.internal:80"])
def test_metrics_addr_accepted(tmp_path: Path, addr: str) -> None:
    assert load_config(write(tmp_path, MINIMAL + f"metrics_addr: '{addr}'\n")).metrics_addr == addr


def test_schema_uri_checked(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("cassandra://127.0.0.1:9042", "cassandra://"))
    assert "sources[0].schema" in message and "cassandra://host:port" in message


def test_empty_lists(tmp_path: Path) -> None:
    text = MINIMAL.split("sinks:")[0] + "sinks: []\nstate_dir: /s\n"
    message = error_of(tmp_path, text)
    assert "sinks" in message and "at least one" in message


# -- environment variables in DSNs --------------------------------------------------------------------


def test_env_substitution_in_dsn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_TEST_PG_PASSWORD", "p@ss word")
    text = MINIMAL.replace("postgresql://cdc@db", "postgresql://cdc:${CDC_TEST_PG_PASSWORD}@db")
    config = load_config(write(tmp_path, text))
    assert config.sinks[0].dsn == "postgresql://cdc:p@ss word@db.internal:5432/warehouse"
    assert "p@ss" not in repr(config.sinks[0])


def test_env_substitution_missing_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDC_TEST_UNSET_VAR", raising=False)
    text = MINIMAL.replace("clickhouse://default@", "clickhouse://default:${CDC_TEST_UNSET_VAR}@")
    message = error_of(tmp_path, text)
    assert "sinks[1].dsn" in message and "CDC_TEST_UNSET_VAR" in message and "not set" in message


@pytest.mark.parametrize(
    "dsn", ["mysql://app:hunter2@db.example:3306/shop", "mysql://app@db.example/shop?password=hunter2&ssl=1"]
)
def test_a_dsn_of_an_unknown_kind_is_named_without_its_password(dsn: str) -> None:
    """``--sink DSN`` with a scheme cdcfast does not write to: the error names the DSN (scheme, user,
    host), never the password, wherever the DSN carries it."""
    with pytest.raises(ConfigError) as error:
        sink_kind(dsn)
    message = str(error.value)
    assert "hunter2" not in message
    assert "mysql://app" in message and "db.example" in message
    assert "expected one of postgresql://, postgres://, timescaledb://, clickhouse://, null://" in message
