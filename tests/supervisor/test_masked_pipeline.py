"""Masking end to end: a masked replay through ``cdcfast supervise`` leaves no raw sensitive value
of the corpora in any sink row, change log, dead letter, log line or metric."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from conftest import CORPUS_ROOT, Corpus
from support.pipeline import supervise_command
from support.services import ensure_services
from support.sinks import fresh_database
from transform.test_masking import EXAMPLE, KEY, MIN_SEARCH_LENGTH, SALT, sensitive_values

pytestmark = pytest.mark.services
CORPUS = "c50-v7-plain"


async def everything_stored(dsn: str) -> str:
    """Every row of the masked tables, their change logs and the dead letters, as text."""
    conn = await asyncpg.connect(dsn)
    parts = []
    for relation in (
        "shop.users",
        "shop.users_changes",
        "clinic.patients",
        "clinic.patients_changes",
        "cdcfast.dead_letters",
    ):
        rows = await conn.fetch(f"SELECT r::text AS t FROM {relation} r")
        parts.extend(row["t"] for row in rows)
    # The row states, kept as msgpack, hold values too.
    for relation in ("shop.users", "clinic.patients", 'shop."users__tombstones"', 'clinic."patients__tombstones"'):
        rows = await conn.fetch(f"SELECT _state FROM {relation}")
        parts.extend(row["_state"].decode("utf-8", "replace") for row in rows)
    await conn.close()
    return "\n".join(parts)


def test_masked_replay_leaks_nothing(corpus_scratch: Path, tmp_path: Path) -> None:
    if not (CORPUS_ROOT / CORPUS).exists():
        pytest.skip("corpus missing")
    corpus = Corpus(CORPUS, corpus_scratch)
    dsn = asyncio.run(fresh_database(ensure_services(["postgres"])["postgres"]))
    cdc_raw, state = tmp_path / "cdc_raw", tmp_path / "state"
    shutil.copytree(corpus.cdc_raw, cdc_raw)
    log = tmp_path / "supervise.log"
    env = {**os.environ, "CDCFAST_PII_SALT": SALT, "CDCFAST_PHI_KEY": KEY}
    process = subprocess.Popen(
        supervise_command(
            cdc_raw,
            corpus.schema_dir,
            dsn,
            state=state,
            extra=("--masking-rules", str(EXAMPLE), "--log-level", "DEBUG"),
        ),
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        env=env,
    )
    metrics_text = ""
    try:
        address = state / "run" / "metrics.addr"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if address.exists() and not any(p.name.endswith("_cdc.idx") for p in cdc_raw.iterdir()):
                break  # every segment delivered and cleaned up
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        url = address.read_text()
        metrics_text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        assert "cdcfast_masked_fields_total" in metrics_text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
    stored = asyncio.run(everything_stored(dsn))
    assert "tok_" in stored  # masked values are there, tokenized
    logs = log.read_text()
    assert '"masking_audit"' in logs and '"clinic.patients"' in logs  # counts per table and column, no values
    haystacks = {"sinks": stored, "logs": logs, "metrics": metrics_text}
    raw = [v for v in sensitive_values(CORPUS) if len(v) >= MIN_SEARCH_LENGTH]
    assert len(raw) > 1000
    for where, text in haystacks.items():
        leaked = [v for v in raw if v in text]
        assert not leaked, f"{len(leaked)} raw sensitive values in the {where}, e.g. {leaked[:3]}"
    # Unmasked columns stay readable: a non-sensitive value is in the sink as written.
    assert "gold" in stored or "silver" in stored  # shop.users.loyalty_tier


def test_bad_masking_rules_stop_the_start_with_the_reason(tmp_path: Path) -> None:
    """A rule naming a missing column, or a missing secret, is a startup error: no worker ever starts
    (nothing could leak), and the message names what is wrong."""
    schema = CORPUS_ROOT / CORPUS / "schema"
    if not schema.exists():
        pytest.skip("corpus missing")
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ntables:\n  shop.users:\n    columns:\n      no_such_column: pii\n")
    command = [
        sys.executable,
        "-m",
        "cdcfast.cli",
        "supervise",
        "--cdc-raw",
        str(tmp_path / "cdc_raw"),
        "--schema",
        str(schema),
        "--sink",
        "postgresql://nobody@127.0.0.1:1/x",
        "--state-dir",
        str(tmp_path / "state"),
        "--masking-rules",
    ]
    env = {**os.environ, "CDCFAST_PII_SALT": SALT, "CDCFAST_PHI_KEY": KEY}
    bad_rule = subprocess.run([*command, str(rules)], capture_output=True, text=True, env=env, timeout=60)
    assert bad_rule.returncode == 1
    assert "no_such_column" in bad_rule.stderr and "shop.users" in bad_rule.stderr
    no_secret = {k: v for k, v in env.items() if not k.startswith("CDCFAST_P")}
    missing = subprocess.run([*command, str(EXAMPLE)], capture_output=True, text=True, env=no_secret, timeout=60)
    assert missing.returncode == 1 and "CDCFAST_PII_SALT" in missing.stderr
    assert not (tmp_path / "state" / "run").exists()  # no process was started
