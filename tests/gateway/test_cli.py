"""The ``meshgate`` command line as a person meets it: help, messages, output that pastes."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml
from typer.testing import CliRunner

from benchmarks.launch import REPO
from gateway.audit.log import AuditLog, read_audit
from gateway.cli import app
from gateway.security.passwords import verify_password

COMMANDS = [
    [],
    ["serve"],
    ["node"],
    ["demo"],
    ["products"],
    ["query"],
    ["explain"],
    ["policy"],
    ["policy", "test"],
    ["audit"],
    ["bench"],
    ["hash-password"],
]
WIDE = {"COLUMNS": "400", "NO_COLOR": "1"}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures logging for its process (warnings only): put the test session's
    configuration back afterwards."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env or WIDE)


def run_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI in its own process: what a person sees on stdout and stderr, logs included."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **WIDE}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "meshgate")
def test_help_texts_show_no_restructuredtext_markup(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "``" not in result.output, result.output


def test_hash_password_prints_one_unwrapped_line(tmp_path: Path) -> None:
    password = "correct horse battery staple"
    result = run("hash-password", "--password", password, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    assert len(lines[0]) > 80  # longer than the terminal: it would have been wrapped
    assert verify_password(password, lines[0])


def test_demo_on_an_existing_mesh_names_the_command_line_flag(mesh_copy: Path) -> None:
    result = run("demo", str(mesh_copy))
    assert result.exit_code == 1
    assert "--overwrite" in result.output
    assert "overwrite=True" not in result.output


def test_audit_lists_failed_logins_beside_queries(mesh_copy: Path) -> None:
    """A failed login record has no query_id: the audit command used to die on it."""
    log = AuditLog(mesh_copy / ".meshgate" / "audit")
    try:
        log.record(
            "query_begin",
            query_id="q1",
            user="alice",
            sql="SELECT 1 AS marker_one",
            decision="allowed",
            products=[],
        )
        log.record("login_failed", user="mallory", error="invalid username or password")
        log.record(
            "query_end",
            query_id="q1",
            user="alice",
            outcome="ok",
            rows=1,
            bytes=8,
            duration_ms=1.5,
            error=None,
        )
    finally:
        log.close()
    result = run("audit", str(mesh_copy))
    assert result.exit_code == 0, result.output
    assert "marker_one" in result.output
    assert "login failed" in result.output and "mallory" in result.output
    assert "invalid username or password" in result.output
    only_alice = run("audit", str(mesh_copy), "--user", "alice")
    assert only_alice.exit_code == 0, only_alice.output
    assert "marker_one" in only_alice.output and "mallory" not in only_alice.output


def test_products_for_a_user_explains_the_rows_column_and_logs_nothing(demo_mesh: Path) -> None:
    result = run_process("products", str(demo_mesh), "--user", "alice")
    assert result.returncode == 0, result.stderr
    assert "sales.orders" in result.stdout and "logistics.shipments" not in result.stdout
    assert "—" in result.stdout
    assert "counts are not shown per user" in result.stdout
    output = result.stdout + result.stderr
    assert "policy_loaded" not in output and "[info" not in output, output


def test_explain_names_rule_files_relative_to_the_mesh(demo_mesh: Path) -> None:
    sql = "SELECT * FROM crm.customers"
    result = run("explain", "--mesh", str(demo_mesh), "--user", "alice", sql)
    assert result.exit_code == 0, result.output
    assert "by crm/policy.csv:" in result.output
    assert "by policies/global.csv:" in result.output
    assert " global.csv:" not in result.output


def test_query_explain_and_policy_test_are_audited_as_run_from_the_command_line(
    mesh_copy: Path,
) -> None:
    """Each statement of ``meshgate query``/``explain``/``policy test`` leaves the records a
    client's would (begin and end, or the refusal), as the mesh user it ran as, with
    ``client`` naming the command line and the OS user who ran it."""
    tag = f"cli-{uuid.uuid4().hex[:8]}"
    mesh = str(mesh_copy)
    ran = run_process(
        "query",
        "--mesh",
        mesh,
        "--user",
        "alice",
        f"SELECT region, count(*) AS n, '{tag}' AS tag FROM sales.orders GROUP BY region",
    )
    assert ran.returncode == 0, ran.stderr
    assert "1 row(s) shown" in ran.stdout  # alice sees the EU only
    denied = run_process(
        "query", "--mesh", mesh, "--user", "carol", f"SELECT '{tag}' AS tag FROM sales.orders"
    )
    assert denied.returncode == 1 and "unknown product sales.orders" in denied.stderr
    explained = run_process(
        "explain", "--mesh", mesh, "--user", "carol", f"SELECT '{tag}' AS t FROM crm.customers"
    )
    assert explained.returncode == 0, explained.stderr
    tested = run_process("policy", "test", mesh)
    assert tested.returncode == 0, tested.stdout + tested.stderr

    who = f"cli:{getpass.getuser()}@{socket.gethostname()}"
    records = list(read_audit(mesh_copy / ".meshgate" / "audit"))
    ends = {r["query_id"]: r for r in records if r["event"] == "query_end"}
    attempts = [r for r in records if r["event"] in ("query_begin", "query_refused")]
    assert attempts and all(r["client"] == who for r in attempts), attempts

    (query,) = [r for r in attempts if tag in r["sql"] and r["user"] == "alice"]
    assert query["event"] == "query_begin" and query["decision"] == "allowed"
    assert query["products"] == ["sales.orders"]
    end = ends[query["query_id"]]
    assert (end["outcome"], end["rows"], end["error"]) == ("ok", 1, None)
    assert end["bytes"] > 0 and end["duration_ms"] > 0

    (refusal,) = [
        r
        for r in attempts
        if tag in r["sql"] and r["user"] == "carol" and "EXPLAIN" not in r["sql"]
    ]
    assert (refusal["event"], refusal["decision"]) == ("query_refused", "denied")

    (explain_begin,) = [
        r for r in attempts if r["sql"].startswith("EXPLAIN POLICY") and tag in r["sql"]
    ]
    explain_end = ends[explain_begin["query_id"]]
    assert explain_end["outcome"] == "ok" and explain_end["rows"] >= 2

    cases = [
        case
        for file in sorted(mesh_copy.glob("*/policy_tests.yaml"))
        for case in yaml.safe_load(file.read_text())
    ]
    for case in cases:
        runs = [r for r in attempts if r["sql"] == case["query"] and r["user"] == case["user"]]
        assert len(runs) == 1, (case["name"], runs)
        assert runs[0]["event"] == "query_refused" or runs[0]["query_id"] in ends

    listed = run_process("audit", mesh, "--user", "alice")
    assert listed.returncode == 0, listed.stderr
    assert tag in listed.stdout and who in listed.stdout
