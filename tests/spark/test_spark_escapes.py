"""The adversarial suite's escape attempts on the Spark path: nothing leaks when every query
runs on Spark (``[engines.spark] route = "always"``).

Every case of ``support.attacks.CASES`` (tests/adversarial/test_escapes.py runs them on
DuckDB) goes through ``spark_gateway`` as its demo user, judged by the same leak detector
(``support.leaks``) and, when answered, by the case's own sharper check. A case that must
be refused is refused on Spark too. A refusal is acceptable when it is clear: the
gateway's own (then the same as on DuckDB), Spark's static "cannot run on Spark", or
Spark's error class without its text; a case that only an answer may meet (a refusal there
would tell about hidden rows) may only be refused before any row is read.

Then attempts of Spark's own: ``${...}`` variable substitution (Spark reads its conf, its
environment and Java system properties into the SQL text), string escapes Spark reads
otherwise than DuckDB, Spark's file and catalog tables, Spark-only functions and the
fragment views a Spark session holds; and, on a gateway whose crm.customers (a Parquet
product Spark reads in place) has a row filter, probes of the hidden rows.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlglot import parse_one
from support.attacks import (
    CASES,
    Case,
    all_values,
    case_params,
    eu_count,
    first_value,
    is_zero,
    zero_rows,
)
from support.clients import Clients, Outcome
from support.leaks import assert_no_leak
from support.oracle import Oracle
from support.servers import Private, configure, copy_mesh, start_private

from benchmarks.spark_server import SparkServer
from gateway.errors import QueryRefused
from gateway.planning.spark_sql import check_spark_semantics, spark_sql
from gateway.spark import connect
from gateway.spark.connect import SparkConnect

pytestmark = [pytest.mark.spark, pytest.mark.slow]

#: a refusal decided before anything ran: the plan needs what Spark cannot do exactly
STATIC_REFUSAL = "this query cannot run on Spark"
#: Spark failed while running: only its error class reaches the client
SPARK_FAILURE = re.compile(
    r"Spark failed the query \([A-Za-z0-9_.]+\); the data values involved are not shown"
)
#: what a client must never see of Spark's own errors
SPARK_INTERNALS = ("Traceback", "org.apache.", "java.", "at scala.", "SQLSTATE")


@pytest.fixture(scope="module")
def on_spark(spark_gateway: Private) -> Iterator[Clients]:
    pool = Clients(spark_gateway.uri)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def on_duckdb(gateway) -> Iterator[Clients]:
    pool = Clients(gateway.uri)
    yield pool
    pool.close()


def _said(error: str) -> str:
    """What the gateway said, without the transport's details."""
    return error.split(". Detail:")[0]


def judge(
    case: Case,
    outcome: Outcome,
    oracle: Oracle,
    spark_server: SparkServer,
    on_duckdb: Clients | None,
) -> None:
    """``outcome`` of ``case`` on Spark: nothing leaked, an acceptable refusal or an answer
    that passes the case's check. ``on_duckdb``: where the gateway's own refusals are
    compared (None: the case has no DuckDB twin)."""
    assert_no_leak(outcome, oracle, case.user, orders_only=case.orders_only)
    leaked = any(spark_server.token in text for text in outcome.texts())
    assert not leaked, f"LEAK of the Spark Connect token: {case.id}"  # never printed
    if outcome.refused:
        error = outcome.error or ""
        shown = outcome.describe().replace(oracle.hash_key, "<HASH KEY>")
        assert not any(word in error for word in SPARK_INTERNALS), shown
        if case.answer:  # only a refusal no hidden row could cause
            assert STATIC_REFUSAL in error, f"expected an answer, got {shown}"
        if STATIC_REFUSAL in error or SPARK_FAILURE.search(error):
            return
        assert on_duckdb is not None, f"refused, and not by Spark: {shown}"
        twin = on_duckdb.run(case.user, outcome.sql, outcome.params)
        assert twin.refused, f"refused on Spark only: {shown}"
        assert _said(error) == _said(twin.error or ""), "refused otherwise than on DuckDB"
        return
    assert not case.refuse, f"expected a refusal, got {outcome.describe()}".replace(
        oracle.hash_key, "<HASH KEY>"
    )
    if case.check is not None:
        case.check(outcome, oracle)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_escape_attempt_on_spark(
    case: Case, on_spark: Clients, on_duckdb: Clients, oracle: Oracle, spark_server: SparkServer
) -> None:
    outcome = on_spark.run(case.user, case.text(oracle), case_params(case, oracle))
    judge(case, outcome, oracle, spark_server, on_duckdb)


