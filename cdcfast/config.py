"""The pipeline configuration file (``config/pipeline.example.yaml``), validated before anything starts.

:func:`load_config` reads YAML into the msgspec Structs below with strict types (``"5"`` is not an
integer, ``yes`` is not a string) and no unknown keys, then checks what types cannot say: DSN schemes
match the sink kind, names are unique, durations are positive, ``metrics_addr`` is ``host:port``.
Every error is a :class:`~cdcfast.errors.ConfigError` that names the file, the line, the key path as
it reads in the file (``sinks[1].dsn``) and what was expected there.

Also here, for every YAML file cdcfast reads (the masking rules too): :func:`load_yaml`, which
refuses duplicate keys and remembers where each key is, so errors can point at a line.

Conventions of the file:

* durations are seconds (``0.5``) or a number with a unit: ``250ms``, ``2s``, ``5m``, ``1h``, ``7d``;
* sizes are bytes (``65536``) or a number with a unit: ``64MiB``, ``1GiB``, ``512KiB``, ``10MB``;
* relative paths are relative to the configuration file's folder; ``~`` is expanded;
* ``${NAME}`` in a DSN is replaced by the environment variable ``NAME`` (an unset variable is an
  error), so passwords need not be written in the file. DSNs are redacted from every ``repr``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect as mi
import yaml

from cdcfast.errors import ConfigError
from cdcfast.sinks.tcp import TCP_TIMEOUT_SECONDS

DEFAULT_METRICS_ADDR = "127.0.0.1:9464"

# -- YAML with positions ------------------------------------------------------------------------------

KeyPath: TypeAlias = Sequence[str | int]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key_node.value!r} (first given at line {seen[key_node.value]})",
                        key_node.start_mark,
                    )
                seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def format_key_path(path: KeyPath) -> str:
    """``["sinks", 1, "dsn"]`` -> ``sinks[1].dsn``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


class YamlDocument:
    """A parsed YAML file: its data, and the line of any key path in it."""

    def __init__(self, path: Path, data: Any, root: yaml.Node | None) -> None:
        self.path = path
        self.data = data
        self._root = root

    def line(self, path: KeyPath, key: bool = False) -> int | None:
        """1-based line of the value at ``path`` (of its key when ``key``), or of the nearest parent found."""
        node = self._root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in path:
            found: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                        line = key_node.start_mark.line + 1
                        found = key_node if key and part is path[-1] else value_node
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                found = node.value[part]
            if found is None:
                return line
            node = found
            line = node.start_mark.line + 1
        return line

    def where(self, path: KeyPath = (), key: bool = False) -> str:
        line = self.line(path, key) if path else None
        return f"{self.path}:{line}" if line else str(self.path)

    def error(self, path: KeyPath, message: str, key: bool = False) -> ConfigError:
        """``FILE:LINE: key.path: message``."""
        return ConfigError(f"{self.where(path, key)}: {format_key_path(path)}: {message}")


def load_yaml(path: str | Path) -> YamlDocument:
    """Parse one YAML document; syntax errors and duplicate keys are ConfigErrors with file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        what = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{where}: not valid YAML (line {mark.line + 1 if mark else '?'}): {what}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return YamlDocument(path, data, root)


# -- durations and sizes --------------------------------------------------------------------------------


class Seconds(float):
    """A duration in seconds; written as a number of seconds or with a unit (``500ms``, ``2s``, ``7d``)."""


class ByteSize(int):
    """A size in bytes; written as a number of bytes or with a unit (``64MiB``, ``10MB``)."""


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
}
_NUMBER_UNIT = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def parse_duration(value: Any) -> Seconds:
    """Seconds from ``0.5``, ``2``, ``"250ms"``, ``"2s"``, ``"5m"``, ``"1h"``, ``"7d"``; must be positive."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s, 5m, 1h or 7d, got true/false")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _NUMBER_UNIT.fullmatch(value)) and match.group(2) in _DURATION_UNITS:
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 500ms, 2s, 5m, 1h or 7d, got {value!r}")
    if not seconds > 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return Seconds(seconds)


