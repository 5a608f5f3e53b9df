"""The function allow-list, reviewed against the installed DuckDB (issue 11, point 2):
functions that read state shared by every user are refused, and functions whose cost or
result grows past the generating-function bounds are bounded or refused at planning."""

from __future__ import annotations

import re

import duckdb
import pytest
import sqlglot

from gateway.errors import QueryRefused
from gateway.planning.query import Query
from gateway.planning.read_only import require_read_only
from policies.safe_sql import (
    MAX_COLLECTED_VALUES,
    MAX_COMPARED_CONSTANT,
    function_refusal,
)


def refusal(sql: str) -> str | None:
    """Why the read-only step refuses ``sql`` (None: accepted)."""
    ast = sqlglot.parse_one(sql, read="duckdb")
    try:
        require_read_only(Query(text=sql, ast=ast), None)
    except QueryRefused as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- global state

#: Every function of DuckDB 2.0 that reads or changes state shared by every user (counters,
#: settings, catalog, sequences, log, connection addresses) or is an oracle on hidden rows.
GLOBAL_STATE = [
    "txid_current()",
    "current_transaction_id()",
    "current_query_id()",
    "current_connection_id()",
    "current_query()",
    "current_setting('threads')",
    "getvariable('x')",
    "in_search_path('memory', 'main')",
    "index_key('t', 'i')",
    "vector_type(1)",
    "write_log('x')",
    "nextval('s')",
    "currval('s')",
    "setval('s', 1)",
    "setseed(0.5)",
    "inet_client_addr()",
    "inet_client_port()",
    "inet_server_addr()",
    "inet_server_port()",
    "version()",
    "get_block_size('memory')",
    "current_database()",
    "current_schema()",
    "current_schemas(true)",
    "current_catalog()",
    "current_user",
    "session_user",
    "current_role()",
    "user()",
    "pg_postmaster_start_time()",
    "pg_conf_load_time()",
    "assert_true(1 = 1)",
    "error('x')",
    "stats(1)",
    "sleep_ms(1)",
    "pg_sleep(1)",
]


@pytest.mark.parametrize("call", GLOBAL_STATE)
def test_functions_reading_shared_state_are_refused(call: str) -> None:
    reason = refusal(f"SELECT {call} AS v")
    name = call.split("(")[0]
    assert reason is not None, f"{call} is allowed"
    assert f"{name}()" in reason and "not allowed" in reason, reason


def test_txid_current_names_why() -> None:
    assert "every user" in refusal("SELECT txid_current() AS t")


#: The clock is not other users' activity: allowed.
TIME = [
    "now()",
    "current_timestamp",
    "current_date",
    "today()",
    "get_current_timestamp()",
    "transaction_timestamp()",
    "current_localtimestamp()",
    "current_localtime()",
    "get_current_time()",
    "ago(INTERVAL 1 DAY)",
]


@pytest.mark.parametrize("call", TIME)
def test_time_functions_are_allowed(call: str) -> None:
    assert refusal(f"SELECT {call} AS t") is None


#: Words that mark a function as possibly reading engine state or other users' activity.
_STATE_WORDS = re.compile(
    r"transaction|connection|query|setting|session|version|memory|database|catalog|search path|"
    r"platform|extension|sequence|logger|sleep|block|secret|getvariable|statistic|thread|"
    r"privilege|client|server|\brole\b|\buser\b|current_|getenv|environment|on a table|"
    r"\bseed\b|process",
    re.IGNORECASE,
)

#: Functions whose name or documentation has such a word, reviewed and allowed, with why.
REVIEWED_ALLOWED = {
    "ago": "current_timestamp minus an interval: the clock",
    "current_date": "the clock",
    "current_localtime": "the clock",
    "current_localtimestamp": "the clock",
    "get_current_time": "the clock",
    "get_current_timestamp": "the clock",
    "transaction_timestamp": "the clock (start of the query's own transaction)",
    "decimal_division": "arithmetic (its documentation compares with SQL Server)",
    "parse_filename": "string function over its argument (a file 'extension')",
    "path_join": "string function over its arguments (the 'platform' separator)",
    "uuid_extract_version": "reads its UUID argument",
}


def test_every_installed_function_that_may_read_engine_state_was_reviewed() -> None:
    """A DuckDB upgrade that adds a function mentioning engine state fails here until it is
    refused or reviewed into REVIEWED_ALLOWED."""
    with duckdb.connect() as con:
        rows = con.sql(
            "SELECT function_name, list(DISTINCT function_type), "
            "string_agg(DISTINCT coalesce(description, ''), ' '), "
            "string_agg(DISTINCT coalesce(macro_definition, ''), ' ') "
            "FROM duckdb_functions() WHERE NOT function_name LIKE '\\_\\_%' ESCAPE '\\' "
            "GROUP BY ALL"
        ).fetchall()
    unreviewed = []
    for name, kinds, description, macro in rows:
        if not {"scalar", "aggregate", "window", "macro"} & set(kinds):
            continue  # table functions are refused wholesale
        if not _STATE_WORDS.search(f"{name} {description} {macro}") or name in REVIEWED_ALLOWED:
            continue
        if function_refusal(sqlglot.exp.Anonymous(this=name, expressions=[])) is None:
            unreviewed.append(name)
    assert unreviewed == [], f"allowed, may read engine state, not reviewed: {unreviewed}"
    assert len(rows) > 500  # the catalog was really read


