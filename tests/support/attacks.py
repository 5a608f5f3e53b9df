"""The adversarial suite's attacks, as data: the escape attempts of
tests/adversarial/test_escapes.py (``CASES``: one statement, one demo user, what is
acceptable of the answer) and the statement shapes of tests/adversarial/
test_security_barrier.py (``barrier_attacks``: a user function in every place a planner
may push it). The adversarial modules run them on the gateway's DuckDB; tests/spark runs
them on Spark.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from support.clients import Outcome
from support.oracle import Oracle

KELVIN = "\u212a"  # KELVIN SIGN: Python lower() gives "k", DuckDB's identifier folding does not

Check = Callable[[Outcome, Oracle], None]
SQL = str | Callable[[Oracle], str]


@dataclass(frozen=True)
class Case:
    id: str
    user: str
    sql: SQL
    refuse: bool = False  # only a refusal is acceptable
    answer: bool = False  # a refusal would itself reveal something: only an answer is acceptable
    orders_only: bool = False  # alice reading only sales.orders: EU rows only
    check: Check | None = None  # a sharper expectation on a result
    params: tuple | None = None

    def text(self, oracle: Oracle) -> str:
        return self.sql(oracle) if callable(self.sql) else self.sql


# --------------------------------------------------------------------------- checks


def zero_rows(outcome: Outcome, oracle: Oracle) -> None:
    assert outcome.table.num_rows == 0, f"expected no rows, got {outcome.describe()}"


def first_value(predicate: Callable[[object, Oracle], bool], what: str) -> Check:
    def check(outcome: Outcome, oracle: Oracle) -> None:
        assert outcome.table.num_rows >= 1, f"expected a row, got {outcome.describe()}"
        value = outcome.table.column(0)[0].as_py()
        assert predicate(value, oracle), f"expected {what}, got {value!r}"

    return check


def eu_count(value, oracle: Oracle) -> bool:
    return value == oracle.orders_by_region["EU"]


def is_zero(value, oracle: Oracle) -> bool:
    return value in (0, None, False)


def all_values(column: str, predicate: Callable[[object, Oracle], bool], what: str) -> Check:
    def check(outcome: Outcome, oracle: Oracle) -> None:
        bad = [v for v in outcome.values(column) if not predicate(v, oracle)]
        assert not bad, f"column {column}: expected {what}, got {bad[:5]!r}"

    return check


def no_catalog_rows(outcome: Outcome, oracle: Oracle) -> None:
    """The engine's own catalog (view definitions, settings, tables) must never come back."""
    markers = (
        "CREATE VIEW",
        "read_parquet(",
        "allowed_paths",
        "allowed_directories",
        "memory_limit",
    )
    for text in outcome.texts():
        for marker in markers:
            assert marker not in text, f"engine catalog exposed ({marker}): {text[:200]!r}"


def no_file_content(outcome: Outcome, oracle: Oracle) -> None:
    for text in outcome.texts():
        assert "root:" not in text, f"/etc/passwd content returned: {text[:200]!r}"


def only_region_eu(outcome: Outcome, oracle: Oracle) -> None:
    regions = outcome.values("region")
    assert set(regions) <= {"EU"}, f"regions {sorted(set(map(str, regions)))}"


def all_checks(*checks: Check) -> Check:
    def check(outcome: Outcome, oracle: Oracle) -> None:
        for one in checks:
            one(outcome, oracle)

    return check


def ids_sql(ids: tuple[int, ...]) -> str:
    return ", ".join(f"({i})" for i in ids)


def ssn_hashes_only(outcome: Outcome, oracle: Oracle) -> None:
    bad = [v for v in outcome.values("ssn") if v is not None and v not in oracle.ssn_hashes]
    assert not bad, f"ssn values that are not keyed hashes: {bad[:3]!r}"


# --------------------------------------------------------------------------- cases