def parse_size(value: Any) -> ByteSize:
    """Bytes from ``4096``, ``"64MiB"``, ``"1 GiB"``, ``"10MB"``; must be positive."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 4096, 512KiB or 64MiB, got true/false")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _NUMBER_UNIT.fullmatch(value)) and match.group(2).lower() in _SIZE_UNITS:
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    else:
        raise ValueError(f"expected a size such as 4096, 512KiB or 64MiB, got {value!r}")
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return ByteSize(size)


def size_option(option: str, value: str | None) -> ByteSize | None:
    """A command line size (``--size 1GiB``); the error names the option."""
    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Seconds:
        return parse_duration(value)
    if kind is ByteSize:
        return parse_size(value)
    raise NotImplementedError(f"no conversion to {kind.__name__}")


# -- the configuration ---------------------------------------------------------------------------------

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class SourceConfig(_Section, frozen=True):
    """One Cassandra node's CDC directory, read next to the node."""

    node: str  # the node's name (or host id): names its checkpoints and metrics; unique
    cdc_raw: str  # the node's cdc_raw directory
    schema: str  # NNN.json file, folder of them (highest wins), or cassandra://host:port
    require_idx: bool = True  # read a segment only as far as its _cdc.idx says is durable
    poll_interval: Seconds = Seconds(0.5)
    on_error: Literal["skip", "stop"] = "skip"  # damaged data: skip and report, or stop
    cdc_total_space: ByteSize | None = None  # the node's cdc_total_space; default: Cassandra's own default


class Hypertable(_Section, frozen=True):
    time_column: str
    chunk_interval: Seconds = Seconds(7 * 86400.0)


class _Sink(_Section, frozen=True, tag_field="kind"):
    name: str
    dsn: str
    batch_size: PositiveInt | None = None  # most events per write; default: tuning.write_batch_size
    dropped_columns: Literal["keep", "remove"] = "keep"  # a column dropped in Cassandra: keep or remove it
    auto_migrate: bool = True  # apply Cassandra schema changes to the warehouse tables (docs/schema-evolution.md)

    @property
    def kind(self) -> str:
        return str(self.__struct_config__.tag)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, dsn={redact_dsn(self.dsn)!r}, ...)"


class PostgresSink(_Sink, frozen=True, tag="postgresql"):
    pass


class TimescaleSink(_Sink, frozen=True, tag="timescaledb"):
    hypertables: dict[str, Hypertable] = {}  # keyspace.table -> hypertable settings


class ClickHouseSink(_Sink, frozen=True, tag="clickhouse"):
    pass


class NullSink(_Sink, frozen=True, tag="null"):
    """Stores nothing but its checkpoint (``null://``: in the state dir), for measuring the pipeline.
    Quote the kind in YAML: ``kind: "null"``."""


Sink: TypeAlias = PostgresSink | TimescaleSink | ClickHouseSink | NullSink
SINK_SCHEMES = {
    "postgresql": ("postgresql", "postgres"),
    "timescaledb": ("postgresql", "postgres"),
    "clickhouse": ("clickhouse", "clickhouses"),
    "null": ("null",),
}


class MaskingConfig(_Section, frozen=True):
    rules: str  # the masking rules file (docs/masking.md)


class TuningConfig(_Section, frozen=True):
    parser_workers: PositiveInt = 2  # processes decoding segments
    ring_buffer_size: ByteSize = ByteSize(64 << 20)  # shared-memory ring between parsers and sinks
    batch_size: PositiveInt = 5000  # events per batch a parser sends through a ring
    # commit log bytes (logical) per work item: a durable stretch is cut at section ends into items
    # of about this size, which the parsers decode in parallel (smaller: sooner first batches)
    work_item_bytes: ByteSize = ByteSize(4 << 20)
    # most events per sink write, unless the sink says otherwise: a writer writes the batches waiting
    # in its rings together (each write has a fixed cost; a backlog is caught up in fewer writes)
    write_batch_size: PositiveInt = 50_000
    retry_attempts: PositiveInt = 4  # tries of one batch on transient sink errors before the sink is down
    retry_base_seconds: PositiveFloat = 0.5  # first retry delay (full jitter, doubling)
    retry_cap_seconds: PositiveFloat = 30.0  # longest delay between retries and between probes of a down sink
    # a write running this long is reported (a warning with what the sink says it waits on, each
    # period); a sink that cannot say, not answering, has the write's connection cut: retried
    write_watch_seconds: PositiveFloat = 30.0
    # a sink connection whose server's machine acknowledges nothing for this long is given up by its
    # socket (TCP keepalive and user timeout): a network that silently drops one connection's packets
    # while new ones work. A busy server still acknowledges; only its machine being unreachable counts
    tcp_timeout_seconds: PositiveFloat = TCP_TIMEOUT_SECONDS


