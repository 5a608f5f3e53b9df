"""Policy tests as code: YAML cases that domains keep next to their policies.

``<mesh>/<domain>/policy_tests.yaml`` (and ``<mesh>/policies/policy_tests.yaml``) hold a
list of cases::

    - name: an EU analyst sees only EU orders
      user: alice
      query: SELECT DISTINCT region FROM sales.orders
      expect:
        rows: [["EU"]]          # exact rows, in order (use ORDER BY)
        row_count: 1            # or just the count
        columns: [region]       # the result's column names, in order
        matches: {region: "^EU$"}   # every value of a column matches a regex
        denied: true            # the gateway refuses the query

``run_cases`` runs them through a caller-supplied runner (the gateway's own pipeline),
so a domain checks its rules in CI before publishing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from policies.errors import PolicyTestFileError

TESTS_FILE_NAME = "policy_tests.yaml"
_EXPECTATIONS = {"rows", "row_count", "columns", "matches", "denied"}

#: (user, sql) -> the result; raises when the gateway refuses or fails the query.
Runner = Callable[[str, str], pa.Table]


@dataclass(frozen=True)
class PolicyCase:
    name: str
    user: str
    query: str
    expect: dict
    where: str


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    passed: bool
    message: str


def find_case_files(mesh_dir: Path) -> list[Path]:
    return sorted(mesh_dir.glob(f"*/{TESTS_FILE_NAME}"))


def load_cases(path: Path) -> list[PolicyCase]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except yaml.YAMLError as exc:
        raise PolicyTestFileError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, list):
        raise PolicyTestFileError(f"{path}: expected a list of test cases")
    cases = []
    for index, item in enumerate(raw):
        where = f"{path}: case {index + 1}"
        if not isinstance(item, dict) or not {"user", "query", "expect"} <= item.keys():
            raise PolicyTestFileError(f"{where}: each case needs user, query and expect")
        expect = item["expect"]
        if not isinstance(expect, dict) or not expect or set(expect) - _EXPECTATIONS:
            raise PolicyTestFileError(f"{where}: expect takes {', '.join(sorted(_EXPECTATIONS))}")
        cases.append(
            PolicyCase(
                str(item.get("name", f"case {index + 1}")),
                str(item["user"]),
                str(item["query"]),
                expect,
                where,
            )
        )
    return cases


def run_cases(
    cases: list[PolicyCase], runner: Runner, is_denial: Callable[[Exception], bool]
) -> list[CaseResult]:
    """Run every case; a case passes when every expectation holds."""
    return [_run(case, runner, is_denial) for case in cases]


def _run(case: PolicyCase, runner: Runner, is_denial: Callable[[Exception], bool]) -> CaseResult:
    expect = case.expect
    try:
        table = runner(case.user, case.query)
    except Exception as exc:  # noqa: BLE001 - refused or failed: is that what the case wants?
        if expect.get("denied") and is_denial(exc):
            return CaseResult(case, True, "denied as expected")
        return CaseResult(case, False, f"query failed: {exc}")
    if expect.get("denied"):
        return CaseResult(case, False, f"expected a denial, got {table.num_rows} row(s)")
    problems = []
    if "columns" in expect and table.column_names != list(expect["columns"]):
        problems.append(f"columns {table.column_names} != {expect['columns']}")
    rows = [list(row.values()) for row in table.to_pylist()]
    if "row_count" in expect and len(rows) != expect["row_count"]:
        problems.append(f"{len(rows)} row(s), expected {expect['row_count']}")
    if "rows" in expect and [_plain(r) for r in rows] != [_plain(r) for r in expect["rows"]]:
        problems.append(f"rows {rows[:5]}{'...' if len(rows) > 5 else ''} != {expect['rows']}")
    for column, pattern in (expect.get("matches") or {}).items():
        if column not in table.column_names:
            problems.append(f"no column {column!r} in the result")
            continue
        regex = re.compile(pattern)
        bad = [v for v in table.column(column).to_pylist() if v is None or not regex.search(str(v))]
        if bad:
            problems.append(f"{len(bad)} value(s) of {column} do not match {pattern!r}")
    return CaseResult(case, not problems, "; ".join(problems) or "ok")


def _plain(row: list) -> list:
    return [str(v) if not isinstance(v, (int, float, str, bool, type(None))) else v for v in row]
