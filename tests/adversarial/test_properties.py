"""Property tests: for generated queries over the demo schema, what the gateway returns to a
user equals the same SQL run directly in DuckDB on hand-built views of that user's view.

The oracle is the session ``oracle`` (``support.oracle``): an in-memory DuckDB per user on
the raw demo files with, under the very same names:

- alice: ``sales.orders`` = the EU rows only; ``crm.customers`` with email partial-masked
  (``t***@example.com``) and ssn = sha256(hash_key || ssn);
- carol: ``crm.customers`` without ssn and with email = sha256(hash_key || email).

Queries cover random projections, WHERE predicates (comparisons, BETWEEN, IN, LIKE,
AND/OR/NOT, subqueries) on every column, GROUP BY with aggregates, windows, ORDER BY +
LIMIT on a unique key, and joins of sales.orders with crm.customers on customer_id.
Results are compared as sorted multisets of rows, floats with a tolerance.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from support.clients import CLIENT_ERRORS, adbc_connect, error_text
from support.oracle import Oracle

# Hypothesis keeps caches in .hypothesis/ of the working directory: keep the checkout clean.
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "meshgate-adversarial-hypothesis"))

SETTINGS = {
    "deadline": None,
    "database": None,  # no example database written into the checkout
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

# --------------------------------------------------------------------------- oracles


@pytest.fixture(scope="module")
def alice_pair(gateway, oracle: Oracle) -> Iterator[tuple]:
    with adbc_connect(gateway.uri, "alice") as conn:
        yield conn, oracle.connection("alice")


@pytest.fixture(scope="module")
def carol_pair(gateway, oracle: Oracle) -> Iterator[tuple]:
    with adbc_connect(gateway.uri, "carol") as conn:
        yield conn, oracle.connection("carol")


def test_oracle_views_agree_with_its_facts(alice_pair, oracle: Oracle) -> None:
    """The hand-built views reproduce the gateway's masks (else the property is vacuous)."""
    _, view = alice_pair
    email, ssn = view.sql("SELECT email, ssn FROM crm.customers WHERE customer_id = 1").fetchall()[
        0
    ]
    raw = oracle.sample_customer
    assert ssn == oracle.hashed(raw["ssn"])
    assert email == raw["email"][0] + "***@" + raw["email"].split("@")[1]
    assert (
        view.sql("SELECT count(*) FROM sales.orders").fetchall()[0][0]
        == oracle.orders_by_region["EU"]
    )


# --------------------------------------------------------------------------- comparison


def _norm(value):
    if isinstance(value, float):
        return ("f", round(value, 6) if math.isfinite(value) else str(value))
    if value is None:
        return ("~",)
    return (type(value).__name__, value)


def _sorted(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=lambda row: tuple(_norm(v) for v in row))


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def assert_same_result(conn, view: duckdb.DuckDBPyConnection, sql: str) -> None:
    try:
        expected_cursor = view.cursor()
        relation = expected_cursor.sql(sql)
        expected_names = list(relation.columns)
        expected = relation.fetchall()
        expected_cursor.close()
        oracle_error = None
    except duckdb.Error as exc:
        expected, expected_names, oracle_error = None, None, str(exc).splitlines()[0]
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()
        gateway_error = None
    except CLIENT_ERRORS as exc:
        table, gateway_error = None, error_text(exc).splitlines()[0]
    finally:
        cursor.close()
    if oracle_error is not None or gateway_error is not None:
        assert oracle_error is not None and gateway_error is not None, (
            f"only one side failed:\n  sql: {sql}\n  oracle: {oracle_error}\n  gateway: {gateway_error}"
        )
        return
    assert table.schema.names == expected_names, f"columns differ for {sql}"
    actual = [tuple(row.values()) for row in table.to_pylist()]
    assert len(actual) == len(expected), (
        f"row counts differ for {sql}: gateway {len(actual)}, oracle {len(expected)}"
    )
    for got, want in zip(_sorted(actual), _sorted(expected), strict=True):
        assert all(_same(g, w) for g, w in zip(got, want, strict=True)), (
            f"rows differ for {sql}:\n  gateway: {got!r}\n  oracle:  {want!r}"
        )