class PipelineConfig(_Section, frozen=True):
    sources: list[SourceConfig]
    sinks: list[Sink]
    state_dir: str  # checkpoints and dead letters
    masking: MaskingConfig | None = None
    tuning: TuningConfig = TuningConfig()
    metrics_addr: str = DEFAULT_METRICS_ADDR


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "***"
    if parts.password is None:
        return re.sub(r"(?i)(password=)[^&;]*", r"\1***", dsn)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    redacted = parts._replace(netloc=f"{user}:***@{netloc[1]}").geturl()
    return re.sub(r"(?i)(password=)[^&;]*", r"\1***", redacted)


# -- msgspec errors -> ConfigError -----------------------------------------------------------------------

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true/false",
    "null": "null",
}


def _words(types: str) -> str:
    return " or ".join(_TYPE_WORDS.get(t.strip(), t.strip()) for t in types.split("|"))


def _unwrap(info: mi.Type, data: Any) -> mi.Type:
    """The concrete struct type of ``data`` in a union (by its tag), else the non-null member."""
    if isinstance(info, mi.UnionType):
        structs = [t for t in info.types if isinstance(t, mi.StructType)]
        if structs and isinstance(data, dict):
            tagged = [t for t in structs if t.tag_field and data.get(t.tag_field) == t.tag]
            if tagged:
                return tagged[0]
            if len(structs) == 1:
                return structs[0]
        non_null = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(non_null) == 1:
            return non_null[0]
    return info


def _resolve(raw_path: str, data: Any) -> tuple[list[str | int], mi.Type | None]:
    """msgspec's ``$.sinks[1].hypertables[...].x`` -> key path in the file (dict keys found again) and
    the type expected there."""
    info: mi.Type | None = mi.type_info(PipelineConfig)
    path: list[str | int] = []
    for token in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", raw_path.removeprefix("$")):
        name, index = token
        info = _unwrap(info, data) if info is not None else None
        if name:
            path.append(name)
            field = None
            if isinstance(info, mi.StructType):
                field = next((f for f in info.fields if f.encode_name == name), None)
            info = field.type if field else None
            data = data.get(name) if isinstance(data, dict) else None
        elif index == "...":  # a dict value: msgspec does not say which key; find the one that fails
            value_type = info.value_type if isinstance(info, mi.DictType) else None
            entries = data if isinstance(data, dict) else {}
            key = next((k for k, v in entries.items() if value_type is not None and not _converts(v, value_type)), None)
            if key is None:
                key = next(iter(entries), "...")
            path.append(str(key))
            info = value_type
            data = entries.get(key)
        else:
            path.append(int(index))
            info = info.item_type if isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType)) else None
            data = data[int(index)] if isinstance(data, list) and int(index) < len(data) else None
    return path, (_unwrap(info, data) if info is not None else None)


def _converts(item: Any, info: mi.Type) -> bool:
    if not isinstance(info, mi.StructType):
        return True
    try:
        msgspec.convert(item, info.cls, strict=True, dec_hook=_dec_hook)
    except msgspec.ValidationError:
        return False
    return True


def _expectation(message: str, info: mi.Type | None) -> tuple[str | None, str]:
    """(extra key, text) for one msgspec message."""
    if match := re.match(r"Object missing required field `(.+)`", message):
        return match.group(1), "required key is missing"
    if match := re.match(r"Object contains unknown field `(.+)`", message):
        name = match.group(1)
        known = [f.encode_name for f in info.fields] if isinstance(info, mi.StructType) else []
        text = "unknown key"
        if known:
            text += f"; expected one of {', '.join(sorted(known))}"
            close = difflib.get_close_matches(name, known, n=1)
            if close:
                text += f" (did you mean {close[0]!r}?)"
        return name, text
    if match := re.match(r"Invalid (?:enum )?value (.+)", message):
        options = [str(v) for v in info.values] if isinstance(info, mi.LiteralType) else []
        text = f"invalid value {match.group(1)}"
        return None, text + (f"; expected one of {', '.join(sorted(options))}" if options else "")
    if match := re.fullmatch(r"Expected `(.+?)`(.*?)(?:, got `(.+?)`)?", message):
        got = f", got {_words(match.group(3))}" if match.group(3) else ""
        return None, f"expected {_words(match.group(1))}{match.group(2)}{got}"
    return None, message


def _translate(error: msgspec.ValidationError, document: YamlDocument) -> ConfigError:
    match = re.fullmatch(r"(.*) - at `(\$[^`]*)`", str(error), re.S)
    message, raw_path = (match.group(1), match.group(2)) if match else (str(error), "$")
    path, info = _resolve(raw_path, document.data)
    if message.startswith("Invalid value") and path and path[-1] == "kind":  # the sink kind: the union's tag
        value = message.removeprefix("Invalid value ")
        return document.error(path, f"invalid value {value}; expected one of {', '.join(sorted(SINK_SCHEMES))}")
    extra, text = _expectation(message, info)
    if extra is not None:
        return document.error([*path, extra], text, key=True)
    return document.error(path, text)