# --------------------------------------------------------------------------- edit distances

QUADRATIC = [
    "levenshtein",
    "editdist3",
    "damerau_levenshtein",
    "jaro_similarity",
    "jaro_winkler_similarity",
]


@pytest.mark.parametrize("name", QUADRATIC)
def test_edit_distance_of_two_computed_strings_is_refused(name: str) -> None:
    reason = refusal(f"SELECT {name}(a.name, b.name) AS d FROM crm.customers a, crm.customers b")
    shown = "levenshtein" if name == "editdist3" else name
    assert reason is not None and f"{shown}()" in reason
    assert "constant" in reason and str(MAX_COMPARED_CONSTANT) in reason


@pytest.mark.parametrize("name", QUADRATIC)
def test_edit_distance_with_a_short_constant_is_allowed(name: str) -> None:
    assert refusal(f"SELECT {name}(name, 'Smith') AS d FROM crm.customers") is None
    assert refusal(f"SELECT {name}('Smith', name) AS d FROM crm.customers") is None


def test_edit_distance_constant_is_bounded() -> None:
    long = "x" * (MAX_COMPARED_CONSTANT + 1)
    reason = refusal(f"SELECT damerau_levenshtein(repeat('ab', 5000), '{long}') AS d")
    assert reason is not None and f"{MAX_COMPARED_CONSTANT + 1:,} characters" in reason


@pytest.mark.parametrize(
    "call", ["hamming(a.name, b.name)", "mismatches(a.name, b.name)", "jaccard(a.name, b.name)"]
)
def test_linear_string_comparisons_need_no_constant(call: str) -> None:
    assert refusal(f"SELECT {call} AS d FROM crm.customers a, crm.customers b") is None


# --------------------------------------------------------------------------- collectors

COLLECTING = [
    "list(name)",
    "array_agg(name)",
    "string_agg(name, ',')",
    "group_concat(name)",
    "listagg(name, ',')",
    "json_group_array(name)",
    "histogram(name)",
]


@pytest.mark.parametrize("call", COLLECTING)
def test_a_collector_alone_is_allowed(call: str) -> None:
    assert refusal(f"SELECT {call} AS v FROM crm.customers") is None


@pytest.mark.parametrize("call", COLLECTING)
def test_a_collector_feeding_a_generating_function_is_refused(call: str) -> None:
    """A collected value may be 10,000 values long: repeating it 200 times is refused."""
    reason = refusal(
        f"SELECT repeat(v::VARCHAR, 200) AS r FROM (SELECT {call} AS v FROM crm.customers)"
    )
    assert reason is not None and "repeat()" in reason and f"{MAX_COLLECTED_VALUES:,}" in reason


def test_a_collector_with_a_quadratic_comparison_is_refused() -> None:
    reason = refusal(
        "SELECT damerau_levenshtein(s, 'abcdefghijklmnopqrstuvwxyz') AS d "
        "FROM (SELECT string_agg(name, ',') AS s FROM crm.customers)"
    )
    assert reason is not None and "damerau_levenshtein()" in reason and "string_agg()" in reason


def test_array_of_a_subquery_is_refused_with_the_bounded_alternative() -> None:
    reason = refusal("SELECT ARRAY(SELECT name FROM crm.customers) AS a")
    assert reason is not None and "list(" in reason


@pytest.mark.parametrize(
    "call",
    [
        "max(name, 20000)",
        "min(name, 20000)",
        "arg_max(name, customer_id, 20000)",
        "min_by(name, customer_id, 20000)",
        "approx_top_k(name, 20000)",
    ],
)
def test_top_n_aggregates_are_bounded(call: str) -> None:
    assert f"{MAX_COLLECTED_VALUES:,} values" in refusal(f"SELECT {call} AS v FROM crm.customers")
    small = call.replace("20000", "10")
    assert refusal(f"SELECT {small} AS v FROM crm.customers") is None


def test_plain_min_and_max_are_not_generating_functions() -> None:
    sql = "SELECT lpad(max(name), 20, ' ') AS v, repeat(min(name), 3) AS w FROM crm.customers"
    assert refusal(sql) is None


@pytest.mark.parametrize(
    "sql",
    ["SELECT bitstring('1', 2000000000) AS b", "SELECT equi_width_bins(0, 10, 900000, false) AS b"],
)
def test_other_generating_functions_are_bounded(sql: str) -> None:
    assert "limited to" in refusal(sql)