# --------------------------------------------------------------------------- generators

OPS = ("=", "<>", "<", "<=", ">", ">=")
REGIONS = ("EU", "US", "APAC", "eu", "", "ZZ")
FIRST = date(2022, 12, 20)


def _date_literal(days: int) -> str:
    return f"DATE '{(FIRST + timedelta(days=days)).isoformat()}'"


ints_order = st.integers(min_value=-5, max_value=200_010)
ints_customer = st.integers(min_value=-5, max_value=20_010)
amounts = st.integers(min_value=0, max_value=520_000).map(lambda c: f"{c // 100}.{c % 100:02d}")
dates = st.integers(min_value=0, max_value=1_120).map(_date_literal)
regions = st.sampled_from(REGIONS).map(lambda r: f"'{r}'")
letters = st.sampled_from("abcdefghijklmnopqrstuvwxyzAEIOUT0123456789")


def order_atom(prefix: str) -> st.SearchStrategy[str]:
    p = prefix
    return st.one_of(
        st.tuples(st.sampled_from(OPS), ints_order).map(lambda t: f"{p}order_id {t[0]} {t[1]}"),
        st.tuples(st.sampled_from(OPS), ints_customer).map(
            lambda t: f"{p}customer_id {t[0]} {t[1]}"
        ),
        st.tuples(st.sampled_from(OPS), amounts).map(lambda t: f"{p}amount {t[0]} {t[1]}"),
        st.tuples(st.sampled_from(OPS), regions).map(lambda t: f"{p}region {t[0]} {t[1]}"),
        st.tuples(st.sampled_from(OPS), dates).map(lambda t: f"{p}order_date {t[0]} {t[1]}"),
        st.tuples(ints_order, st.integers(0, 5_000)).map(
            lambda t: f"{p}order_id BETWEEN {t[0]} AND {t[0] + t[1]}"
        ),
        st.lists(regions, min_size=1, max_size=3).map(lambda rs: f"{p}region IN ({', '.join(rs)})"),
        st.tuples(st.integers(2, 97), st.integers(0, 96)).map(
            lambda t: f"{p}order_id % {t[0]} = {t[1] % t[0]}"
        ),
        st.tuples(dates, dates).map(lambda t: f"{p}order_date BETWEEN {t[0]} AND {t[1]}"),
    )


def customer_atom(prefix: str, user: str) -> st.SearchStrategy[str]:
    p = prefix
    atoms = [
        st.tuples(st.sampled_from(OPS), ints_customer).map(
            lambda t: f"{p}customer_id {t[0]} {t[1]}"
        ),
        st.tuples(st.sampled_from(OPS), regions).map(lambda t: f"{p}region {t[0]} {t[1]}"),
        st.text(letters, min_size=1, max_size=2).map(lambda s: f"{p}name LIKE '{s}%'"),
        st.text(letters, min_size=1, max_size=2).map(lambda s: f"{p}email LIKE '{s.lower()}%'"),
        st.integers(5, 16).map(lambda n: f"length({p}name) > {n}"),
    ]
    if user == "alice":
        atoms.append(
            st.text(st.sampled_from("0123456789abcdef"), min_size=1, max_size=2).map(
                lambda s: f"{p}ssn LIKE '{s}%'"
            )
        )
    return st.one_of(*atoms)


def predicate(atom: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.recursive(
        atom,
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda t: f"({t[0]} AND {t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]} OR {t[1]})"),
            inner.map(lambda a: f"(NOT {a})"),
        ),
        max_leaves=4,
    )