# -- semantic checks -------------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CASSANDRA_URI = re.compile(r"cassandra://([^:/\s]+)(?::(\d+))?/?")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_]+\.[A-Za-z0-9_]+")


def _substitute(document: YamlDocument, path: KeyPath, text: str) -> str:
    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise document.error(path, f"environment variable {name} (written ${{{name}}}) is not set")
        return os.environ[name]

    return _ENV.sub(variable, text)


def check_host_port(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[ipv6]:port`` -> (host, port), or None when it is not one."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", text)
    if not match:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    return (host, port) if 0 <= port <= 65535 else None  # 0: any free port (tests)


def _resolve_path(base: Path, text: str) -> str:
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else base / path)


def _check(config: PipelineConfig, document: YamlDocument) -> PipelineConfig:
    base = document.path.resolve().parent
    if not config.sources:
        raise document.error(["sources"], "expected at least one source")
    if not config.sinks:
        raise document.error(["sinks"], "expected at least one sink")

    sources: list[SourceConfig] = []
    nodes: dict[str, int] = {}
    for i, source in enumerate(config.sources):
        if source.node in nodes:
            raise document.error(
                ["sources", i, "node"], f"node {source.node!r} is already configured by sources[{nodes[source.node]}]"
            )
        nodes[source.node] = i
        schema = source.schema
        if schema.startswith("cassandra:"):
            if not _CASSANDRA_URI.fullmatch(schema):
                raise document.error(["sources", i, "schema"], f"expected cassandra://host:port, got {schema!r}")
        else:
            schema = _resolve_path(base, schema)
        sources.append(msgspec.structs.replace(source, cdc_raw=_resolve_path(base, source.cdc_raw), schema=schema))

    sinks: list[Sink] = []
    names: dict[str, int] = {}
    for i, sink in enumerate(config.sinks):
        if sink.name in names:
            raise document.error(
                ["sinks", i, "name"], f"sink name {sink.name!r} is already used by sinks[{names[sink.name]}]"
            )
        names[sink.name] = i
        dsn = _substitute(document, ["sinks", i, "dsn"], sink.dsn)
        schemes = SINK_SCHEMES[sink.kind]
        scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else None
        if scheme not in schemes:
            got = f"got {scheme}://" if scheme else "got no scheme"
            raise document.error(
                ["sinks", i, "dsn"], f"a {sink.kind} sink needs a {' or '.join(s + '://' for s in schemes)} DSN, {got}"
            )
        if isinstance(sink, TimescaleSink):
            for table in sink.hypertables:
                if not _TABLE_NAME.fullmatch(table):
                    raise document.error(
                        ["sinks", i, "hypertables", table], f"expected a keyspace.table name, got {table!r}", key=True
                    )
        sinks.append(msgspec.structs.replace(sink, dsn=dsn))

    if check_host_port(config.metrics_addr) is None:
        raise document.error(
            ["metrics_addr"], f"expected host:port (e.g. {DEFAULT_METRICS_ADDR}), got {config.metrics_addr!r}"
        )
    masking = config.masking
    if masking is not None:
        masking = msgspec.structs.replace(masking, rules=_resolve_path(base, masking.rules))
    state_dir = _resolve_path(base, config.state_dir)
    sinks = [with_null_folder(sink, state_dir) for sink in sinks]
    return msgspec.structs.replace(config, sources=sources, sinks=sinks, masking=masking, state_dir=state_dir)


def with_null_folder(sink: Sink, state_dir: str) -> Sink:
    """A ``null://`` sink without a folder keeps its checkpoint in the state dir."""
    if not isinstance(sink, NullSink):
        return sink
    from cdcfast.sinks.null import null_dsn_in

    return msgspec.structs.replace(sink, dsn=null_dsn_in(sink.dsn, state_dir, sink.name))


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline configuration file; every error names file, line and key path."""
    document = load_yaml(path)
    if document.data is None:
        raise ConfigError(f"{document.path}: the file is empty; see config/pipeline.example.yaml")
    if not isinstance(document.data, dict):
        raise ConfigError(f"{document.where()}: (top level): expected a mapping of keys (sources, sinks, ...)")
    try:
        config = msgspec.convert(document.data, PipelineConfig, strict=True, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _translate(exc, document) from None
    return _check(config, document)