CASES: list[Case] = [
    # ---- CTEs named like products, scope confusion between sqlglot and DuckDB ------------
    Case(
        "cte-named-like-product",
        "alice",
        "WITH orders AS (SELECT * FROM sales.orders) SELECT * FROM orders WHERE region <> 'EU'",
        orders_only=True,
        check=zero_rows,
    ),
    Case(
        "cte-shadowing-product-name",
        "alice",
        "WITH orders AS (SELECT 'US' AS region) SELECT o.* FROM sales.orders o WHERE o.region <> 'EU'",
        orders_only=True,
        check=zero_rows,
    ),
    Case(
        "cte-named-like-domain",
        "alice",
        'WITH "sales" AS (SELECT 1 AS x) SELECT region, count(*) AS n FROM sales.orders GROUP BY region',
        orders_only=True,
        check=all_checks(only_region_eu, first_value(lambda v, t: v == "EU", "EU")),
    ),
    Case(
        "cte-named-like-qualified-product",
        "alice",
        'WITH "sales.orders" AS (SELECT 1 AS x) SELECT * FROM "sales.orders"',
        orders_only=True,
    ),
    Case(
        "cte-wrapping-denied-product",
        "alice",
        "WITH shipments AS (SELECT * FROM logistics.shipments) SELECT * FROM shipments LIMIT 5",
        refuse=True,
    ),
    Case(
        "cte-named-like-denied-domain",
        "alice",
        "WITH logistics AS (SELECT 1 AS x) SELECT * FROM logistics.shipments LIMIT 5",
        refuse=True,
    ),
    Case(
        "cte-recursive-named-like-product",
        "alice",
        "WITH RECURSIVE orders AS (SELECT order_id, region FROM sales.orders UNION "
        "SELECT order_id + 1, region FROM orders WHERE false) "
        "SELECT count(*) AS n FROM orders WHERE region <> 'EU'",
        orders_only=True,
        check=first_value(is_zero, "0"),
    ),
    Case(
        "cte-inner-scope-used-outside",
        "alice",
        "SELECT * FROM (WITH t AS (SELECT 1 AS x) SELECT * FROM t) s, t",
        refuse=True,
    ),
    Case(
        "cte-self-reference-system-view",
        "alice",
        "WITH duckdb_views AS (SELECT * FROM duckdb_views) SELECT * FROM duckdb_views",
        check=no_catalog_rows,
    ),
    Case(
        "cte-self-reference-settings-view",
        "alice",
        "WITH pg_settings AS (SELECT * FROM pg_settings) SELECT name, setting FROM pg_settings",
        check=no_catalog_rows,
    ),
    Case(
        "cte-forward-reference-system-table",
        "alice",
        "WITH a AS (SELECT * FROM duckdb_tables), duckdb_tables AS (SELECT 1 AS x) "
        "SELECT database_name, schema_name, table_name, estimated_size FROM a",
        check=no_catalog_rows,
    ),
    Case(
        "cte-kelvin-sign-alias",
        "alice",
        f'WITH "duc{KELVIN}db_views" AS (SELECT 1 AS x) SELECT * FROM duckdb_views',
        check=no_catalog_rows,
    ),
    Case(
        "cte-self-reference-raw-customers-file",
        "alice",
        lambda t: (
            f'WITH "{t.customers_parquet}" AS (SELECT * FROM "{t.customers_parquet}") '
            f'SELECT * FROM "{t.customers_parquet}" LIMIT 20'
        ),
    ),
    Case(
        "cte-forward-reference-raw-customers-file",
        "alice",
        lambda t: (
            f'WITH a AS (SELECT * FROM "{t.customers_parquet}"), "{t.customers_parquet}" AS '
            f"(SELECT 1 AS x) SELECT * FROM a LIMIT 20"
        ),
    ),
    Case(
        "cte-self-reference-raw-customers-file-carol",
        "carol",
        lambda t: (
            f'WITH "{t.customers_parquet}" AS (SELECT * FROM "{t.customers_parquet}") '
            f'SELECT customer_id, ssn FROM "{t.customers_parquet}" LIMIT 20'
        ),
    ),
    Case(
        "cte-self-reference-logistics-files",
        "alice",
        lambda t: (
            f'WITH "{t.shipments_glob}" AS (SELECT * FROM "{t.shipments_glob}") '
            f'SELECT * FROM "{t.shipments_glob}" LIMIT 20'
        ),
    ),
    Case(
        "cte-string-literal-named-like-file",
        "alice",
        "WITH \"/etc/passwd\" AS (SELECT 'fake' AS line) SELECT * FROM '/etc/passwd'",
        check=no_file_content,
    ),
    Case(
        "cte-self-reference-etc-passwd",
        "alice",
        'WITH "/etc/passwd" AS (SELECT * FROM \'/etc/passwd\') SELECT * FROM "/etc/passwd"',
        check=no_file_content,
    ),
    # ---- aliases colliding ------------------------------------------------------------
    Case(
        "alias-product-as-other-product",
        "alice",
        "SELECT customers.region, count(*) AS n FROM sales.orders AS customers GROUP BY 1",
        orders_only=True,
        check=only_region_eu,
    ),
    Case(
        "alias-swapped-products",
        "alice",
        "SELECT * FROM sales.orders AS customers JOIN crm.customers AS orders USING (customer_id) "
        "WHERE customers.region <> 'EU'",
        check=zero_rows,
    ),
    Case(
        "alias-fully-qualified-column",
        "alice",
        "SELECT sales.orders.region FROM sales.orders WHERE sales.orders.region <> 'EU'",
        orders_only=True,
        check=zero_rows,
    ),
    Case(
        "alias-column-list-renames",
        "alice",
        "SELECT r AS region, count(*) AS n FROM sales.orders AS o(a, b, r, c, d) GROUP BY r",
        orders_only=True,
        check=only_region_eu,
    ),
    Case(
        "alias-named-like-internal-catalog",
        "alice",
        'SELECT "memory".region FROM sales.orders AS "memory" WHERE "memory".region <> \'EU\'',
        orders_only=True,
        check=zero_rows,
    ),
    Case("alias-duplicate", "alice", "SELECT * FROM sales.orders x, crm.customers x LIMIT 5"),
    # ---- quoting, case and unicode tricks -------------------------------------------
    Case(
        "quote-mixed-case",
        "alice",
        'SELECT * FROM "SALES"."Orders" WHERE region <> \'EU\'',
        orders_only=True,
        check=zero_rows,
    ),
    Case(
        "quote-mesh-catalog",
        "alice",
        "SELECT count(*) AS n FROM mesh.sales.orders",
        check=first_value(eu_count, "the EU count"),
    ),
    Case(
        "quote-mesh-catalog-upper",
        "alice",
        'SELECT count(*) AS n FROM "MESH"."SALES"."ORDERS"',
        check=first_value(eu_count, "the EU count"),
    ),
    Case(
        "quote-internal-catalog",
        "alice",
        "SELECT count(*) AS n FROM memory.sales.orders",
        refuse=True,
    ),
    Case(
        "quote-internal-catalog-quoted",
        "carol",
        'SELECT * FROM "memory"."crm"."customers" LIMIT 5',
        refuse=True,
    ),
    Case("quote-system-catalog", "alice", "SELECT * FROM system.main.duckdb_tables", refuse=True),
    Case(
        "quote-four-part-name",
        "alice",
        "SELECT * FROM mesh.mesh.sales.orders LIMIT 5",
        orders_only=True,
    ),
    Case(
        "quote-fullwidth-letter",
        "alice",
        'SELECT * FROM "\uff4cogistics".shipments LIMIT 5',
        refuse=True,
    ),
    Case(
        "quote-trailing-space",
        "alice",
        'SELECT * FROM "logistics "."shipments" LIMIT 5',
        refuse=True,
    ),
    Case(
        "quote-dot-inside-identifier",
        "alice",
        'SELECT * FROM "logistics.shipments" LIMIT 5',
        refuse=True,
    ),
    Case(
        "quote-unicode-escape",
        "alice",
        'SELECT * FROM U&"\\006cogistics".shipments LIMIT 5',
        refuse=True,
    ),
    Case(
        "quote-upper-denied-column", "carol", 'SELECT "SSN" FROM crm.customers LIMIT 5', refuse=True
    ),
    Case("quote-kelvin-in-column", "carol", f'SELECT "ss{KELVIN}" FROM crm.customers LIMIT 5'),
    # ---- comments hiding text -------------------------------------------------------
    Case(
        "comment-line-hides-filter",
        "alice",
        "SELECT * FROM sales.orders -- WHERE region = 'EU'\nWHERE region <> 'EU'",
        orders_only=True,
        check=zero_rows,
    ),
    Case(
        "comment-block-in-qualified-name",
        "alice",
        "SELECT * FROM sales/**/./**/orders WHERE region /* x */ <> 'EU'",
        orders_only=True,
        check=zero_rows,
    ),
    Case(
        "comment-block-hides-product",
        "alice",
        "SELECT 1 /* */ FROM /* sales.orders */ logistics.shipments",
        refuse=True,
    ),
    Case(
        "comment-terminator-in-line-comment",
        "carol",
        "SELECT customer_id -- */, ssn /*\nFROM crm.customers LIMIT 5",
    ),
    Case(
        "comment-nested-block",
        "alice",
        "SELECT 1 AS x /* outer /* inner */ SELECT * FROM logistics.shipments */",
    ),
    Case(
        "comment-inside-string", "alice", "SELECT '*/ SELECT * FROM logistics.shipments; /*' AS x"
    ),
    Case(
        "comment-carriage-return",
        "alice",
        "SELECT count(*) AS n FROM sales.orders --\rWHERE region = 'US' OR true",
        orders_only=True,
        check=first_value(lambda v, t: v in (0, t.orders_by_region["EU"]), "0 or the EU count"),
    ),
    # ---- multiple statements --------------------------------------------------------
    Case(
        "multi-then-denied-product",
        "alice",
        "SELECT 1; SELECT * FROM logistics.shipments",
        refuse=True,
    ),
    Case(
        "multi-then-set", "alice", "SELECT count(*) FROM sales.orders; SET threads = 1", refuse=True
    ),
    Case("multi-after-string", "alice", "SELECT ';' AS x; ATTACH ':memory:' AS x", refuse=True),
    Case("multi-empty-statements", "alice", ";;SELECT * FROM logistics.shipments;;", refuse=True),
    Case(
        "multi-semicolon-in-comment",
        "alice",
        "SELECT 1 AS x -- ; SELECT * FROM logistics.shipments",
    ),
    # ---- whole rows, positions, COLUMNS, star modifiers -------------------------------
    Case("row-struct", "carol", "SELECT c FROM crm.customers c LIMIT 20"),
    Case("row-struct-as-text", "alice", "SELECT c::VARCHAR AS t FROM crm.customers c LIMIT 50"),
    Case("row-to-json", "carol", "SELECT to_json(c) AS j FROM crm.customers c LIMIT 20"),
    Case("positional-column-4", "carol", "SELECT #4 FROM crm.customers LIMIT 20"),
    Case("positional-column-5", "carol", "SELECT #5 FROM crm.customers LIMIT 20"),
    Case("columns-star", "carol", "SELECT COLUMNS(*) FROM crm.customers LIMIT 20"),
    Case("columns-regex", "carol", "SELECT COLUMNS('s.n') FROM crm.customers LIMIT 20"),
    Case(
        "columns-lambda",
        "carol",
        "SELECT COLUMNS(lambda c: c LIKE '%s%') FROM crm.customers LIMIT 20",
    ),
    Case(
        "columns-unpacked",
        "alice",
        "SELECT concat_ws('|', *COLUMNS(*)) AS s FROM crm.customers LIMIT 50",
        check=None,
    ),
    Case(
        "columns-unpacked-list",
        "carol",
        "SELECT list_value(*COLUMNS(* EXCLUDE (customer_id))) AS l FROM crm.customers LIMIT 20",
    ),
    Case("star-exclude", "carol", "SELECT * EXCLUDE (email) FROM crm.customers LIMIT 20"),
    Case(
        "star-replace",
        "alice",
        "SELECT * REPLACE (upper(email) AS email, upper(ssn) AS ssn) FROM crm.customers LIMIT 20",
    ),
    Case("star-rename", "carol", "SELECT * RENAME (email AS e) FROM crm.customers LIMIT 20"),
    Case(
        "star-qualified-self-join",
        "carol",
        "SELECT a.*, b.* FROM crm.customers a JOIN crm.customers b USING (customer_id) LIMIT 20",
    ),
    Case(
        "star-masked-ssn-is-hash",
        "alice",
        "SELECT * FROM crm.customers LIMIT 200",
        check=ssn_hashes_only,
    ),
    # ---- windows and aggregates over filtered data ------------------------------------
    Case(
        "window-count-over-all",
        "alice",
        "SELECT count(*) OVER () AS n FROM sales.orders LIMIT 1",
        check=first_value(eu_count, "the EU count"),
    ),
    Case(
        "window-lead-lag",
        "alice",
        "SELECT order_id, lead(order_id) OVER (ORDER BY order_id) AS nxt, "
        "lag(region) OVER (ORDER BY order_id) AS prv FROM sales.orders",
        orders_only=True,
        check=all_values("nxt", lambda v, t: v is None or v in t.eu_order_ids, "EU order ids"),
    ),
    Case(
        "agg-count-sum-max",
        "alice",
        "SELECT count(*) AS n, sum(amount) AS s, max(order_id) AS m FROM sales.orders",
        check=lambda o, t: (
            first_value(eu_count, "the EU count")(o, t),
            _assert_equal(o.rows[0]["s"], t.eu_amount_sum, "EU sum(amount)"),
            _assert_equal(o.rows[0]["m"], t.eu_max_order_id, "EU max(order_id)"),
        ),
    ),
    Case(
        "agg-min-max-amount",
        "alice",
        "SELECT min(amount) AS lo, max(amount) AS hi FROM sales.orders",
        check=lambda o, t: (
            _assert_equal(o.rows[0]["lo"], t.eu_min_amount, "EU min"),
            _assert_equal(o.rows[0]["hi"], t.eu_max_amount, "EU max"),
        ),
    ),
    Case(
        "agg-group-by-all",
        "alice",
        "SELECT region, count(*) AS n FROM sales.orders GROUP BY ALL",
        orders_only=True,
        check=all_checks(only_region_eu, all_values("n", eu_count, "the EU count")),
    ),
    Case(
        "agg-distinct-regions",
        "alice",
        "SELECT count(DISTINCT region) AS n, list(DISTINCT region) AS l FROM sales.orders",
        orders_only=True,
        check=first_value(lambda v, t: v == 1, "1"),
    ),
    Case(
        "agg-histogram",
        "alice",
        "SELECT histogram(region) AS h FROM sales.orders",
        orders_only=True,
    ),
    Case(
        "agg-approx-top-k",
        "alice",
        "SELECT approx_top_k(region, 5) AS k FROM sales.orders",
        orders_only=True,
    ),
    Case(
        "agg-arg-max-mode",
        "alice",
        "SELECT arg_max(order_id, amount) AS order_id, mode(region) AS m FROM sales.orders",
        orders_only=True,
    ),
    Case(
        "agg-grouping-sets",
        "alice",
        "SELECT region, count(*) AS n FROM sales.orders GROUP BY GROUPING SETS ((region), ())",
        orders_only=True,
        check=all_values("n", eu_count, "the EU count"),
    ),
    Case(
        "agg-stats-base-table-bounds",
        "alice",
        "SELECT stats(region)::VARCHAR AS r, stats(order_id)::VARCHAR AS i FROM sales.orders LIMIT 1",
        check=lambda o, t: [
            _assert_no_match(r"\b(US|APAC)\b", text, "non-EU region in stats()")
            for text in o.texts()
        ],
    ),
    # ---- joins on masked columns ------------------------------------------------------
    Case(
        "join-raw-ssn-literal",
        "alice",
        lambda t: (
            "SELECT count(*) AS n FROM crm.customers c JOIN (VALUES ('"
            + t.us_customer["ssn"]
            + "')) v(s) ON c.ssn = v.s"
        ),
        check=first_value(is_zero, "0"),
    ),
    Case(
        "join-raw-email-literal",
        "carol",
        lambda t: (
            f"SELECT count(*) AS n FROM crm.customers WHERE email = '{t.us_customer['email']}'"
        ),
        check=first_value(is_zero, "0"),
    ),
    Case(
        "join-partial-email-prefix-probe",
        "alice",
        lambda t: (
            f"SELECT count(*) AS n FROM crm.customers WHERE email LIKE "
            f"'{t.sample_customer['email'].split('@')[0][:6]}%'"
        ),
        check=first_value(is_zero, "0"),
    ),
    Case(
        "join-ssn-shape-probe",
        "alice",
        "SELECT count(*) AS n FROM crm.customers WHERE ssn LIKE '___-__-____'",
        check=first_value(is_zero, "0"),
    ),
    Case(
        "join-orders-to-non-eu-customers",
        "alice",
        "SELECT o.* FROM sales.orders o JOIN crm.customers c USING (customer_id) WHERE c.region <> 'EU'",
        orders_only=True,
        check=zero_rows,
    ),
    Case(
        "join-on-hashed-ssn",
        "alice",
        "SELECT a.customer_id, b.ssn FROM crm.customers a JOIN crm.customers b ON a.ssn = b.ssn LIMIT 50",
        check=ssn_hashes_only,
    ),
    # ---- set operations -----------------------------------------------------------------
    Case(
        "setop-union-denied-product",
        "alice",
        "SELECT order_id FROM sales.orders UNION SELECT order_id FROM logistics.shipments",
        refuse=True,
    ),
    Case(
        "setop-intersect-non-eu-ids",
        "alice",
        lambda t: (
            f"SELECT order_id FROM sales.orders INTERSECT SELECT * FROM (VALUES {ids_sql(t.non_eu_order_ids)}) v(id)"
        ),
        check=zero_rows,
    ),
    Case(
        "setop-except",
        "alice",
        "SELECT region FROM sales.orders EXCEPT SELECT 'EU'",
        check=zero_rows,
    ),
    Case(
        "setop-union-all-non-eu",
        "alice",
        "SELECT order_id, region FROM sales.orders UNION ALL "
        "SELECT order_id, 'EU' FROM sales.orders WHERE region <> 'EU'",
        orders_only=True,
    ),
    # ---- LATERAL, recursion, correlated probes of the filtered-out rows ------------------
    Case(
        "lateral-probe-non-eu",
        "alice",
        "SELECT c.customer_id, o.order_id FROM crm.customers c, LATERAL "
        "(SELECT * FROM sales.orders o WHERE o.customer_id = c.customer_id AND o.region <> 'EU') o",
        check=zero_rows,
    ),
    Case(
        "lateral-denied-product",
        "alice",
        "SELECT * FROM sales.orders o, LATERAL (SELECT * FROM logistics.shipments s "
        "WHERE s.order_id = o.order_id) s LIMIT 5",
        refuse=True,
    ),
    Case(
        "recursive-walk-non-eu-ids",
        "alice",
        lambda t: (
            f"WITH RECURSIVE r(id) AS (SELECT {t.non_eu_order_ids[0]} UNION ALL SELECT id + 1 FROM r "
            f"WHERE id < {t.non_eu_order_ids[0] + 50}) SELECT o.* FROM r JOIN sales.orders o ON o.order_id = r.id"
        ),
        orders_only=True,
    ),
    Case(
        "correlated-exists-non-eu",
        "alice",
        lambda t: (
            f"SELECT id, EXISTS (SELECT 1 FROM sales.orders o WHERE o.order_id = v.id) AS present "
            f"FROM (VALUES {ids_sql(t.non_eu_order_ids)}) v(id)"
        ),
        check=all_values("present", lambda v, t: v is False, "False"),
    ),
    Case(
        "count-region-us",
        "alice",
        "SELECT count(*) AS n FROM sales.orders WHERE region = 'US'",
        check=first_value(is_zero, "0"),
    ),
    Case(
        "count-region-not-eu",
        "alice",
        "SELECT count(*) AS n FROM sales.orders WHERE region NOT IN ('EU')",
        check=first_value(is_zero, "0"),
    ),
    Case(
        "scalar-subquery-non-eu",
        "alice",
        lambda t: (
            f"SELECT (SELECT amount FROM sales.orders WHERE order_id = {t.non_eu_order_ids[0]}) AS a"
        ),
        check=first_value(lambda v, t: v is None, "NULL"),
    ),
    Case(
        "in-list-non-eu",
        "alice",
        lambda t: (
            f"SELECT * FROM sales.orders WHERE order_id IN ({', '.join(map(str, t.non_eu_order_ids))})"
        ),
        check=zero_rows,
    ),
    Case(
        "any-subquery-us",
        "alice",
        "SELECT 'US' = ANY (SELECT region FROM sales.orders) AS x",
        check=first_value(is_zero, "false"),
    ),
    Case(
        "filtered-row-never-evaluated",
        "alice",
        lambda t: (
            f"SELECT CAST(CASE WHEN order_id = {t.non_eu_order_ids[0]} THEN 'boom' ELSE '1' END AS INT) "
            "AS x FROM sales.orders"
        ),
        answer=True,
        check=all_values("x", lambda v, t: v == 1, "1"),
    ),
    # ---- error messages must not echo values -----------------------------------------
    Case("error-cast-ssn-int", "alice", "SELECT CAST(ssn AS INT) AS x FROM crm.customers"),
    Case("error-cast-email-date", "alice", "SELECT CAST(email AS DATE) AS x FROM crm.customers"),
    Case(
        "error-cast-email-int-carol", "carol", "SELECT CAST(email AS INT) AS x FROM crm.customers"
    ),
    Case(
        "error-cast-region-int",
        "alice",
        "SELECT CAST(region AS INT) AS x FROM sales.orders",
        orders_only=True,
    ),
    Case("error-error-function", "alice", "SELECT error(ssn) AS x FROM crm.customers"),
    Case(
        "error-json-extract", "carol", "SELECT json_extract(email, '$.a') AS x FROM crm.customers"
    ),
    Case("error-strptime", "alice", "SELECT strptime(email, '%Y') AS x FROM crm.customers"),
    Case(
        "error-regex-from-data",
        "alice",
        "SELECT regexp_matches('x', ssn || '(') AS x FROM crm.customers",
    ),
    Case("error-enum-cast", "alice", "SELECT CAST(email AS ENUM('a')) AS x FROM crm.customers"),
    Case(
        "error-struct-cast", "alice", "SELECT CAST(email AS STRUCT(a INT)) AS x FROM crm.customers"
    ),
    # ---- the hash key: never in a result, a column name or an error ---------------------
    Case("key-scalar-subquery-column-name", "alice", "SELECT (SELECT min(ssn) FROM crm.customers)"),
    Case(
        "key-exists-column-name-carol", "carol", "SELECT EXISTS (SELECT email FROM crm.customers)"
    ),
    Case("key-in-subquery-column-name", "alice", "SELECT 'x' IN (SELECT ssn FROM crm.customers)"),
    Case(
        "key-window-column-name",
        "alice",
        "SELECT max((SELECT min(ssn) FROM crm.customers)) OVER ()",
    ),
    Case(
        "key-grouped-expression-name",
        "alice",
        "SELECT name, (SELECT min(ssn) FROM crm.customers) || name FROM crm.customers GROUP BY 1 LIMIT 5",
    ),
    Case("key-binder-error", "alice", "SELECT sum((SELECT min(ssn) FROM crm.customers))"),
    Case("key-explain-plan", "alice", "EXPLAIN SELECT * FROM crm.customers"),
    Case("key-explain-policy", "carol", "EXPLAIN POLICY SELECT * FROM crm.customers"),
    Case(
        "key-explain-scalar-subquery",
        "alice",
        "EXPLAIN SELECT (SELECT min(ssn) FROM crm.customers)",
    ),
    # ---- table functions and files ----------------------------------------------------
    Case(
        "file-read-parquet-product",
        "alice",
        lambda t: f"SELECT * FROM read_parquet('{t.customers_parquet}') LIMIT 5",
        refuse=True,
    ),
    Case("file-read-csv-passwd", "alice", "SELECT * FROM read_csv('/etc/passwd')", refuse=True),
    Case(
        "file-query",
        "alice",
        "SELECT * FROM query('SELECT * FROM logistics.shipments')",
        refuse=True,
    ),
    Case(
        "file-query-table", "alice", "SELECT * FROM query_table('logistics.shipments')", refuse=True
    ),
    Case("file-glob", "alice", "SELECT * FROM glob('/**')", refuse=True),
    Case(
        "file-string-literal",
        "alice",
        lambda t: f"SELECT * FROM '{t.customers_parquet}' LIMIT 5",
        refuse=True,
    ),
    Case(
        "file-quoted-identifier",
        "alice",
        lambda t: f'SELECT * FROM "{t.customers_parquet}" LIMIT 5',
        refuse=True,
    ),
    Case(
        "file-parquet-metadata",
        "alice",
        lambda t: f"SELECT * FROM parquet_metadata('{t.customers_parquet}')",
        refuse=True,
    ),
    Case(
        "file-read-text-config",
        "alice",
        lambda t: f"SELECT * FROM read_text('{t.mesh_dir}/mesh.toml')",
        refuse=True,
    ),
    Case(
        "file-table-function-in-join",
        "alice",
        "SELECT * FROM sales.orders, read_csv('/etc/passwd') LIMIT 5",
        refuse=True,
    ),
    Case(
        "file-table-function-in-cte",
        "alice",
        "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
        refuse=True,
    ),
    Case(
        "file-pivot-of-file",
        "alice",
        lambda t: f"SELECT * FROM '{t.customers_parquet}' PIVOT (count(*) FOR region IN ('EU'))",
        refuse=True,
    ),
    # ---- settings, session and catalog introspection ----------------------------------
    Case("intro-getenv", "alice", "SELECT getenv('HOME') AS h", refuse=True),
    Case(
        "intro-current-setting",
        "alice",
        "SELECT current_setting('allowed_paths') AS p",
        refuse=True,
    ),
    Case(
        "intro-current-query",
        "alice",
        "SELECT current_query() AS q FROM crm.customers LIMIT 1",
        refuse=True,
    ),
    Case("intro-pg-current-query", "alice", "SELECT pg_catalog.current_query() AS q", refuse=True),
    Case(
        "intro-method-call-syntax",
        "alice",
        "SELECT 'allowed_paths'.current_setting() AS p",
        refuse=True,
    ),
    Case("intro-getvariable", "alice", "SELECT getvariable('x') AS v", refuse=True),
    Case("intro-duckdb-settings", "alice", "SELECT * FROM duckdb_settings()", refuse=True),
    Case("intro-duckdb-tables", "alice", "SELECT * FROM duckdb_tables()", refuse=True),
    Case(
        "intro-information-schema", "alice", "SELECT * FROM information_schema.tables", refuse=True
    ),
    Case("intro-pg-catalog", "alice", "SELECT * FROM pg_catalog.pg_tables", refuse=True),
    Case("intro-memory-main", "alice", "SELECT * FROM memory.main.orders", refuse=True),
    Case("intro-system-main", "alice", "SELECT * FROM system.main.duckdb_settings", refuse=True),
    Case(
        "intro-pg-get-viewdef",
        "alice",
        "SELECT DISTINCT pg_get_viewdef(o.order_id) AS v FROM sales.orders o",
        check=no_catalog_rows,
    ),
    # ---- statements other than queries ------------------------------------------------
    Case("stmt-show-tables", "alice", "SHOW TABLES", refuse=True),
    Case("stmt-show-all-tables", "alice", "SHOW ALL TABLES", refuse=True),
    Case("stmt-describe-product", "carol", "DESCRIBE crm.customers", refuse=True),
    Case("stmt-summarize-product", "alice", "SUMMARIZE sales.orders", refuse=True),
    Case("stmt-pragma", "alice", "PRAGMA table_info('sales.orders')", refuse=True),
    Case("stmt-call-pragma", "alice", "CALL pragma_table_info('logistics.shipments')", refuse=True),
    Case("stmt-set", "alice", "SET enable_external_access = true", refuse=True),
    Case("stmt-reset", "alice", "RESET threads", refuse=True),
    Case(
        "stmt-attach",
        "alice",
        lambda t: f"ATTACH '{t.mesh_dir}/sales/data/orders.duckdb' AS x (READ_ONLY)",
        refuse=True,
    ),
    Case("stmt-detach", "alice", "DETACH memory", refuse=True),
    Case(
        "stmt-copy-to",
        "alice",
        "COPY (SELECT * FROM crm.customers) TO '/tmp/meshgate-leak.csv'",
        refuse=True,
    ),
    Case("stmt-copy-from", "alice", "COPY sales.orders FROM '/etc/passwd'", refuse=True),
    Case("stmt-create-macro-sha256", "alice", "CREATE MACRO sha256(x) AS x", refuse=True),
    Case("stmt-create-temp-macro", "alice", "CREATE TEMP MACRO concat(a, b) AS b", refuse=True),
    Case(
        "stmt-create-table-as", "alice", "CREATE TABLE t AS SELECT * FROM sales.orders", refuse=True
    ),
    Case(
        "stmt-insert",
        "alice",
        "INSERT INTO sales.orders VALUES (1, 1, 'US', 1, DATE '2024-01-01')",
        refuse=True,
    ),
    Case("stmt-drop-view", "alice", "DROP VIEW memory.sales.orders", refuse=True),
    Case("stmt-install", "alice", "INSTALL httpfs", refuse=True),
    Case("stmt-load", "alice", "LOAD httpfs", refuse=True),
    Case("stmt-export", "alice", "EXPORT DATABASE '/tmp/meshgate-export'", refuse=True),
    Case("stmt-use", "alice", "USE system.main", refuse=True),
    Case("stmt-checkpoint", "alice", "CHECKPOINT", refuse=True),
    Case(
        "stmt-create-secret",
        "alice",
        "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
        refuse=True,
    ),
    Case("stmt-prepare", "alice", "PREPARE p AS SELECT * FROM logistics.shipments", refuse=True),
    # ---- PIVOT, UNPIVOT, sampling, positional and as-of joins --------------------------
    Case("pivot-statement", "alice", "PIVOT sales.orders ON region USING count(*)"),
    Case(
        "pivot-clause",
        "alice",
        "SELECT * FROM sales.orders PIVOT (count(*) FOR region IN ('EU' AS eu, 'US' AS us, 'APAC' AS ap))",
        check=all_values("us", lambda v, t: v in (0, None), "0"),
    ),
    Case(
        "unpivot-statement-carol",
        "carol",
        "UNPIVOT crm.customers ON COLUMNS(* EXCLUDE (customer_id)) INTO NAME k VALUE v",
    ),
    Case(
        "unpivot-clause-alice",
        "alice",
        "SELECT k, v FROM crm.customers UNPIVOT (v FOR k IN (email, ssn)) LIMIT 200",
    ),
    Case(
        "unpivot-clause-carol",
        "carol",
        "SELECT k, v FROM crm.customers UNPIVOT (v FOR k IN (name, email)) LIMIT 200",
    ),
    Case(
        "sample-tablesample",
        "alice",
        "SELECT * FROM sales.orders TABLESAMPLE 10%",
        orders_only=True,
    ),
    Case(
        "sample-reservoir",
        "alice",
        "SELECT * FROM sales.orders USING SAMPLE reservoir(200 ROWS) REPEATABLE (7)",
        orders_only=True,
    ),
    Case(
        "positional-join",
        "alice",
        "SELECT o.order_id, o.region FROM sales.orders o POSITIONAL JOIN crm.customers c",
        orders_only=True,
    ),
    Case(
        "asof-join",
        "alice",
        "SELECT o.order_id, o.region FROM sales.orders o ASOF JOIN crm.customers c "
        "ON o.customer_id >= c.customer_id LIMIT 500",
        orders_only=True,
    ),
    Case("time-travel", "alice", "SELECT * FROM sales.orders AT (VERSION => 1)", refuse=True),
    # ---- EXPLAIN ----------------------------------------------------------------------
    Case(
        "explain-denied-product", "alice", "EXPLAIN SELECT * FROM logistics.shipments", refuse=True
    ),
    Case("explain-denied-column", "carol", "EXPLAIN SELECT ssn FROM crm.customers", refuse=True),
    Case(
        "explain-policy-denied-product",
        "alice",
        "EXPLAIN POLICY SELECT * FROM logistics.shipments",
        refuse=True,
    ),
    Case("explain-analyze", "alice", "EXPLAIN ANALYZE SELECT * FROM crm.customers", refuse=True),
    Case("explain-denied-product-dave", "dave", "EXPLAIN SELECT * FROM sales.orders", refuse=True),
    Case(
        "explain-plan-orders", "alice", "EXPLAIN SELECT * FROM sales.orders WHERE order_id > 1000"
    ),
    Case(
        "explain-policy-hides-denied-column",
        "carol",
        "EXPLAIN POLICY SELECT * FROM crm.customers",
        check=all_values("column", lambda v, t: v != "ssn", "no ssn row"),
    ),
    # ---- masked numbers (erin: amount round:100) ---------------------------------------
    Case(
        "erin-amounts-are-rounded",
        "erin",
        "SELECT count(*) AS n FROM sales.orders WHERE amount % 100 <> 0",
        check=first_value(is_zero, "0"),
    ),
    Case(
        "erin-exact-amount-probe",
        "erin",
        "SELECT count(*) AS n FROM sales.orders WHERE amount BETWEEN 323.61 AND 323.63",
        check=first_value(is_zero, "0"),
    ),
    Case(
        "erin-amount-cents-probe",
        "erin",
        "SELECT count(*) AS n FROM sales.orders o WHERE CAST(o.amount * 100 AS BIGINT) % 10000 <> 0",
        check=first_value(is_zero, "0"),
    ),
    # ---- prepared statement parameters --------------------------------------------------
    Case(
        "param-quote-injection",
        "alice",
        "SELECT count(*) AS n FROM sales.orders WHERE region = ?",
        params=("' OR 1=1 --",),
        check=first_value(is_zero, "0"),
    ),
    Case(
        "param-us",
        "alice",
        "SELECT count(*) AS n FROM sales.orders WHERE region = ?",
        params=("US",),
        check=first_value(is_zero, "0"),
    ),
    Case(
        "param-raw-email",
        "carol",
        "SELECT count(*) AS n FROM crm.customers WHERE email = ?",
        params=("__EMAIL__",),
        check=first_value(is_zero, "0"),
    ),
    Case(
        "param-or-true",
        "alice",
        "SELECT count(*) AS n FROM sales.orders WHERE region = ? OR ?",
        params=("x", True),
        check=first_value(eu_count, "the EU count"),
    ),
    # ---- users without grants -----------------------------------------------------------
    Case("dave-orders", "dave", "SELECT count(*) FROM sales.orders", refuse=True),
    Case("dave-customers", "dave", "SELECT * FROM crm.customers LIMIT 5", refuse=True),
    Case("carol-orders", "carol", "SELECT count(*) FROM sales.orders", refuse=True),
    Case("carol-ssn", "carol", "SELECT ssn FROM crm.customers LIMIT 5", refuse=True),
]