ORDER_COLUMNS = ("order_id", "customer_id", "region", "amount", "order_date")
ORDER_EXPRESSIONS = (
    *ORDER_COLUMNS,
    "amount * 2",
    "order_date + 1",
    "upper(region)",
    "customer_id % 7",
    "year(order_date)",
    "amount > 100",
)
ALICE_CUSTOMER_COLUMNS = ("customer_id", "name", "email", "ssn", "region")
CAROL_CUSTOMER_COLUMNS = ("customer_id", "name", "email", "region")


def _projection(expressions: list[str]) -> str:
    return ", ".join(f"{e} AS c{i}" for i, e in enumerate(expressions))


def _where(pred: str | None) -> str:
    return f" WHERE {pred}" if pred else ""


limits = st.integers(min_value=0, max_value=300)
maybe = st.booleans()


@st.composite
def orders_rows(draw) -> str:
    cols = draw(st.lists(st.sampled_from(ORDER_EXPRESSIONS), min_size=1, max_size=5, unique=True))
    pred = draw(st.none() | predicate(order_atom("")))
    return (
        f"SELECT order_id AS k, {_projection(cols)} FROM sales.orders{_where(pred)} "
        f"ORDER BY order_id LIMIT {draw(limits)}"
    )


AGGREGATES = (
    "count(*)",
    "sum(amount)",
    "avg(amount)",
    "min(order_date)",
    "max(order_id)",
    "count(DISTINCT customer_id)",
    "min(amount)",
    "max(amount)",
    "count(DISTINCT region)",
    "sum(CASE WHEN region = 'EU' THEN 1 ELSE 0 END)",
)
GROUP_KEYS = (
    "region",
    "year(order_date)",
    "customer_id % 10",
    "month(order_date)",
    "amount > 1000",
)


@st.composite
def orders_aggregate(draw) -> str:
    keys = draw(st.lists(st.sampled_from(GROUP_KEYS), min_size=0, max_size=2, unique=True))
    aggs = draw(st.lists(st.sampled_from(AGGREGATES), min_size=1, max_size=4, unique=True))
    pred = draw(st.none() | predicate(order_atom("")))
    select = _projection(keys + aggs)
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    having = " HAVING count(*) > 0" if keys and draw(maybe) else ""
    order = (
        f" ORDER BY {', '.join(str(i + 1) for i in range(len(keys)))} LIMIT {draw(limits)}"
        if keys and draw(maybe)
        else ""
    )
    return f"SELECT {select} FROM sales.orders{_where(pred)}{group}{having}{order}"


@st.composite
def orders_window(draw) -> str:
    partition = draw(
        st.sampled_from(("region", "customer_id", "year(order_date)", "customer_id % 5"))
    )
    function = draw(
        st.sampled_from(("count(*)", "sum(amount)", "max(order_id)", "min(order_date)"))
    )
    pred = draw(st.none() | predicate(order_atom("")))
    return (
        f"SELECT order_id AS k, {function} OVER (PARTITION BY {partition}) AS w FROM sales.orders"
        f"{_where(pred)} ORDER BY order_id LIMIT {draw(limits)}"
    )


@st.composite
def customers_rows(draw, user: str = "alice") -> str:
    columns = ALICE_CUSTOMER_COLUMNS if user == "alice" else CAROL_CUSTOMER_COLUMNS
    cols = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=len(columns), unique=True))
    pred = draw(st.none() | predicate(customer_atom("", user)))
    return (
        f"SELECT customer_id AS k, {_projection(cols)} FROM crm.customers{_where(pred)} "
        f"ORDER BY customer_id LIMIT {draw(limits)}"
    )


@st.composite
def customers_aggregate(draw, user: str = "alice") -> str:
    key = draw(st.sampled_from(("region", "left(name, 1)", "length(name)", "left(email, 1)")))
    agg = draw(
        st.sampled_from(
            ("count(*)", "count(DISTINCT email)", "min(email)", "max(name)", "min(customer_id)")
        )
    )
    pred = draw(st.none() | predicate(customer_atom("", user)))
    return f"SELECT {key} AS g, {agg} AS a FROM crm.customers{_where(pred)} GROUP BY 1"


