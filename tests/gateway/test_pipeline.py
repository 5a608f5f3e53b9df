"""The query pipeline as a unit: what ``plan`` accepts, what it generates, what it refuses.

Accepted statements are also run on the catalog's engine, so the generated SQL is checked
against real DuckDB, not only as text.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.planning import make_context

from gateway.catalog.catalog import Catalog, load_catalog
from gateway.config import EngineSettings
from gateway.errors import InvalidQuery, MeshgateError, QueryRefused, UnknownObject
from gateway.planning import parse as parse_module
from gateway.planning.planner import plan
from gateway.planning.query import PlanContext, Query

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog(demo_mesh: Path) -> Iterator[Catalog]:
    catalog = load_catalog(demo_mesh, EngineSettings())
    assert catalog.problems == ()
    yield catalog
    catalog.engine.close()


@pytest.fixture(scope="module")
def context(catalog: Catalog) -> PlanContext:
    return make_context(catalog)


def run(catalog: Catalog, sql: str, params: list | None = None) -> list[tuple]:
    with catalog.engine.cursor() as cursor:
        return cursor.execute(sql, params).fetchall() if params else cursor.execute(sql).fetchall()


def planned(text: str, context: PlanContext) -> Query:
    query = plan(text, context)
    assert query.sql, "plan must end with generated SQL"
    return query


# --------------------------------------------------------------------------- accepted forms

ACCEPTED = [
    ("SELECT * FROM sales.orders LIMIT 3", {"sales.orders"}),
    (
        "select order_id from sales.orders where amount > 100 order by order_id limit 3",
        {"sales.orders"},
    ),
    ("FROM sales.orders LIMIT 3", {"sales.orders"}),
    ("WITH x AS (SELECT * FROM sales.orders) SELECT count(*) FROM x", {"sales.orders"}),
    (
        "SELECT region FROM sales.orders UNION SELECT region FROM crm.customers",
        {"sales.orders", "crm.customers"},
    ),
    ("SELECT 1 UNION ALL SELECT 2", set()),
    (
        "SELECT order_id FROM sales.orders EXCEPT SELECT order_id FROM logistics.shipments",
        {"sales.orders", "logistics.shipments"},
    ),
    ("VALUES (1, 'a'), (2, 'b')", set()),
    ("SELECT * FROM (SELECT order_id FROM sales.orders) t LIMIT 3", {"sales.orders"}),
    ("SELECT (SELECT max(amount) FROM sales.orders) AS m", {"sales.orders"}),
    (
        "SELECT count(*) FROM sales.orders WHERE customer_id IN (SELECT customer_id FROM crm.customers)",
        {"sales.orders", "crm.customers"},
    ),
    (
        (
            "SELECT count(*) FROM sales.orders o WHERE EXISTS "
            "(SELECT 1 FROM logistics.shipments s WHERE s.order_id = o.order_id)"
        ),
        {"sales.orders", "logistics.shipments"},
    ),
    ("SELECT * FROM mesh.sales.orders LIMIT 3", {"sales.orders"}),
    ('SELECT * FROM "sales"."orders" LIMIT 3', {"sales.orders"}),
    ('SELECT * FROM "mesh"."sales"."orders" LIMIT 3', {"sales.orders"}),
    ("SELECT * FROM SALES.Orders LIMIT 3", {"sales.orders"}),
    ("SELECT * FROM Mesh.Sales.ORDERS LIMIT 3", {"sales.orders"}),
    (
        "SELECT o.order_id, c.name FROM sales.orders o JOIN crm.customers c USING (customer_id) LIMIT 3",
        {"sales.orders", "crm.customers"},
    ),
    (
        "SELECT a.order_id FROM sales.orders a JOIN sales.orders b ON a.order_id = b.order_id LIMIT 3",
        {"sales.orders"},
    ),
    (
        "SELECT region, count(*) FROM logistics.shipments GROUP BY ALL ORDER BY ALL",
        {"logistics.shipments"},
    ),
    (
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
        set(),
    ),
    (
        (
            "SELECT date_trunc('month', order_date) AS m, sum(amount), avg(amount), count(DISTINCT customer_id), "
            "min(lower(region)), max(upper(region)), round(sum(amount) / count(*), 2), coalesce(max(amount), 0) "
            "FROM sales.orders GROUP BY 1 ORDER BY 1 LIMIT 3"
        ),
        {"sales.orders"},
    ),
    (
        (
            "SELECT order_id, row_number() OVER (PARTITION BY region ORDER BY amount DESC) AS rn, "
            "strftime(order_date, '%Y-%m') AS ym, CAST(amount AS DOUBLE) AS a, amount::VARCHAR AS s "
            "FROM sales.orders QUALIFY rn <= 2"
        ),
        {"sales.orders"},
    ),
    (
        (
            "SELECT c.region, count(*) FILTER (WHERE s.carrier = 'DHL') FROM logistics.shipments s "
            "JOIN sales.orders o ON s.order_id = o.order_id JOIN crm.customers c ON o.customer_id = c.customer_id "
            "GROUP BY ALL"
        ),
        {"logistics.shipments", "sales.orders", "crm.customers"},
    ),
    # PIVOT and UNPIVOT, statement and FROM-clause forms (issue 14)
    ("PIVOT sales.orders ON region USING count(*)", {"sales.orders"}),
    ("PIVOT sales.orders ON region USING sum(amount) GROUP BY customer_id", {"sales.orders"}),
    ("PIVOT sales.orders ON region IN ('EU', 'US') USING sum(amount)", {"sales.orders"}),
    (
        "WITH o AS (SELECT * FROM sales.orders) PIVOT o ON region USING count(*) GROUP BY customer_id",
        {"sales.orders"},
    ),
    ("UNPIVOT sales.orders ON order_id, customer_id INTO NAME k VALUE v", {"sales.orders"}),
    (
        "SELECT * FROM sales.orders PIVOT (sum(amount) FOR region IN ('EU', 'US') GROUP BY customer_id)",
        {"sales.orders"},
    ),
    ("FROM sales.orders UNPIVOT (v FOR k IN (order_id, customer_id))", {"sales.orders"}),
    ("SELECT * FROM (PIVOT crm.customers ON region USING count(*)) LIMIT 3", {"crm.customers"}),
    (
        (
            "PIVOT (SELECT o.region, o.amount, c.customer_id FROM sales.orders o "
            "JOIN crm.customers c ON o.customer_id = c.customer_id) ON region USING sum(amount) "
            "GROUP BY customer_id"
        ),
        {"sales.orders", "crm.customers"},
    ),
]


@pytest.mark.parametrize(("text", "products"), ACCEPTED)
def test_accepted_statements_plan_and_run(
    text: str, products: set[str], context: PlanContext, catalog: Catalog
) -> None:
    query = planned(text, context)
    assert set(query.product_keys) == products
    for key in products:
        domain, name = key.split(".")
        assert f'"memory"."{domain}"."{name}"' in query.sql
    run(catalog, query.sql)


def test_generated_sql_references_the_internal_view(context: PlanContext) -> None:
    query = planned("SELECT amount FROM sales.orders", context)
    assert '"memory"."sales"."orders"' in query.sql
    assert query.product_keys == ("sales.orders",)
    assert [p.key for p in query.products] == ["sales.orders"]


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        (
            "SELECT sales.orders.amount FROM sales.orders ORDER BY sales.orders.order_id LIMIT 5",
            "SELECT amount FROM memory.sales.orders ORDER BY order_id LIMIT 5",
        ),
        (
            "SELECT orders.amount FROM sales.orders ORDER BY orders.order_id LIMIT 5",
            "SELECT amount FROM memory.sales.orders ORDER BY order_id LIMIT 5",
        ),
        (
            "SELECT mesh.sales.orders.amount FROM mesh.sales.orders ORDER BY mesh.sales.orders.order_id LIMIT 5",
            "SELECT amount FROM memory.sales.orders ORDER BY order_id LIMIT 5",
        ),
        (
            "SELECT SALES.ORDERS.AMOUNT FROM Sales.Orders ORDER BY 1 DESC LIMIT 5",
            "SELECT amount FROM memory.sales.orders ORDER BY 1 DESC LIMIT 5",
        ),
        (
            (
                "SELECT sales.orders.order_id, crm.customers.name FROM sales.orders "
                "JOIN crm.customers ON sales.orders.customer_id = crm.customers.customer_id "
                "WHERE crm.customers.region = 'EU' ORDER BY sales.orders.order_id LIMIT 5"
            ),
            (
                "SELECT o.order_id, c.name FROM memory.sales.orders o JOIN memory.crm.customers c "
                "ON o.customer_id = c.customer_id WHERE c.region = 'EU' ORDER BY o.order_id LIMIT 5"
            ),
        ),
        (
            (
                "SELECT count(*) FROM sales.orders WHERE sales.orders.amount > "
                "(SELECT avg(sales.orders.amount) FROM sales.orders)"
            ),
            "SELECT count(*) FROM memory.sales.orders WHERE amount > (SELECT avg(amount) FROM memory.sales.orders)",
        ),
        (
            "SELECT o.amount FROM sales.orders AS o ORDER BY o.order_id LIMIT 5",
            "SELECT amount FROM memory.sales.orders ORDER BY order_id LIMIT 5",
        ),
    ],
)
def test_qualified_column_references_survive_binding(
    text: str, reference: str, context: PlanContext, catalog: Catalog
) -> None:
    query = planned(text, context)
    expected = run(catalog, reference)
    assert expected
    assert run(catalog, query.sql) == expected


def test_parameters_are_counted_and_bound(context: PlanContext, catalog: Catalog) -> None:
    query = planned("SELECT amount FROM sales.orders WHERE order_id = ? OR order_id = ?", context)
    assert query.parameter_count == 2
    assert len(run(catalog, query.sql, [1, 2])) == 2


def test_cte_named_like_a_product_does_not_read_the_product(
    context: PlanContext, catalog: Catalog
) -> None:
    query = planned("WITH orders AS (SELECT 1 AS x) SELECT * FROM orders", context)
    assert query.products == ()
    assert "memory" not in query.sql
    assert run(catalog, query.sql) == [(1,)]


def test_cte_over_a_product_resolves_the_product(context: PlanContext, catalog: Catalog) -> None:
    query = planned("WITH x AS (SELECT * FROM sales.orders) SELECT count(*) FROM x", context)
    assert query.product_keys == ("sales.orders",)
    assert '"memory"."sales"."orders"' in query.sql
    assert run(catalog, query.sql) == [(200_000,)]


def test_cte_named_like_the_product_it_reads(context: PlanContext, catalog: Catalog) -> None:
    query = planned(
        "WITH orders AS (SELECT * FROM sales.orders WHERE region = 'EU') "
        "SELECT count(*) FROM orders",
        context,
    )
    assert query.product_keys == ("sales.orders",)
    assert run(catalog, query.sql) == run(
        catalog, "SELECT count(*) FROM memory.sales.orders WHERE region = 'EU'"
    )


def test_plan_does_not_mutate_between_calls(context: PlanContext) -> None:
    first = planned("SELECT * FROM sales.orders LIMIT 1", context)
    second = planned("SELECT * FROM sales.orders LIMIT 1", context)
    assert first.sql == second.sql
    assert first.text == "SELECT * FROM sales.orders LIMIT 1"


# --------------------------------------------------------------------------- refusals

REFUSED = [
    # several statements, empty
    ("SELECT 1; SELECT 2", QueryRefused),
    ("SELECT * FROM sales.orders; DROP TABLE x", QueryRefused),
    ("", InvalidQuery),
    ("   ;  ", InvalidQuery),
    ("-- only a comment", InvalidQuery),
    ("SELEC 1", InvalidQuery),
    # DDL / DML at the top
    ("DELETE FROM sales.orders", QueryRefused),
    ("UPDATE sales.orders SET amount = 0", QueryRefused),
    ("INSERT INTO sales.orders SELECT * FROM sales.orders", QueryRefused),
    (
        "MERGE INTO sales.orders USING crm.customers c ON true WHEN MATCHED THEN DELETE",
        QueryRefused,
    ),
    ("DROP TABLE sales.orders", QueryRefused),
    ("CREATE TABLE t AS SELECT * FROM sales.orders", QueryRefused),
    ("CREATE VIEW v AS SELECT 1", QueryRefused),
    ("CREATE MACRO m(x) AS x", QueryRefused),
    ("ALTER TABLE sales.orders ADD COLUMN x INT", QueryRefused),
    ("TRUNCATE sales.orders", QueryRefused),
    # DML hidden inside a query
    ("WITH x AS (DELETE FROM sales.orders RETURNING *) SELECT * FROM x", QueryRefused),
    (
        (
            "WITH x AS (INSERT INTO sales.orders VALUES (1, 1, 'EU', 1, DATE '2024-01-01') RETURNING *) "
            "SELECT * FROM x"
        ),
        QueryRefused,
    ),
    ("WITH x AS (UPDATE sales.orders SET amount = 0 RETURNING *) SELECT * FROM x", QueryRefused),
    # commands
    ("COPY sales.orders TO '/tmp/out.csv'", QueryRefused),
    ("COPY (SELECT * FROM sales.orders) TO '/tmp/out.parquet' (FORMAT parquet)", QueryRefused),
    ("ATTACH '/tmp/x.db' AS x", QueryRefused),
    ("DETACH x", QueryRefused),
    ("PRAGMA version", QueryRefused),
    ("PRAGMA enable_profiling", QueryRefused),
    ("SET threads = 8", QueryRefused),
    ("SET enable_external_access = true", QueryRefused),
    ("RESET threads", QueryRefused),
    ("SHOW TABLES", QueryRefused),
    ("SHOW ALL TABLES", QueryRefused),
    ("DESCRIBE sales.orders", QueryRefused),
    ("SUMMARIZE sales.orders", QueryRefused),
    ("EXPLAIN ANALYZE SELECT * FROM sales.orders", MeshgateError),
    ("EXPLAIN DELETE FROM sales.orders", QueryRefused),
    ("EXPLAIN COPY sales.orders TO '/tmp/out.csv'", QueryRefused),
    ("EXPLAIN SELECT * FROM read_csv('/etc/passwd')", QueryRefused),
    ("EXPLAIN SELECT 1; DROP TABLE x", QueryRefused),
    ("EXPLAIN EXPLAIN SELECT 1", QueryRefused),
    ("INSTALL httpfs", QueryRefused),
    ("LOAD httpfs", QueryRefused),
    ("USE sales", QueryRefused),
    ("BEGIN TRANSACTION", QueryRefused),
    ("CHECKPOINT", QueryRefused),
    ("CALL pragma_version()", QueryRefused),
    # table functions
    ("SELECT * FROM read_parquet('x.parquet')", QueryRefused),
    ("SELECT * FROM read_csv('/etc/passwd')", QueryRefused),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", QueryRefused),
    ("SELECT * FROM read_json('/etc/x.json')", QueryRefused),
    ("SELECT * FROM read_text('/etc/passwd')", QueryRefused),
    ("SELECT * FROM range(10)", QueryRefused),
    ("SELECT * FROM generate_series(1, 10)", QueryRefused),
    ("SELECT * FROM query('SELECT 1')", QueryRefused),
    ("SELECT * FROM query_table('sales.orders')", QueryRefused),
    ("SELECT * FROM glob('*')", QueryRefused),
    ("SELECT * FROM duckdb_settings()", QueryRefused),
    ("SELECT * FROM pragma_version()", QueryRefused),
    ("SELECT * FROM sales.orders, read_parquet('x.parquet') LIMIT 1", QueryRefused),
    ("WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x", QueryRefused),
    # forbidden scalar functions
    ("SELECT getenv('HOME')", QueryRefused),
    ("SELECT current_setting('threads')", QueryRefused),
    ("SELECT count(*) FROM sales.orders WHERE region = getenv('USER')", QueryRefused),
    ("SELECT (SELECT current_setting('memory_limit'))", QueryRefused),
]


@pytest.mark.parametrize(("text", "error"), REFUSED)
def test_refused_statements(text: str, error: type[MeshgateError], context: PlanContext) -> None:
    with pytest.raises(error) as caught:
        plan(text, context)
    assert str(caught.value)


def test_explain_is_refused_or_plans_the_inner_query(context: PlanContext) -> None:
    """EXPLAIN is a generic command to sqlglot: either refused, or the inner query is planned."""
    try:
        query = plan("EXPLAIN SELECT * FROM sales.orders", context)
    except QueryRefused:
        return
    assert getattr(query, "explain", None)
    assert query.product_keys == ("sales.orders",)
    assert '"memory"."sales"."orders"' in query.sql
    assert "EXPLAIN" not in query.sql.upper()


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM 'x.parquet'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'sales/data/orders.duckdb'",
        "SELECT * FROM sales.orders, 'crm/data/customers.parquet' AS c LIMIT 1",
        "SELECT (SELECT ssn FROM 'crm/data/customers.parquet' LIMIT 1)",
    ],
)
def test_string_literal_tables_are_refused(text: str, context: PlanContext) -> None:
    with pytest.raises((QueryRefused, UnknownObject)):
        plan(text, context)


def test_string_literal_table_naming_a_product_file_is_refused(
    demo_mesh: Path, context: PlanContext
) -> None:
    data = demo_mesh / "crm/data/customers.parquet"
    with pytest.raises((QueryRefused, UnknownObject)):
        plan(f"SELECT * FROM '{data}'", context)


@pytest.mark.parametrize(
    "template",
    [
        # A derived table with the same alias hides the file from the scope analysis.
        "SELECT * FROM '{data}' AS x, (SELECT 1) AS x",
        "SELECT * FROM '{data}' AS x, (SELECT 1) AS x, sales.orders",
        # PIVOT / UNPIVOT sources are not seen as table references.
        "SELECT * FROM (PIVOT '{data}' ON region USING count(*))",
        "SELECT * FROM (UNPIVOT '{data}' ON name INTO NAME k VALUE v)",
    ],
    ids=["duplicate-alias", "duplicate-alias-with-product", "pivot", "unpivot"],
)
def test_raw_product_files_cannot_be_read_around_the_contract(
    template: str, demo_mesh: Path, context: PlanContext, catalog: Catalog
) -> None:
    """Reading a product's file directly skips its view (declared columns only) and policies."""
    data = demo_mesh / "crm/data/customers.parquet"
    text = template.format(data=data)
    try:
        query = plan(text, context)
    except MeshgateError:
        return
    rows = run(catalog, query.sql + " LIMIT 1")
    pytest.fail(f"planned and ran a raw file read: {query.sql!r} -> {rows!r}")


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("SELECT * FROM sales.nope", UnknownObject, ["sales.nope"]),
        ("SELECT * FROM nowhere.orders", UnknownObject, ["nowhere.orders"]),
        ("SELECT * FROM orders", UnknownObject, ["<domain>.<product>", "sales.orders"]),
        ("SELECT * FROM Customers", UnknownObject, ["crm.customers"]),
        ("SELECT * FROM other.sales.orders", UnknownObject, ["'other'", "'mesh'"]),
        ("SELECT * FROM memory.sales.orders", UnknownObject, ["'memory'", "'mesh'"]),
        ("SELECT * FROM system.main.duckdb_settings", UnknownObject, ["'system'"]),
        ("SELECT * FROM information_schema.tables", UnknownObject, ["information_schema.tables"]),
        ("SELECT * FROM duckdb_settings", UnknownObject, ["duckdb_settings"]),
        ("SELECT * FROM sqlite_master", UnknownObject, ["sqlite_master"]),
        ("WITH x AS (SELECT 1) SELECT * FROM y", UnknownObject, ["'y'"]),
    ],
)
def test_unknown_names(
    text: str, error: type[MeshgateError], words: list[str], context: PlanContext
) -> None:
    with pytest.raises(error) as caught:
        plan(text, context)
    for word in words:
        assert word in str(caught.value)