def test_the_spark_gateway_runs_on_spark(on_spark: Clients) -> None:
    """The cases above ran on Spark (else they prove nothing of it)."""
    outcome = on_spark.run("alice", "EXPLAIN SELECT count(*) FROM crm.customers")
    engines = [r["explain_value"] for r in outcome.rows if r["explain_key"] == "engine"]
    assert engines == ['spark: [engines.spark] route = "always"'], outcome.describe()


# --------------------------------------------------------------------------- Spark's own


def _literal(value: str):
    return first_value(lambda v, t: v == value, f"{value!r} as written")


def _all_customers(value, oracle: Oracle) -> bool:
    return value == oracle.customers


#: What Spark would substitute in a statement's text before parsing it.
SUBSTITUTIONS = (
    "${env:MESHGATE_SPARK_TOKEN}",
    "${env:HOME}",
    "${system:user.dir}",
    "${spark.sql.warehouse.dir}",
    "${sparkconf:spark.master}",
    "${spark.connect.authenticate.token}",
    "$${env:PATH}",
    "\\${env:HOME}",
    "${hivevar:x}",
)

SPARK_CASES: list[Case] = [
    *(
        Case(
            f"substitution-literal-{i}",
            "dave",
            f"SELECT '{text}' AS v",
            answer=True,
            check=_literal(text),
        )
        for i, text in enumerate(SUBSTITUTIONS)
    ),
    Case(
        "substitution-in-a-predicate",  # one bit of the server's environment per query
        "alice",
        "SELECT count(*) AS n FROM crm.customers WHERE '${env:HOME}' NOT LIKE '$%'",
        answer=True,
        check=first_value(is_zero, "0"),
    ),
    Case(
        "substitution-in-a-parameter",
        "alice",
        "SELECT count(*) AS n FROM crm.customers WHERE ? LIKE '$%'",
        params=("${env:MESHGATE_SPARK_TOKEN}",),
        answer=True,
        check=first_value(_all_customers, "every customer"),
    ),
    Case(
        "substitution-in-a-comment",
        "alice",
        "SELECT count(*) AS n FROM sales.orders -- ${env:HOME}\n",
        check=first_value(eu_count, "the EU count"),
    ),
    Case(
        "backslash-ends-a-string",  # DuckDB: '\' is a backslash; Spark: \' escapes the quote
        "carol",
        "SELECT '\\' AS a, ' UNION ALL SELECT ssn FROM crm.customers --' AS b",
        answer=True,
        check=lambda o, t: _rows(
            o, [{"a": "\\", "b": " UNION ALL SELECT ssn FROM crm.customers --"}]
        ),
    ),
    Case(
        "backslash-quote-literal",  # the string \' OR true -- (DuckDB doubles a quote)
        "alice",
        "SELECT count(*) AS n FROM sales.orders WHERE region = '\\'' OR true --'",
        answer=True,
        check=first_value(is_zero, "0"),
    ),
    Case(
        "backslash-quote-parameter",
        "alice",
        "SELECT count(*) AS n FROM sales.orders WHERE region = ?",
        params=("\\' OR true --",),
        answer=True,
        check=first_value(is_zero, "0"),
    ),
    Case(
        "spark-file-table",
        "alice",
        lambda t: f'SELECT * FROM parquet."{t.customers_parquet}" LIMIT 5',
        refuse=True,
    ),
    Case("spark-text-file-table", "alice", 'SELECT * FROM text."/etc/passwd"', refuse=True),
    Case(
        "spark-file-table-backquoted",
        "alice",
        lambda t: f"SELECT * FROM parquet.`{t.customers_parquet}` LIMIT 5",
        refuse=True,
    ),
    Case("spark-catalog-table", "alice", "SELECT * FROM spark_catalog.default.t", refuse=True),
    Case("spark-fragment-view", "alice", "SELECT * FROM meshgate_sales__orders", refuse=True),
    Case(
        "spark-fragment-view-of-a-denied-product",
        "carol",
        "SELECT * FROM crm.customers c JOIN meshgate_sales__orders o USING (customer_id)",
        refuse=True,
    ),
    Case(
        "spark-global-temp-view",
        "alice",
        "SELECT * FROM global_temp.meshgate_sales__orders",
        refuse=True,
    ),
    Case(
        "spark-reflect",
        "alice",
        "SELECT reflect('java.lang.System', 'getenv', 'HOME') AS h",
        refuse=True,
    ),
    Case(
        "spark-java-method",
        "alice",
        "SELECT java_method('java.lang.System', 'getProperty', 'user.dir') AS d",
        refuse=True,
    ),
    Case(
        "spark-input-file-name",
        "alice",
        "SELECT input_file_name() AS f FROM crm.customers LIMIT 1",
        refuse=True,
    ),
    Case(
        "spark-fence-function",
        "alice",
        "SELECT monotonically_increasing_id() AS i FROM sales.orders LIMIT 5",
        refuse=True,
    ),
    Case("spark-read-files", "alice", "SELECT * FROM read_files('/etc/passwd')", refuse=True),
    Case("spark-show-tables", "alice", "SHOW TABLES IN global_temp", refuse=True),
    Case("spark-current-user", "alice", "SELECT current_user() AS u"),
    Case(
        "spark-hint-in-a-comment",
        "alice",
        "SELECT /*+ BROADCAST(o) */ count(*) AS n FROM sales.orders o",
        check=first_value(eu_count, "the EU count"),
    ),
]