def _assert_equal(actual, expected, what: str) -> None:
    assert actual == expected, f"{what}: expected {expected!r}, got {actual!r}"


def _assert_no_match(pattern: str, text: str, what: str) -> None:
    assert not re.search(pattern, text), f"{what}: {text[:200]!r}"


def case_params(case: Case, oracle: Oracle) -> tuple | None:
    """The parameters ``case`` binds (a placeholder replaced by the oracle's value)."""
    if case.params is None:
        return None
    return tuple(oracle.us_customer["email"] if p == "__EMAIL__" else p for p in case.params)


# --------------------------------------------------------------------------- barrier shapes


def barrier_attacks(marker: str, hit: str = "'y'", miss: str = "'x'") -> dict[str, str]:
    """Statements of alice's that evaluate ``marker`` (a one-argument function that no mask
    or row filter uses; compared with ``hit``, a value it never gives, ``miss`` another
    of its type) in a predicate where a planner would like to push it below the row
    filter of sales.orders: WHERE, OR, JOIN ON, EXISTS, IN, HAVING on a group key, CTE,
    UNION, QUALIFY, scalar subquery, ..."""
    return {
        "where": f"SELECT count(*) FROM sales.orders WHERE CASE WHEN customer_id = 4 THEN {marker}(region) ELSE {miss} END = {hit}",
        "where_or": f"SELECT * FROM sales.orders WHERE amount > 100 OR {marker}(region) = {hit}",
        "join_on": (
            f"SELECT count(*) FROM sales.orders o JOIN crm.customers c "
            f"ON c.customer_id = o.customer_id AND {marker}(o.region) = {hit}"
        ),
        "left_join_where": (
            f"SELECT count(*) FROM crm.customers c LEFT JOIN sales.orders o USING (customer_id) "
            f"WHERE {marker}(o.region) = {hit} OR o.region IS NULL"
        ),
        "exists": (
            f"SELECT count(*) FROM crm.customers c WHERE EXISTS (SELECT 1 FROM sales.orders o "
            f"WHERE o.customer_id = c.customer_id AND {marker}(o.region || o.order_id::VARCHAR) = {hit})"
        ),
        "in_subquery": (
            f"SELECT count(*) FROM crm.customers WHERE customer_id IN "
            f"(SELECT customer_id FROM sales.orders WHERE {marker}(region) = {hit})"
        ),
        "having_group_key": (
            f"SELECT customer_id, count(*) FROM sales.orders GROUP BY customer_id "
            f"HAVING {marker}(customer_id::VARCHAR) = {hit}"
        ),
        "cte": f"WITH x AS (SELECT * FROM sales.orders) SELECT count(*) FROM x WHERE {marker}(region) = {hit}",
        "derived_column": (
            f"SELECT count(*) FROM (SELECT {marker}(region) AS h, customer_id FROM sales.orders) t "
            f"WHERE h = {hit} AND customer_id = 4"
        ),
        "union": (
            f"SELECT count(*) FROM (SELECT region FROM sales.orders UNION ALL SELECT region FROM sales.orders) u "
            f"WHERE {marker}(region) = {hit}"
        ),
        "qualify": (
            f"SELECT order_id FROM sales.orders QUALIFY {marker}(region) = {hit} "
            f"AND row_number() OVER (PARTITION BY region ORDER BY order_id) = 1"
        ),
        "cross_product_or": (
            f"SELECT count(*) FROM sales.orders o, crm.customers c WHERE o.customer_id = c.customer_id "
            f"AND ((o.amount > 10 AND {marker}(o.region) = {hit}) OR (o.amount < 5 AND c.name = 'x'))"
        ),
        "scalar_subquery": (
            f"SELECT count(*) FROM crm.customers c WHERE 0 < (SELECT count(*) FROM sales.orders o "
            f"WHERE o.customer_id = c.customer_id AND {marker}(o.region) = {hit})"
        ),
        "masked_column": f"SELECT count(*) FROM sales.orders WHERE customer_id = 4 AND {marker}(region) = {hit}",
    }
