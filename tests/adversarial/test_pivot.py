"""PIVOT and UNPIVOT through the governed pipeline (issue 14), attacked through ADBC.

A dynamic PIVOT turns values into column NAMES, computed by DuckDB when it binds the
statement: they must come from the governed rows (row filter applied, masks applied),
never from the product's raw table. Row filters and masks apply before the pivot; a
masked column used as the pivot column yields masked names (the values the user may
see with SELECT DISTINCT); a denied column cannot be pivoted on.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from support.clients import Clients, Outcome
from support.leaks import assert_no_leak
from support.oracle import Oracle

EU_PIVOTS = [
    "PIVOT sales.orders ON region USING sum(amount) GROUP BY customer_id",
    "pivot sales.orders on region using sum(amount) group by customer_id",
    "SELECT * FROM (PIVOT sales.orders ON region USING sum(amount) GROUP BY customer_id)",
    (
        "WITH o AS (SELECT customer_id, region, amount FROM sales.orders) "
        "PIVOT o ON region USING sum(amount) GROUP BY customer_id"
    ),
    (
        "PIVOT (SELECT * FROM sales.orders WHERE amount > 0) ON region USING sum(amount) "
        "GROUP BY customer_id"
    ),
]
MASKED_EMAIL = re.compile(r"[a-z]\*\*\*@example\.com")


def _answered(outcome: Outcome) -> Outcome:
    assert not outcome.refused, f"{outcome.sql} was refused: {outcome.error}"
    return outcome


def _pivoted(outcome: Outcome, *group: str) -> list[str]:
    """The columns a PIVOT made (all but the ``group`` columns)."""
    return [c for c in outcome.columns if c not in group]


@pytest.mark.parametrize("sql", EU_PIVOTS)
def test_a_row_filtered_user_pivots_only_their_rows(
    sql: str, clients: Clients, oracle: Oracle
) -> None:
    outcome = _answered(clients.run("alice", sql))
    assert _pivoted(outcome, "customer_id") == ["EU"], outcome.columns
    assert sum(outcome.values("EU"), Decimal(0)) == oracle.eu_amount_sum
    assert_no_leak(outcome, oracle, "alice", orders_only=True)


def test_an_unfiltered_user_pivots_every_region(clients: Clients, oracle: Oracle) -> None:
    outcome = _answered(clients.run("bob", EU_PIVOTS[0]))
    assert sorted(_pivoted(outcome, "customer_id")) == sorted(oracle.orders_by_region)


def test_listed_values_outside_the_row_filter_stay_empty(clients: Clients, oracle: Oracle) -> None:
    """A user may name regions the filter hides: their columns exist, empty."""
    for sql in (
        (
            "PIVOT sales.orders ON region IN ('EU', 'US', 'APAC') "
            "USING sum(amount) AS s, count(*) AS n GROUP BY customer_id"
        ),
        (
            "SELECT * FROM sales.orders PIVOT (sum(amount) AS s, count(*) AS n "
            "FOR region IN ('EU', 'US', 'APAC') GROUP BY customer_id)"
        ),
    ):
        outcome = _answered(clients.run("alice", sql))
        assert _pivoted(outcome, "customer_id") == [
            f"{region}_{value}" for region in ("EU", "US", "APAC") for value in "sn"
        ], outcome.columns
        for column in ("US_s", "US_n", "APAC_s", "APAC_n"):
            assert set(outcome.values(column)) <= {None, 0}, (sql, column)
        assert sum(outcome.values("EU_s"), Decimal(0)) == oracle.eu_amount_sum
        assert sum(outcome.values("EU_n")) == oracle.orders_by_region["EU"]


def test_unpivot_of_a_row_filtered_product(clients: Clients, oracle: Oracle) -> None:
    for sql in (
        "UNPIVOT sales.orders ON order_id, customer_id INTO NAME k VALUE v",
        "FROM sales.orders UNPIVOT (v FOR k IN (order_id, customer_id))",
    ):
        outcome = _answered(clients.run("alice", sql))
        assert outcome.table.num_rows == 2 * oracle.orders_by_region["EU"]
        assert set(outcome.values("region")) == {"EU"}
        pairs = zip(outcome.values("k"), outcome.values("v"), strict=True)
        assert {v for k, v in pairs if k == "order_id"} == oracle.eu_order_ids
        assert_no_leak(outcome, oracle, "alice", orders_only=True)


def test_pivot_on_a_masked_column_names_columns_after_masked_values(
    clients: Clients, oracle: Oracle
) -> None:
    """alice sees email partially masked and ssn hashed: so do her column names."""
    emails = _answered(
        clients.run("alice", "PIVOT crm.customers ON email USING count(*) GROUP BY region")
    )
    names = _pivoted(emails, "region")
    assert names and all(MASKED_EMAIL.fullmatch(n) for n in names), names[:5]
    assert not set(names) & oracle.raw_emails
    assert_no_leak(emails, oracle, "alice")

    ssns = _answered(
        clients.run(
            "alice",
            "PIVOT (SELECT ssn, region FROM crm.customers WHERE customer_id <= 50) "
            "ON ssn USING count(*) GROUP BY region",
        )
    )
    names = _pivoted(ssns, "region")
    assert len(names) == 50 and set(names) <= oracle.ssn_hashes, names[:3]
    assert not set(names) & oracle.raw_ssns
    assert_no_leak(ssns, oracle, "alice")


def test_pivot_on_a_rounded_amount_names_only_rounded_values(clients: Clients) -> None:
    """erin sees sales.orders.amount rounded to 100 (the ``round:100`` mask)."""
    outcome = _answered(
        clients.run(
            "erin",
            "PIVOT (SELECT region, amount FROM sales.orders WHERE amount < 1000) "
            "ON amount USING count(*) GROUP BY region",
        )
    )
    names = _pivoted(outcome, "region")
    assert names
    assert all(Decimal(n) % 100 == 0 for n in names), names


def test_a_raw_value_named_in_the_in_list_matches_nothing(clients: Clients, oracle: Oracle) -> None:
    """Naming a raw SSN or email as a pivot value is no oracle on it: it is compared with
    the masked values."""
    customer = oracle.sample_customer
    for column in ("ssn", "email"):
        sql = (
            f"SELECT * FROM crm.customers PIVOT (count(*) FOR {column} IN "
            f"('{customer[column]}' AS hit) GROUP BY customer_id)"
        )
        outcome = _answered(clients.run("alice", sql))
        assert set(outcome.values("hit")) == {0}, column
        assert_no_leak(outcome, oracle, "alice")
        unmasked = _answered(clients.run("bob", sql))
        assert sum(unmasked.values("hit")) == 1, "bob should match the raw value once"


def test_a_denied_column_cannot_be_pivoted_on(clients: Clients, oracle: Oracle) -> None:
    for sql in (
        "PIVOT crm.customers ON ssn USING count(*)",
        "SELECT * FROM crm.customers PIVOT (count(*) FOR ssn IN ('x'))",
        "UNPIVOT crm.customers ON ssn, email INTO NAME k VALUE v",
    ):
        outcome = clients.run("carol", sql)
        assert outcome.refused, f"carol pivoted on ssn: {outcome.describe()}"
        assert_no_leak(outcome, oracle, "carol")


def test_explain_of_a_pivot(clients: Clients) -> None:
    governed = _answered(
        clients.run("alice", "EXPLAIN PIVOT sales.orders ON region USING count(*)")
    )
    rows = dict(zip(governed.values("explain_key"), governed.values("explain_value"), strict=True))
    assert "PIVOT (SELECT" in rows["governed_sql"] and "region = 'EU'" in rows["governed_sql"]
    assert rows["physical_plan"].startswith("withheld")

    plain = _answered(clients.run("bob", "EXPLAIN PIVOT sales.orders ON region USING count(*)"))
    rows = dict(zip(plain.values("explain_key"), plain.values("explain_value"), strict=True))
    # bob sees sales.orders whole: the pivot reads its view, with no subquery around it
    assert 'PIVOT "memory"."sales"."orders" AS orders ON' in rows["governed_sql"]
    assert "HASH_GROUP_BY" in rows["physical_plan"].upper().replace(" ", "_")
    assert "COLUMN_DATA_SCAN" not in rows["physical_plan"].upper().replace(" ", "_")


def test_a_pivot_of_a_join_keeps_its_qualified_columns(clients: Clients, oracle: Oracle) -> None:
    """sqlglot writes columns under a PIVOT unqualified; a join in the source must still
    join on the columns it names (``c.customer_id = o.customer_id``, not a tautology)."""
    sql = (
        "PIVOT (SELECT o.region FROM sales.orders o JOIN crm.customers c "
        "ON c.customer_id = o.customer_id AND c.region = o.region) ON region USING count(*)"
    )
    outcome = _answered(clients.run("bob", sql))
    expected = oracle.raw_rows(
        "SELECT o.region, count(*) FROM sales.orders o JOIN crm.customers c "
        "ON c.customer_id = o.customer_id AND c.region = o.region GROUP BY ALL"
    )
    assert {column: outcome.values(column)[0] for column in outcome.columns} == dict(expected)