def _rows(outcome: Outcome, expected: list[dict]) -> None:
    assert outcome.rows == expected, outcome.describe()


@pytest.mark.parametrize("case", SPARK_CASES, ids=[c.id for c in SPARK_CASES])
def test_spark_escape_attempt(
    case: Case, on_spark: Clients, on_duckdb: Clients, oracle: Oracle, spark_server: SparkServer
) -> None:
    outcome = on_spark.run(case.user, case.text(oracle), case.params)
    judge(case, outcome, oracle, spark_server, on_duckdb)
    if case.answer:  # a static refusal would pass the judge without proving anything
        assert not outcome.refused, outcome.describe()


@pytest.mark.parametrize("text", SUBSTITUTIONS)
def test_spark_sql_leaves_nothing_to_substitute(
    text: str, spark: SparkConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Spark SQL the gateway writes reads each literal as written even where Spark
    substitutes variables (its default; a cluster's settings may win over the session's)."""
    monkeypatch.setitem(connect.SESSION_CONF, "spark.sql.variable.substitute", "true")
    sql = spark_sql(parse_one(f"SELECT '{text}' AS v", read="duckdb"))
    batches = list(spark.run(sql, str(uuid.uuid4()), str(uuid.uuid4())))
    assert batches[0].column(0).to_pylist() == [text]


def test_identifiers_spark_would_substitute_are_refused() -> None:
    with pytest.raises(QueryRefused, match=r"an identifier containing \$\{"):
        check_spark_semantics(parse_one('SELECT 1 AS "${env:HOME}"', read="duckdb"))


# --------------------------------------------------------------------------- a Parquet row filter

#: alice's row filter on crm.customers, which Spark reads in place (Parquet)
CUSTOMERS_FILTER = "p, analyst_eu, crm.customers, filter, allow, region = {user.region}"


def _eu_customers(oracle: Oracle) -> int:
    return oracle.raw_rows("SELECT count(*) FROM crm.customers WHERE region = 'EU'")[0][0]


def _hidden_customers(oracle: Oracle) -> tuple[int, ...]:
    rows = oracle.raw_rows(
        "SELECT customer_id FROM crm.customers WHERE region <> 'EU' ORDER BY 1 LIMIT 5"
    )
    return tuple(r[0] for r in rows)


def _ids(ids: tuple[int, ...]) -> str:
    return ", ".join(map(str, ids))


def _eu_customer_count(value, oracle: Oracle) -> bool:
    return value == _eu_customers(oracle)


FILTERED_CASES: list[Case] = [
    Case(
        "filtered-count",
        "alice",
        "SELECT count(*) AS n FROM crm.customers",
        check=first_value(_eu_customer_count, "the EU customer count"),
    ),
    Case(
        "filtered-regions",
        "alice",
        "SELECT DISTINCT region FROM crm.customers",
        check=lambda o, t: _rows(o, [{"region": "EU"}]),
    ),
    Case(
        "filtered-not-eu",
        "alice",
        "SELECT count(*) AS n FROM crm.customers WHERE region <> 'EU'",
        check=first_value(is_zero, "0"),
    ),
    Case(
        "filtered-or-true",
        "alice",
        "SELECT count(*) AS n FROM crm.customers WHERE region = 'US' OR length(name) > 0",
        check=first_value(_eu_customer_count, "the EU customer count"),
    ),
    Case(
        "filtered-hidden-row-by-id",
        "alice",
        lambda t: (
            f"SELECT name, region FROM crm.customers WHERE customer_id IN ({_ids(_hidden_customers(t))})"
        ),
        check=zero_rows,
    ),
    Case(
        "filtered-row-never-cast",  # a hidden row would fail the cast (Spark runs ANSI)
        "alice",
        lambda t: (
            "SELECT count(*) AS n FROM crm.customers WHERE CAST(CASE WHEN customer_id = "
            f"{_hidden_customers(t)[0]} THEN 'boom' ELSE '2024-01-01' END AS DATE) > DATE '2000-01-01'"
        ),
        answer=True,
        check=first_value(_eu_customer_count, "the EU customer count"),
    ),
    Case(
        "filtered-row-never-divided",  # a hidden row would divide by zero
        "alice",
        lambda t: (
            f"SELECT count(*) AS n FROM crm.customers WHERE 1 / (customer_id - {_hidden_customers(t)[0]}) "
            "> -1000000"
        ),
        answer=True,
        check=first_value(_eu_customer_count, "the EU customer count"),
    ),
    Case(
        "filtered-join-to-hidden-customers",
        "alice",
        "SELECT count(*) AS n FROM sales.orders o JOIN crm.customers c USING (customer_id) "
        "WHERE c.region <> 'EU'",
        check=first_value(is_zero, "0"),
    ),
    Case(
        "filtered-scalar-subquery",
        "alice",
        lambda t: (
            f"SELECT (SELECT name FROM crm.customers WHERE customer_id = {_hidden_customers(t)[0]}) AS n"
        ),
        check=first_value(lambda v, t: v is None, "NULL"),
    ),
    Case(
        "filtered-correlated-exists",
        "alice",
        lambda t: (
            "SELECT id, EXISTS (SELECT 1 FROM crm.customers c WHERE c.customer_id = v.id) AS present "
            f"FROM (VALUES {', '.join(f'({i})' for i in _hidden_customers(t))}) v(id)"
        ),
        check=all_values("present", lambda v, t: v is False, "False"),
    ),
    Case(
        "filtered-in-subquery-with-a-function",
        "alice",
        "SELECT count(*) AS n FROM sales.orders WHERE customer_id IN "
        "(SELECT customer_id FROM crm.customers WHERE length(region) <> 2)",
        check=first_value(is_zero, "0"),
    ),
]


@pytest.fixture(scope="module")
def filtered_spark_gateway(
    demo_mesh: Path, spark_server: SparkServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Private]:
    """A gateway running every query on Spark, where alice sees only the EU customers."""
    root = tmp_path_factory.mktemp("spark-filtered")
    mesh = copy_mesh(demo_mesh, root / "mesh")
    configure(mesh, "engines.spark", remote=spark_server.remote, route="always")
    with (mesh / "crm" / "policy.csv").open("a", encoding="utf-8") as policy:
        policy.write(CUSTOMERS_FILTER + "\n")
    running = start_private(mesh, root / "gateway.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def on_filtered_spark(filtered_spark_gateway: Private) -> Iterator[Clients]:
    pool = Clients(filtered_spark_gateway.uri)
    yield pool
    pool.close()


@pytest.mark.parametrize("case", FILTERED_CASES, ids=[c.id for c in FILTERED_CASES])
def test_parquet_row_filter_escape_attempt(
    case: Case, on_filtered_spark: Clients, oracle: Oracle, spark_server: SparkServer
) -> None:
    assert _eu_customers(oracle) < oracle.customers  # the filter hides rows
    outcome = on_filtered_spark.run(case.user, case.text(oracle), case.params)
    judge(case, outcome, oracle, spark_server, None)
    assert not outcome.refused, outcome.describe()
