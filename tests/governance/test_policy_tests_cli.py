"""The command line for domain teams: ``meshgate policy test`` and ``meshgate explain``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.logs import strip_ansi
from support.oracle import hash_key
from support.policy_files import rule_origin

from benchmarks.launch import REPO

pytestmark = pytest.mark.slow


def meshgate(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )
    result.stdout = strip_ansi(result.stdout)
    result.stderr = strip_ansi(result.stderr)
    return result


def test_policy_test_passes_on_the_demo(demo_mesh: Path):
    result = meshgate("policy", "test", str(demo_mesh))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    summary = re.search(r"(\d+) passed, (\d+) failed", result.stdout)
    assert summary and int(summary.group(1)) >= 8 and summary.group(2) == "0", result.stdout


WRONG_CASES = {
    "wrong rows": """\
- name: WRONG an EU analyst sees US orders too
  user: alice
  query: SELECT DISTINCT region FROM sales.orders ORDER BY region
  expect:
    rows: [["EU"], ["US"]]
""",
    "wrong denial": """\
- name: WRONG ops may not read orders
  user: erin
  query: SELECT count(*) FROM sales.orders
  expect:
    denied: true
""",
    "wrong access": """\
- name: WRONG marketing reads orders
  user: carol
  query: SELECT count(*) FROM sales.orders
  expect:
    row_count: 1
""",
    "wrong mask": """\
- name: WRONG ops sees exact amounts
  user: erin
  query: SELECT amount FROM sales.orders ORDER BY order_id LIMIT 20
  expect:
    matches:
      amount: "[.][0-9][1-9]$"
""",
}


@pytest.mark.parametrize("kind", list(WRONG_CASES))
def test_policy_test_fails_and_names_a_wrong_expectation(mesh_copy: Path, kind: str):
    tests_file = mesh_copy / "sales" / "policy_tests.yaml"
    tests_file.write_text(
        tests_file.read_text(encoding="utf-8") + WRONG_CASES[kind], encoding="utf-8"
    )
    name = WRONG_CASES[kind].split("name: ", 1)[1].splitlines()[0]
    result = meshgate("policy", "test", str(mesh_copy))
    assert result.returncode != 0, result.stdout
    failing = [line for line in result.stdout.splitlines() if "FAIL" in line]
    assert len(failing) == 1 and name in failing[0], result.stdout
    assert "policy_tests.yaml" in failing[0]
    summary = re.search(r"(\d+) passed, (\d+) failed", result.stdout)
    assert summary and int(summary.group(1)) >= 8 and summary.group(2) == "1", result.stdout


def test_policy_test_rejects_a_malformed_case_file(mesh_copy: Path):
    tests_file = mesh_copy / "crm" / "policy_tests.yaml"
    tests_file.write_text(
        tests_file.read_text(encoding="utf-8")
        + "- name: no expectation\n  user: bob\n  query: SELECT 1\n",
        encoding="utf-8",
    )
    result = meshgate("policy", "test", str(mesh_copy))
    assert result.returncode != 0
    assert "policy_tests.yaml" in result.stdout + result.stderr


def test_policy_test_fails_when_a_policy_file_is_invalid(mesh_copy: Path):
    crm_policy = mesh_copy / "crm" / "policy.csv"
    crm_policy.write_text(
        crm_policy.read_text(encoding="utf-8") + "p, marketing, sales.orders, read, allow\n",
        encoding="utf-8",
    )
    result = meshgate("policy", "test", str(mesh_copy))
    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    assert "policy.csv" in output and f":{len(crm_policy.read_text().splitlines())}" in output


def test_explain_cli_shows_masks_and_rule_lines(demo_mesh: Path):
    result = meshgate(
        "explain", "--mesh", str(demo_mesh), "--user", "alice", "SELECT * FROM crm.customers"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    email_rule = rule_origin(
        demo_mesh, "crm", "p, analyst_eu, crm.customers.email, mask, allow, partial_email"
    )
    ssn_rule = rule_origin(demo_mesh, "global", "p, *, tag:pii, mask, allow, hash")
    read_rule = rule_origin(demo_mesh, "crm", "p, analyst_eu, crm.customers, read, allow")
    assert "partial_email" in out
    assert f"masked with partial_email by {email_rule}" in out
    assert f"masked with hash by {ssn_rule}" in out
    assert f"read allowed by {read_rule}" in out
    assert hash_key(demo_mesh) not in out + result.stderr
    assert "<hash key>" in out


def test_explain_cli_shows_the_row_filter(demo_mesh: Path):
    result = meshgate(
        "explain",
        "--mesh",
        str(demo_mesh),
        "--user",
        "alice",
        "SELECT sum(amount) FROM sales.orders",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    origin = rule_origin(
        demo_mesh, "sales", "p, analyst_eu, sales.orders, filter, allow, region = {user.region}"
    )
    assert f"rows filtered by {origin}" in result.stdout
    assert "'EU'" in result.stdout  # the governed SQL carries alice's attribute, bound as a literal


def test_explain_cli_denies_like_the_server(demo_mesh: Path):
    result = meshgate(
        "explain", "--mesh", str(demo_mesh), "--user", "carol", "SELECT * FROM sales.orders"
    )
    assert result.returncode != 0
    assert "unknown product sales.orders (or you may not read it)" in " ".join(
        (result.stdout + result.stderr).split()
    )
