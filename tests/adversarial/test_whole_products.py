"""A statement of one product that its user sees whole reads the product's view directly,
with no secure subquery; a row filter, a mask or a hidden column keeps the subquery, and
so does a second product reference. Through ADBC against the demo gateway, every answer
checked against the oracle (what each user may see, computed apart from the gateway)."""

from __future__ import annotations

import re

import pytest
from support.clients import Clients, Outcome

#: a product's view read directly, under an alias
DIRECT_READ = re.compile(r'"memory"\."\w+"\."\w+" AS ')


def _answered(outcome: Outcome) -> Outcome:
    assert not outcome.refused, f"{outcome.sql} was refused: {outcome.error}"
    return outcome


def governed_sql(clients: Clients, user: str, sql: str) -> str:
    explained = _answered(clients.run(user, f"EXPLAIN {sql}"))
    rows = dict(
        zip(explained.values("explain_key"), explained.values("explain_value"), strict=True)
    )
    return rows["governed_sql"]


def same_rows(clients: Clients, oracle, user: str, sql: str) -> None:
    got = _answered(clients.run(user, sql))
    assert [tuple(row.values()) for row in got.rows] == oracle.rows(user, sql), (user, sql)


@pytest.mark.parametrize(
    ("user", "product", "whole"),
    [
        ("bob", "sales.orders", True),
        ("bob", "crm.customers", True),
        ("alice", "sales.orders", False),  # row filter: region = 'EU'
        ("erin", "sales.orders", False),  # amount rounded
        ("alice", "crm.customers", False),  # email partly masked
        ("carol", "crm.customers", False),  # ssn hidden
    ],
)
def test_only_a_product_seen_whole_reads_its_view(
    clients: Clients, oracle, user: str, product: str, whole: bool
) -> None:
    sql = f"SELECT * FROM {product} ORDER BY 1"
    domain, name = product.split(".")
    view = f'"memory"."{domain}"."{name}"'
    governed = governed_sql(clients, user, sql)
    if whole:
        assert governed == f"SELECT * FROM {view} AS {name} ORDER BY 1"
    else:
        assert "(SELECT " in governed and f"FROM {view}" in governed, governed
        assert f"FROM {view} AS" not in governed, governed
    same_rows(clients, oracle, user, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a.order_id FROM sales.orders a JOIN sales.orders b USING (order_id) ORDER BY 1",
        (
            "SELECT o.order_id, c.name FROM sales.orders o JOIN crm.customers c "
            "USING (customer_id) ORDER BY 1"
        ),
        (
            "SELECT order_id FROM sales.orders WHERE amount > (SELECT avg(amount) FROM sales.orders) "
            "ORDER BY 1"
        ),
    ],
)
def test_two_references_keep_their_subqueries(clients: Clients, oracle, sql: str) -> None:
    governed = governed_sql(clients, "bob", sql)
    assert governed.count("(SELECT ") >= 2 and not DIRECT_READ.search(governed), governed
    same_rows(clients, oracle, "bob", sql)


def test_qualified_names_and_aliases_read_the_view(clients: Clients, oracle) -> None:
    for sql in (
        "SELECT sales.orders.order_id FROM sales.orders ORDER BY sales.orders.amount, 1",
        "SELECT o.order_id, o.region FROM sales.orders AS o WHERE o.amount > 100 ORDER BY 1",
        "SELECT orders FROM sales.orders ORDER BY orders.order_id",  # the whole row
        "SELECT count(*) AS n, region FROM sales.orders GROUP BY ALL ORDER BY 2",
    ):
        governed = governed_sql(clients, "bob", sql)
        assert "(SELECT" not in governed and DIRECT_READ.search(governed), governed
        same_rows(clients, oracle, "bob", sql)


def test_a_table_sample_keeps_the_subquery(clients: Clients) -> None:
    """A sample on the reference stays on its secure subquery (``USING SAMPLE`` samples
    the whole FROM, whatever reads the product)."""
    sql = "SELECT count(*) AS n FROM sales.orders TABLESAMPLE 100 PERCENT"
    governed = governed_sql(clients, "bob", sql)
    assert "(SELECT " in governed and not DIRECT_READ.search(governed), governed
    got = _answered(clients.run("bob", sql))
    assert got.rows == _answered(clients.run("bob", "SELECT count(*) AS n FROM sales.orders")).rows


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT rowid FROM sales.orders",
        "SELECT filename FROM crm.customers",
        "SELECT file_row_number FROM crm.customers",
        "SELECT filename, file_index FROM logistics.shipments",
    ],
)
def test_a_direct_read_shows_no_virtual_column(clients: Clients, sql: str) -> None:
    """A product's view has its contract's columns and nothing else: neither row ids nor a
    Parquet scan's file names, even read directly."""
    outcome = clients.run("bob", sql)
    assert outcome.refused, outcome.rows[:1]
    assert "not found" in (outcome.error or "")
    assert ".parquet" not in (outcome.error or "") and "/data/" not in (outcome.error or "")


@pytest.mark.parametrize(
    ("sql", "clause"),
    [
        ("SELECT * FROM ONLY sales.orders", "ONLY"),
        ("SELECT * FROM sales.orders WITH ORDINALITY", "WITH ORDINALITY"),
        ("SELECT * FROM sales.orders AT (VERSION => 1)", "AT (time travel)"),
    ],
)
def test_a_table_modifier_is_refused_whatever_the_policy(
    clients: Clients, sql: str, clause: str
) -> None:
    """A modifier on a product reference is refused alike for a user who reads the product
    whole (bob) and one who reads it through its subquery (alice), never silently dropped."""
    for user in ("bob", "alice"):
        outcome = clients.run(user, sql)
        assert outcome.refused, (user, sql, outcome.rows[:1])
        assert f"{clause} on a product reference is not supported" in (outcome.error or "")
