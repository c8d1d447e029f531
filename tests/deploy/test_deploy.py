"""Deployment files: the systemd unit (config/systemd/), the container image and the compose stack (docker/).

Everything here is checked against the real thing where this machine has it: ``systemd-analyze`` for
the unit, ``systemd-sysusers`` for the user, cdcfast's own argument parser and configuration loader for
every command line and pipeline file the deployment names, ``docker compose``/``docker-compose config``
for the compose file, and the kernel's MemoryDenyWriteExecute (``prctl(PR_SET_MDWE)``, what the unit
asks systemd for) for cdcfast's decoder and its C extensions. What needs a Docker engine or a running
systemd (building the image, starting the stack or the unit) is not done here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cdcfast.cli import build_parser
from cdcfast.config import load_config, parse_size

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "config" / "systemd"
UNIT = SYSTEMD / "cdcfast.service"
MASKING_DROPIN = SYSTEMD / "cdcfast.service.d" / "masking.conf"
SYSUSERS = SYSTEMD / "cdcfast.sysusers.conf"
ENV_EXAMPLE = SYSTEMD / "cdcfast.env.example"
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
EXAMPLE_CONFIG = REPO / "config" / "pipeline.example.yaml"
SHARED = Path(os.environ.get("CDCFAST_SHARED", REPO.parent / "shared"))

# The supervisor's graceful stop waits up to 60 s for the parsers, then up to 120 s for the writers
# (cdcfast/supervisor/supervisor.py, Supervisor._stop): systemd and Docker must wait longer than that.
DRAIN_SECONDS = 60 + 120


# -- helpers -----------------------------------------------------------------------------------------------


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for each assignment of a systemd unit file, continuation lines joined."""
    entries: list[tuple[str, str, str]] = []
    section, pending = "", ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(text: str, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_entries(text) if s == section and k == key]


def unit_value(text: str, key: str, section: str = "Service") -> str:
    values = unit_values(text, key, section)
    assert len(values) == 1, f"{key}= should be set once in [{section}], found {values}"
    return values[0]


def exec_start(text: str) -> list[str]:
    return shlex.split(unit_value(text, "ExecStart"))


def seconds(value: str) -> float:
    """A systemd time span (300, 5min, 2min 30s, 90s) in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def parse_cdcfast(argv: list[str]) -> object:
    """cdcfast's real parser on ``argv`` (without the program name); an unknown option fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"cdcfast refuses the arguments {argv}: exit {exc.code}")


def verify_unit(tmp_path: Path, text: str, name: str = "cdcfast.service") -> list[str]:
    """``systemd-analyze verify`` on ``text`` (ExecStart's program swapped for an executable that exists);
    the lines it printed that are about this unit file."""
    fake = tmp_path / "bin" / "cdcfast"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    program = exec_start(text)[0]
    unit = tmp_path / name
    unit.write_text(text.replace(f"ExecStart={program}", f"ExecStart={fake}"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_LOG_COLOR": "0"},
    )
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if name in line or str(unit) in line]


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian: systemd)"
)


@pytest.fixture(scope="module")
def unit_text() -> str:
    return UNIT.read_text()


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def mounts(service: dict) -> dict[str, str]:
    """target -> source of a compose service's volumes (short syntax)."""
    out: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def compose_file(service: dict, target: str) -> Path:
    """The file on this side of a bind mount into a service, for a path inside the container."""
    for inside, source in mounts(service).items():
        if target == inside or target.startswith(inside.rstrip("/") + "/"):
            assert source.startswith("."), f"{inside} is not bind-mounted from a file of the repository"
            return (DOCKER / source / os.path.relpath(target, inside)).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def files_under(service: dict, directory: str) -> list[Path]:
    """The repository's files a service sees in ``directory``: bind-mounted there, or inside it."""
    directory = directory.rstrip("/")
    found: list[Path] = []
    for target, source in mounts(service).items():
        if not source.startswith("."):
            continue
        host = (DOCKER / source).resolve()
        if target.startswith(directory + "/"):
            found.extend([host] if host.is_file() else sorted(host.rglob("*")))
        elif directory == target or directory.startswith(target.rstrip("/") + "/"):
            inside = host / os.path.relpath(directory, target)
            found.extend(sorted(inside.rglob("*")))
    return [f for f in found if f.is_file()]