@st.composite
def join_rows(draw) -> str:
    order_cols = draw(st.lists(st.sampled_from(ORDER_COLUMNS), min_size=1, max_size=3, unique=True))
    customer_cols = draw(
        st.lists(st.sampled_from(ALICE_CUSTOMER_COLUMNS), min_size=1, max_size=3, unique=True)
    )
    pred_o = draw(st.none() | predicate(order_atom("o.")))
    pred_c = draw(st.none() | predicate(customer_atom("c.", "alice")))
    preds = [p for p in (pred_o, pred_c) if p]
    kind = draw(st.sampled_from(("JOIN", "LEFT JOIN")))
    select = _projection([f"o.{c}" for c in order_cols] + [f"c.{c}" for c in customer_cols])
    return (
        f"SELECT o.order_id AS k, {select} FROM sales.orders o {kind} crm.customers c "
        f"ON o.customer_id = c.customer_id{_where(' AND '.join(preds))} "
        f"ORDER BY o.order_id LIMIT {draw(limits)}"
    )


@st.composite
def join_aggregate(draw) -> str:
    key = draw(
        st.sampled_from(
            ("c.region", "o.region", "left(c.name, 1)", "year(o.order_date)", "left(c.ssn, 1)")
        )
    )
    agg = draw(
        st.sampled_from(
            (
                "count(*)",
                "sum(o.amount)",
                "count(DISTINCT c.customer_id)",
                "avg(o.amount)",
                "max(c.email)",
            )
        )
    )
    pred = draw(st.none() | predicate(order_atom("o.")))
    return (
        f"SELECT {key} AS g, {agg} AS a FROM sales.orders o JOIN crm.customers c USING (customer_id)"
        f"{_where(pred)} GROUP BY 1"
    )


@st.composite
def subquery_rows(draw) -> str:
    pred_c = draw(predicate(customer_atom("", "alice")))
    pred_o = draw(st.none() | predicate(order_atom("")))
    negate = "NOT " if draw(maybe) else ""
    extra = f" AND {pred_o}" if pred_o else ""
    return (
        f"SELECT order_id AS k, amount AS a FROM sales.orders WHERE customer_id {negate}IN "
        f"(SELECT customer_id FROM crm.customers WHERE {pred_c}){extra} ORDER BY order_id LIMIT {draw(limits)}"
    )


@st.composite
def set_operation(draw) -> str:
    op = draw(st.sampled_from(("UNION", "UNION ALL", "INTERSECT", "EXCEPT", "EXCEPT ALL")))
    left = draw(predicate(order_atom("")))
    right = draw(predicate(customer_atom("", "alice")))
    first, second = (
        ("sales.orders", "crm.customers") if draw(maybe) else ("crm.customers", "sales.orders")
    )
    preds = {"sales.orders": left, "crm.customers": right}
    return (
        f"SELECT * FROM (SELECT customer_id AS k, region AS r FROM {first} WHERE {preds[first]} {op} "
        f"SELECT customer_id, region FROM {second} WHERE {preds[second]}) "
        f"ORDER BY k, r LIMIT {draw(limits)}"
    )


ALICE_QUERIES = st.one_of(
    orders_rows(),
    orders_aggregate(),
    orders_window(),
    customers_rows("alice"),
    customers_aggregate("alice"),
    join_rows(),
    join_aggregate(),
    subquery_rows(),
    set_operation(),
)
CAROL_QUERIES = st.one_of(customers_rows("carol"), customers_aggregate("carol"))


# --------------------------------------------------------------------------- properties


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(sql=ALICE_QUERIES)
def test_alice_sees_exactly_her_view(alice_pair, sql: str) -> None:
    conn, view = alice_pair
    assert_same_result(conn, view, sql)


@pytest.mark.slow
@settings(max_examples=50, **SETTINGS)
@given(sql=CAROL_QUERIES)
def test_carol_sees_exactly_her_view(carol_pair, sql: str) -> None:
    conn, view = carol_pair
    assert_same_result(conn, view, sql)