def test_unqualified_name_without_candidates_has_no_hint(context: PlanContext) -> None:
    with pytest.raises(UnknownObject) as caught:
        plan("SELECT * FROM nothing_like_it", context)
    assert "did you mean" not in str(caught.value)


def test_deeply_nested_parentheses_are_refused_before_parsing(
    context: PlanContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused by counting tokens: the recursive parser is never entered (so no time is
    spent in it, whatever the machine's load)."""
    text = "SELECT " + "(" * 10_000 + "1" + ")" * 10_000
    monkeypatch.setattr(parse_module, "_DIALECT", _TokenizeOnly())
    with pytest.raises(QueryRefused, match="nests 10000 levels deep, over the limit"):
        plan(text, context)


def _never_called(*args: object, **kwargs: object) -> None:
    raise AssertionError("the statement got past the first check")


class _TokenizeOnly:
    """DuckDB's dialect that tokenizes but fails the test if asked to parse."""

    def __init__(self) -> None:
        self.tokenize = parse_module.DuckDB().tokenize

    def parser(self) -> None:
        raise AssertionError("the statement reached the parser")


@pytest.mark.parametrize("depth", [500, 2000])
def test_deeply_nested_subqueries_do_not_escape_as_recursion_error(
    depth: int, context: PlanContext
) -> None:
    text = "SELECT * FROM " + "(SELECT * FROM " * depth + "sales.orders" + ") t" * depth
    try:
        with pytest.raises(QueryRefused, match=f"nests {depth} levels deep, over the limit"):
            plan(text, context)
    except RecursionError as exc:
        pytest.fail(f"RecursionError escaped plan() at {depth} nested subqueries: {exc}")


@pytest.mark.slow
def test_very_deeply_nested_subqueries_do_not_crash_the_process(demo_mesh: Path) -> None:
    """20,000 nested subqueries (~400 kB, under the size limit) must be refused, not crash."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from gateway.catalog.catalog import load_catalog
        from gateway.config import EngineSettings
        from gateway.errors import MeshgateError
        from gateway.planning.planner import plan
        from support.planning import make_context
        catalog = load_catalog(Path({str(demo_mesh)!r}), EngineSettings())
        text = "SELECT * FROM " + "(SELECT * FROM " * 20000 + "sales.orders" + ") t" * 20000
        try:
            plan(text, make_context(catalog))
            print("ACCEPTED")
        except MeshgateError as exc:
            print("REFUSED", type(exc).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": f"{REPO}:{Path(__file__).parents[1]}", "PATH": "/usr/bin:/bin"},
        cwd=REPO,
    )
    assert result.returncode == 0, (
        f"planner process died with exit code {result.returncode}: {result.stderr[-500:]}"
    )
    assert result.stdout.startswith("REFUSED")


def test_oversized_statement_is_refused_by_size(
    context: PlanContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "SELECT 1 -- " + "x" * 2_000_000
    monkeypatch.setattr(parse_module, "_tokenize", _never_called)  # refused before tokenizing
    with pytest.raises(QueryRefused) as caught:
        plan(text, context)
    assert "bytes" in str(caught.value)
    assert str(context.limits.max_statement_bytes) in str(caught.value)


def test_size_limit_counts_bytes_not_characters(context: PlanContext) -> None:
    # 400,000 three-byte characters: 1.2 MB, under a million characters.
    text = "SELECT '" + "€" * 400_000 + "'"
    with pytest.raises(QueryRefused):
        plan(text, context)