def volume_holding(service: dict, path: str) -> tuple[str, str]:
    """(named volume, path inside it) of the deepest volume mounted over ``path`` in a service."""
    best: tuple[str, str] | None = None
    for target, source in mounts(service).items():
        if (path == target or path.startswith(target.rstrip("/") + "/")) and not source.startswith((".", "/")):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    assert best is not None, f"no named volume holds {path}"
    return best[0], os.path.relpath(path, best[1])


def yaml_list(path: Path, key: str) -> list:
    return yaml.safe_load(path.read_text())[key]


def compose_command(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instruction, _, arguments = line.partition(" ")
        out.append((instruction.upper(), arguments.strip()))
    return out


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"use the exec (JSON) form: {arguments}"
    return value


# -- the systemd unit --------------------------------------------------------------------------------------


@needs_systemd_analyze
def test_unit_verifies_without_a_complaint(tmp_path: Path, unit_text: str) -> None:
    assert verify_unit(tmp_path, unit_text) == []


@needs_systemd_analyze
def test_unit_verify_does_report_a_mistake(tmp_path: Path, unit_text: str) -> None:
    """The check above is not vacuous: the same verify run names a directive systemd does not know."""
    broken = unit_text.replace("[Service]\n", "[Service]\nProtectSystems=strict\n", 1)
    complaints = verify_unit(tmp_path, broken)
    assert any("ProtectSystems" in line for line in complaints), complaints


@needs_systemd_analyze
def test_unit_with_the_masking_drop_in_verifies(tmp_path: Path, unit_text: str) -> None:
    dropin = MASKING_DROPIN.read_text()
    assert verify_unit(tmp_path, unit_text + "\n" + dropin) == []
    # The drop-in hands each credential to cdcfast through the variable cdcfast reads (docs/masking.md).
    credentials = dict(v.split(":", 1) for v in unit_values(dropin, "LoadCredential"))
    environment = dict(e.split("=", 1) for v in unit_values(dropin, "Environment") for e in shlex.split(v))
    assert environment == {
        "CDCFAST_PII_SALT_FILE": "%d/cdcfast-pii-salt",
        "CDCFAST_PHI_KEY_FILE": "%d/cdcfast-phi-key",
    }
    assert set(credentials) == {"cdcfast-pii-salt", "cdcfast-phi-key"}
    assert all(path.startswith("/etc/cdcfast/") for path in credentials.values())


@needs_systemd_analyze
def test_unit_hardening_scores_ok(tmp_path: Path, unit_text: str) -> None:
    """``systemd-analyze security`` rates the unit's sandbox; below 2.0 is what systemd calls OK."""
    unit = tmp_path / "cdcfast.service"
    unit.write_text(unit_text)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    match = re.search(r"Overall exposure level for cdcfast\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    assert float(match.group(1)) < 2.0, result.stdout


def test_unit_exec_start_is_accepted_by_cdcfast(unit_text: str) -> None:
    argv = exec_start(unit_text)
    assert argv[0] == "/opt/cdcfast/bin/cdcfast"
    args = parse_cdcfast(argv[1:])
    assert args.command == "supervise"
    assert args.config == "/etc/cdcfast/pipeline.yaml"
    assert not args.until_idle


def test_unit_runs_as_cdcfast_with_the_cassandra_group(unit_text: str) -> None:
    assert unit_value(unit_text, "User") == "cdcfast"
    assert unit_value(unit_text, "Group") == "cdcfast"
    assert "cassandra" in unit_value(unit_text, "SupplementaryGroups").split()
    assert unit_value(unit_text, "StateDirectory") == "cdcfast"


def test_unit_may_write_where_the_example_configuration_says(unit_text: str) -> None:
    """cdcfast deletes delivered segments from cdc_raw and keeps its state in state_dir: under
    ProtectSystem=strict both must be writable, exactly the folders config/pipeline.example.yaml names."""
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    writable = " ".join(unit_values(unit_text, "ReadWritePaths")).split()
    assert unit_value(unit_text, "ProtectSystem") == "strict"
    assert example["sources"][0]["cdc_raw"] in writable
    # StateDirectory=cdcfast is /var/lib/cdcfast, writable by the service even under ProtectSystem=strict.
    assert example["state_dir"] == "/var/lib/cdcfast"


def test_unit_restart_and_stop_policy(unit_text: str) -> None:
    assert unit_value(unit_text, "Restart") == "on-failure"
    assert seconds(unit_value(unit_text, "RestartSec")) >= 1
    assert seconds(unit_value(unit_text, "StartLimitIntervalSec", "Unit")) > 0
    assert int(unit_value(unit_text, "StartLimitBurst", "Unit")) >= 3
    assert unit_value(unit_text, "KillSignal") == "SIGTERM"
    # SIGTERM to the supervisor only: it stops its workers itself, finishing in-flight batches.
    assert unit_value(unit_text, "KillMode") == "mixed"
    assert seconds(unit_value(unit_text, "TimeoutStopSec")) > DRAIN_SECONDS


def test_unit_hardening_settings(unit_text: str) -> None:
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
    ):
        assert unit_value(unit_text, key) == "yes", key
    assert sorted(unit_value(unit_text, "RestrictAddressFamilies").split()) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert unit_values(unit_text, "SystemCallFilter")[0] == "@system-service"
    assert unit_value(unit_text, "CapabilityBoundingSet") == ""
    assert unit_value(unit_text, "UMask") == "0027"
    # PrivateUsers= would show the cassandra group's files as nobody's: cdc_raw would be unreadable.
    assert not unit_values(unit_text, "PrivateUsers")


def test_unit_secrets_come_from_a_root_only_environment_file(unit_text: str) -> None:
    assert unit_value(unit_text, "EnvironmentFile") == "-/etc/cdcfast/cdcfast.env"
    example = ENV_EXAMPLE.read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if re.match(r"^[A-Z_]+=", line)}
    # Every ${NAME} a DSN of the example configuration uses is in the example environment file.
    dsns = [sink["dsn"] for sink in yaml.safe_load(EXAMPLE_CONFIG.read_text())["sinks"]]
    used = {name for dsn in dsns for name in re.findall(r"\$\{(\w+)\}", dsn)}
    assert used and used <= names


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed")
def test_sysusers_creates_the_user_in_the_cassandra_group(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr/lib/sysusers.d").mkdir(parents=True)
    shutil.copy(SYSUSERS, tmp_path / "usr/lib/sysusers.d/cdcfast.conf")
    result = subprocess.run(["systemd-sysusers", f"--root={tmp_path}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert users["cdcfast"][5] == "/var/lib/cdcfast"
    assert users["cdcfast"][6] == "/usr/sbin/nologin"
    assert "cdcfast" in groups["cassandra"][3].split(",")


def test_cdcfast_runs_under_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes is only safe if nothing in cdcfast maps memory writable and executable.
    The kernel's own switch (prctl PR_SET_MDWE, Linux 6.3+) refuses exactly that; under it, cdcfast
    decodes a real corpus with its Cython decoder and imports every C extension the sinks use."""
    corpus = SHARED / "corpus" / "c50-v8-lz4"
    if not (corpus / "cdc_raw.tar.gz").exists():
        pytest.skip(f"no corpus at {corpus}")
    script = """
import ctypes, mmap, os, sys
if os.environ["MDWE"] == "1":
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
    try:  # the switch is on: a writable and executable mapping is refused
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit(78)
    except PermissionError:
        pass
import asyncpg, cassandra.cluster, clickhouse_driver, cramjam, msgspec, numpy, orjson  # noqa: F401
from multiprocessing import shared_memory
ring = shared_memory.SharedMemory(create=True, size=1 << 20)
ring.buf[:4] = b"ring"
ring.close(); ring.unlink()
import cdcfast.sinks.clickhouse, cdcfast.sinks.postgres, cdcfast.supervisor.supervisor  # noqa: F401
from cdcfast.cli import main
sys.exit(main(sys.argv[1:]))
"""
    argv = ["bench", "parse", "--rounds", "1", "--schema", str(corpus / "schema"), str(corpus / "cdc_raw.tar.gz")]
    decoded = {}
    for mdwe in ("0", "1"):
        result = subprocess.run(
            [sys.executable, "-c", script, *argv],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "MDWE": mdwe},
        )
        if result.returncode == 77:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout.splitlines()[-1])
        decoded[mdwe] = (summary["mutations"], summary["bytes"])
    assert decoded["1"] == decoded["0"] and decoded["1"][0] > 80_000


# -- the docs ----------------------------------------------------------------------------------------------


def test_deploy_doc_names_what_the_unit_uses(unit_text: str) -> None:
    doc = DEPLOY_DOC.read_text()
    argv = exec_start(unit_text)
    assert argv[argv.index("--config") + 1] in doc
    assert argv[0] in doc  # the venv under /opt/cdcfast
    assert unit_value(unit_text, "EnvironmentFile").lstrip("-") in doc
    for path in ("config/systemd/cdcfast.service", "config/systemd/cdcfast.sysusers.conf", "docker/compose.yaml"):
        assert path in doc and (REPO / path).exists(), path
    assert "systemctl enable --now cdcfast" in doc
    assert "/ready" in doc and "cdcfast status" in doc


def test_readme_links_the_deploy_guide() -> None:
    operating = REPO.joinpath("README.md").read_text().split("## Operating", 1)[1].split("\n## ", 1)[0]
    assert "docs/deploy.md" in operating


# -- the image ---------------------------------------------------------------------------------------------


def test_dockerfile_bases_are_pinned_and_multi_stage() -> None:
    froms = [args.split() for instruction, args in dockerfile_instructions() if instruction == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    for words in froms:
        image = words[0]
        if image in {w[2] for w in froms if len(w) == 3}:  # FROM an earlier stage
            continue
        name, _, tag = image.partition(":")
        assert name == "python" and re.match(r"3\.11\.\d+-slim", tag), f"pin python:3.11.N-slim, got {image}"


def test_dockerfile_runtime_is_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    runtime = instructions[last_from:]
    users = [args for instruction, args in runtime if instruction == "USER"]
    assert users, "the runtime stage sets USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    healthchecks = [args for instruction, args in runtime if instruction == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/health" in healthchecks[0]
    # The compiler stays in the build stage.
    assert not any("gcc" in args for instruction, args in runtime if instruction == "RUN")


def test_dockerfile_command_is_accepted_by_cdcfast(compose: dict) -> None:
    instructions = dict(dockerfile_instructions())
    entrypoint, command = exec_form(instructions["ENTRYPOINT"]), exec_form(instructions["CMD"])
    assert entrypoint == ["cdcfast"]
    args = parse_cdcfast(command)
    assert args.command == "supervise" and args.config == "/etc/cdcfast/pipeline.yaml"
    # The compose service overrides CMD: cdcfast accepts that too.
    args = parse_cdcfast(compose_command(compose["services"]["cdcfast"]))
    assert args.command == "supervise" and args.config


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    # Build artefacts of this machine must not reach the image: the build stage compiles the extension.
    for pattern in (".git", "build", "**/*.so", "cdcfast/_commitlog.c", "**/__pycache__", "tests"):
        assert pattern in patterns, pattern


# -- the compose stack -------------------------------------------------------------------------------------


def compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_valid_for_compose() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (Debian: the docker-compose package)")
    result = subprocess.run([*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {
        "cassandra",
        "postgres",
        "timescaledb",
        "clickhouse",
        "cdcfast",
        "prometheus",
        "grafana",
    }


def test_compose_images_are_pinned(compose: dict) -> None:
    images = {name: service["image"] for name, service in compose["services"].items()}
    for name, image in images.items():
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert re.search(r"\d+\.\d+", tag) and "latest" not in tag, f"{name}: pin a version, got {image}"
    assert images["cassandra"].startswith("cassandra:5.0.")
    assert re.fullmatch(r"postgres:15\.\d+", images["postgres"])
    assert re.fullmatch(r"timescale/timescaledb:2\.19\.\d+-pg15", images["timescaledb"])
    assert "build" in compose["services"]["cdcfast"]


def compose_pipeline(compose: dict, monkeypatch: pytest.MonkeyPatch) -> object:
    """The pipeline configuration the compose stack mounts into cdcfast, loaded by cdcfast itself."""
    service = compose["services"]["cdcfast"]
    args = parse_cdcfast(compose_command(service))
    for name, value in service["environment"].items():
        monkeypatch.setenv(name, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))
    return load_config(compose_file(service, args.config))


def test_compose_pipeline_points_at_the_compose_services(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    config = compose_pipeline(compose, monkeypatch)
    assert [s.schema for s in config.sources] == ["cassandra://cassandra:9042"]
    hosts = {sink.kind: re.search(r"@([^:/]+):(\d+)/", sink.dsn).groups() for sink in config.sinks}
    assert hosts == {
        "postgresql": ("postgres", "5432"),
        "timescaledb": ("timescaledb", "5432"),
        "clickhouse": ("clickhouse", "9000"),
    }
    services = compose["services"]
    for name in ("cassandra", "postgres", "timescaledb", "clickhouse"):
        assert services["cdcfast"]["depends_on"][name] == {"condition": "service_healthy"}, name
        assert "healthcheck" in services[name], name
    # The state outlives the container.
    volume, _ = volume_holding(services["cdcfast"], config.state_dir)
    assert volume in compose["volumes"]


def test_compose_cdcfast_and_cassandra_share_cdc_raw(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    config = compose_pipeline(compose, monkeypatch)
    services = compose["services"]
    environment = services["cassandra"]["environment"]
    cassandra_cdc_raw = environment["CDC_RAW_DIRECTORY"]
    cdcfast_volume = volume_holding(services["cdcfast"], config.sources[0].cdc_raw)
    assert volume_holding(services["cassandra"], cassandra_cdc_raw) == cdcfast_volume
    # Cassandra hard-links each commit log segment into cdc_raw: both folders on one file system (volume).
    assert volume_holding(services["cassandra"], environment["COMMITLOG_DIRECTORY"])[0] == cdcfast_volume[0]
    assert config.sources[0].cdc_total_space == parse_size(environment["CDC_TOTAL_SPACE"])
    # cdcfast deletes delivered segments: it runs in the group that owns cdc_raw (the cassandra image's 999).
    assert "999" in [str(g) for g in services["cdcfast"]["group_add"]]
    # The wrapper that turns CDC on is mounted where the cassandra service's entrypoint runs it.
    entrypoint = services["cassandra"]["entrypoint"]
    entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint
    assert compose_file(services["cassandra"], entrypoint[0]).exists()


def test_compose_rings_fit_in_shared_memory(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """One shared-memory ring per parser worker and sink: Docker's default /dev/shm (64 MiB) is too small."""
    config = compose_pipeline(compose, monkeypatch)
    rings = config.tuning.parser_workers * len(config.sinks) * config.tuning.ring_buffer_size
    shm = compose["services"]["cdcfast"]["shm_size"]
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", str(shm).lower()).groups()
    assert int(number) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit] >= rings + (64 << 20)


def test_compose_stop_grace_outlasts_the_drain(compose: dict) -> None:
    grace = compose["services"]["cdcfast"]["stop_grace_period"]
    assert seconds(grace) > DRAIN_SECONDS


def test_prometheus_scrapes_cdcfast_metrics_port(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    config = compose_pipeline(compose, monkeypatch)
    host, port = config.metrics_addr.rsplit(":", 1)
    assert host in ("0.0.0.0", "[::]"), "reachable from the prometheus container"
    prometheus = compose["services"]["prometheus"]
    settings = yaml.safe_load(compose_file(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    targets = [t for job in settings["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"cdcfast:{port}" in targets
    # The alert rules it loads are the repository's own.
    for rule_file in settings["rule_files"]:
        assert compose_file(prometheus, rule_file) == (DOCKER / "prometheus" / "alerts.yml").resolve()
    # The container's health check asks the same port.
    healthcheck = (
        " ".join(compose["services"]["cdcfast"].get("healthcheck", {}).get("test", []))
        or dict(dockerfile_instructions())["HEALTHCHECK"]
    )
    assert f":{port}/health" in healthcheck


def test_grafana_provisions_the_dashboard_and_a_prometheus_datasource(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = compose_file(grafana, "/etc/grafana/provisioning")
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml")) for p in yaml_list(f, "providers")]
    assert providers
    paths = [p["options"]["path"] for p in providers if p.get("type", "file") == "file"]
    files = [f for path in paths for f in files_under(grafana, path) if f.suffix == ".json"]
    assert files == [(DOCKER / "grafana" / "cdcfast-dashboard.json").resolve()]
    assert json.loads(files[0].read_text())["uid"] == "cdcfast-overview"
    sources = [s for f in sorted((provisioning / "datasources").glob("*.y*ml")) for s in yaml_list(f, "datasources")]
    assert [(s["type"], s["url"], s.get("isDefault")) for s in sources] == [
        ("prometheus", "http://prometheus:9090", True)
    ]


def test_cassandra_wrapper_turns_cdc_on(tmp_path: Path, compose: dict) -> None:
    """The cassandra service's entrypoint wrapper, run on the lines of Cassandra 5.0's own cassandra.yaml it
    changes, then handing over to (a stand-in for) the image's docker-entrypoint.sh."""
    cassandra = compose["services"]["cassandra"]
    entrypoint = cassandra["entrypoint"]
    wrapper = compose_file(cassandra, (shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint)[0])
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "cassandra.yaml").write_text(
        "cluster_name: 'Test Cluster'\n"
        "# commitlog_directory: /var/lib/cassandra/commitlog\n"
        "cdc_enabled: false\n"
        "# cdc_raw_directory: /var/lib/cassandra/cdc_raw\n"
        "# cdc_total_space: 4096MiB\n"
        "# cdc_free_space_check_interval: 250ms\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker-entrypoint.sh").write_text('#!/bin/sh\necho "handed over: $*"\n')
    (bin_dir / "docker-entrypoint.sh").chmod(0o755)
    env = {
        **os.environ,
        **{k: str(v) for k, v in cassandra["environment"].items()},
        "CASSANDRA_CONFIG": str(conf),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    env["CDC_RAW_DIRECTORY"] = str(tmp_path / "cdc" / "cdc_raw")
    env["COMMITLOG_DIRECTORY"] = str(tmp_path / "cdc" / "commitlog")
    result = subprocess.run(
        ["bash", str(wrapper), "cassandra", "-f"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "handed over: cassandra -f"
    settings = yaml.safe_load((conf / "cassandra.yaml").read_text())
    assert settings == {
        "cluster_name": "Test Cluster",
        "commitlog_directory": env["COMMITLOG_DIRECTORY"],
        "cdc_enabled": True,
        "cdc_raw_directory": env["CDC_RAW_DIRECTORY"],
        "cdc_total_space": cassandra["environment"]["CDC_TOTAL_SPACE"],
    }
    # group-writable (and setgid) so that cdcfast, in the cassandra group, can delete delivered segments
    assert (tmp_path / "cdc" / "cdc_raw").stat().st_mode & 0o7777 == 0o2770
    # Running it again (a container restart) changes nothing.
    before = (conf / "cassandra.yaml").read_text()
    subprocess.run(["bash", str(wrapper), "cassandra", "-f"], capture_output=True, env=env, timeout=60, check=True)
    assert (conf / "cassandra.yaml").read_text() == before
