"""Join groups that carry their domain's subqueries (issue 17, TPC-H q21).

A condition holding a subquery over the join group's own domain, whose outside references
read group members only, moves into the group (``gateway.mesh.join_groups``): TPC-H q21's
``EXISTS`` / ``NOT EXISTS`` over ``lineitem`` correlated to ``lineitem l1`` run on the
orders node with the join, which returns only the qualifying rows, pre-aggregated.

- In process on the demo mesh: a q21-shaped query (a sales self-join, an ``EXISTS`` and a
  ``NOT EXISTS`` over sales.orders correlated to it, crm.customers beside) is split into
  one sales fragment holding all four governed sales.orders scans and both subqueries; what
  stays apart (another domain's subquery, one reading a source outside the group) does.
  A plain ``EXISTS`` / ``NOT EXISTS`` becomes a SEMI / ANTI join of the group; one over an
  aggregate moves as it is.
  Every split answers as the governed query run whole, for every demo user.
- A fragment read only as the one source of an ``EXISTS`` or ``IN`` subquery (TPC-H q22's
  ``NOT EXISTS`` over orders) returns its distinct rows, and an ``EXISTS`` keeps no column
  for its projections.
- End to end on real nodes through ADBC: every demo user gets the embedded gateway's answer
  (or its refusal); alice's row filter holds inside the subqueries (orders of other regions,
  hidden from her, never satisfy her ``EXISTS`` nor spoil her ``NOT EXISTS``: the sales node
  applies her filter to every scan of the fragment), erin's mask on ``amount`` is what her
  correlation compares, and the sales fragment moves one row per group, not the orders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp
from support.logs import log_offset
from support.mesh import Mesh, federated, outcome, running_mesh, sorted_rows
from support.servers import RunningGateway

from gateway.audit.log import read_audit
from gateway.demo.mesh import DEMO_USERS
from gateway.flightsql.service import SqlService
from gateway.mesh.federation import inline_parameters
from gateway.mesh.fragments import FederatedPlan, split_fragments
from gateway.planning.planner import plan as plan_query
from gateway.planning.query import Query
from gateway.security.principal import Principal

SERVED = frozenset({"sales", "crm", "logistics"})
USERS = tuple(DEMO_USERS)
SALES_SCAN = 'FROM "memory"."sales"."orders"'

#: TPC-H q21's shape: a same-domain join (o1, o), an EXISTS and a NOT EXISTS over that
#: domain correlated to o1 with an inequality, another domain's product beside.
Q21_SHAPED = (
    "SELECT c.region, count(*) AS numwait FROM crm.customers c, sales.orders o1, sales.orders o "
    "WHERE c.customer_id = o1.customer_id AND o.order_id = o1.order_id AND o.amount > 1000 "
    "AND EXISTS (SELECT * FROM sales.orders o2 "
    "WHERE o2.customer_id = o1.customer_id AND o2.order_id <> o1.order_id) "
    "AND NOT EXISTS (SELECT * FROM sales.orders o3 WHERE o3.customer_id = o1.customer_id "
    "AND o3.order_id <> o1.order_id AND o3.amount > 4500) "
    "GROUP BY c.region"
)
#: Correlated across regions: for alice (row filter region = EU) no visible order is of
#: another region, so her EXISTS never holds and her NOT EXISTS always does.
OTHER_REGION_SAME_DAY = (
    "SELECT c.region, count(*) AS n FROM crm.customers c, sales.orders o1, sales.orders o "
    "WHERE c.customer_id = o1.customer_id AND o.order_id = o1.order_id "
    "AND {exists} (SELECT * FROM sales.orders o2 "
    "WHERE o2.order_date = o1.order_date AND o2.region <> o1.region) GROUP BY c.region"
)
#: erin (ops) reads amount rounded to 100: her correlation compares rounded amounts.
MASKED_CORRELATION = (
    "SELECT s.carrier, count(*) AS n FROM logistics.shipments s, sales.orders o1, sales.orders o "
    "WHERE s.order_id = o1.order_id AND o.order_id = o1.order_id "
    "AND EXISTS (SELECT * FROM sales.orders o2 "
    "WHERE o2.amount = o1.amount AND o2.order_id <> o1.order_id) GROUP BY s.carrier"
)
#: IN over an uncorrelated aggregate of the group's domain (TPC-H q18's shape).
IN_AGGREGATE = (
    "SELECT c.name, o.order_id, sum(o1.amount) AS total FROM crm.customers c "
    "JOIN sales.orders o ON c.customer_id = o.customer_id "
    "JOIN sales.orders o1 ON o1.order_id = o.order_id "
    "AND o.customer_id IN (SELECT customer_id FROM sales.orders GROUP BY customer_id "
    "HAVING sum(amount) > 30000) GROUP BY c.name, o.order_id"
)
#: One product of the domain with its EXISTS: a group of its own.
ONE_SOURCE = (
    "SELECT c.region, count(*) AS n FROM crm.customers c, sales.orders o1 "
    "WHERE c.customer_id = o1.customer_id AND EXISTS (SELECT * FROM sales.orders o2 "
    "WHERE o2.customer_id = o1.customer_id AND o2.order_date < o1.order_date) GROUP BY c.region"
)
#: An EXISTS over an aggregate (one row whatever the rows): it moves, as an EXISTS.
EXISTS_AGGREGATE = (
    "SELECT c.region, count(*) AS n FROM crm.customers c, sales.orders o1, sales.orders o "
    "WHERE c.customer_id = o1.customer_id AND o.order_id = o1.order_id "
    "AND EXISTS (SELECT max(o2.amount) FROM sales.orders o2 WHERE o2.customer_id = o1.customer_id "
    "AND o2.order_id <> o1.order_id HAVING max(o2.amount) > 4000) GROUP BY c.region"
)
#: Subqueries that must stay in the gateway: one reads another domain, one correlates
#: with a source outside the group.
STAYS_APART = (
    "SELECT c.region, count(*) AS n FROM crm.customers c, sales.orders o1, sales.orders o "
    "WHERE c.customer_id = o1.customer_id AND o.order_id = o1.order_id "
    "AND EXISTS (SELECT * FROM crm.customers c2 WHERE c2.customer_id = o1.customer_id "
    "AND c2.region = 'EU') "
    "AND EXISTS (SELECT * FROM sales.orders o2 WHERE o2.customer_id = c.customer_id "
    "AND o2.order_id <> o1.order_id) GROUP BY c.region"
)
#: TPC-H q22's shape: another domain's NOT EXISTS, and an IN on a masked column (erin).
SEMI_JOINS = (
    (
        "SELECT c.region, count(*) AS n FROM crm.customers c WHERE NOT EXISTS "
        "(SELECT * FROM sales.orders o WHERE o.customer_id = c.customer_id AND o.amount > 4000) "
        "GROUP BY c.region"
    ),
    (
        "SELECT s.carrier, count(*) AS n FROM logistics.shipments s WHERE s.order_id IN "
        "(SELECT o.order_id FROM sales.orders o WHERE o.amount >= 4000) GROUP BY s.carrier"
    ),
)
#: Where the projections or duplicates decide the answer: an EXISTS over an aggregate
#: (always one row), an IN over a LIMIT (duplicates count toward it).
NOT_SETS = (
    (
        "SELECT c.region, count(*) AS n FROM crm.customers c WHERE EXISTS (SELECT max(o.amount) "
        "FROM sales.orders o WHERE o.customer_id = c.customer_id AND o.amount > 4900) "
        "GROUP BY c.region"
    ),
    (
        "SELECT s.carrier, count(*) AS n FROM logistics.shipments s WHERE s.order_id IN "
        "(SELECT o.order_id FROM sales.orders o ORDER BY o.amount, o.order_id LIMIT 50) "
        "GROUP BY s.carrier"
    ),
)
#: An EXISTS over o2 in a join group (o1, o) and alone: ``UNNEST_PROJECTION`` replaces
#: its projection in the governed tree (the planner refuses ``unnest`` in a user's SQL; the
#: split must not count on that).
EXISTS_OVER_O2 = (
    (
        "SELECT c.region, count(*) AS n FROM crm.customers c, sales.orders o1, sales.orders o "
        "WHERE c.customer_id = o1.customer_id AND o.order_id = o1.order_id "
        "AND EXISTS (SELECT o2.order_id FROM sales.orders o2 "
        "WHERE o2.customer_id = o1.customer_id AND o2.order_id <> o1.order_id) GROUP BY c.region"
    ),
    (
        "SELECT c.region, count(*) AS n FROM crm.customers c WHERE EXISTS (SELECT o2.order_id "
        "FROM sales.orders o2 WHERE o2.customer_id = c.customer_id) GROUP BY c.region"
    ),
)
#: No row for an order of 4900 or less: the EXISTS holds for big orders only.
UNNEST_PROJECTION = "unnest(CASE WHEN o2.amount > 4900 THEN [o2.order_id] ELSE [] END)"
ALL_SHAPES = (
    Q21_SHAPED,
    OTHER_REGION_SAME_DAY.format(exists="EXISTS"),
    OTHER_REGION_SAME_DAY.format(exists="NOT EXISTS"),
    MASKED_CORRELATION,
    IN_AGGREGATE,
    ONE_SOURCE,
    EXISTS_AGGREGATE,
    STAYS_APART,
    *SEMI_JOINS,
    *NOT_SETS,
)


# --------------------------------------------------------------------------- in process


def governed_query(service: SqlService, user: str, sql: str) -> Query:
    roles, attributes = DEMO_USERS[user]
    return plan_query(sql, service.planner.context(Principal(user, roles, dict(attributes))))


def split(service: SqlService, user: str, sql: str) -> tuple[str, FederatedPlan]:
    """The governed SQL of ``sql`` for ``user`` and its split."""
    query = governed_query(service, user, sql)
    plan = split_fragments(
        inline_parameters(query.ast, ()), {p.key: p.column_types for p in query.products}, SERVED
    )
    return query.sql, plan


def federated_answer(service: SqlService, governed: str, plan: FederatedPlan) -> pa.Table:
    """The final query over the fragments' results, on the embedded engine."""
    with service.snapshot.catalog.engine.cursor() as cursor:
        for fragment in plan.fragments:
            cursor.register(fragment.name, cursor.sql(fragment.sql).to_arrow_table())
        try:
            return cursor.sql(plan.final_sql).to_arrow_table()
        finally:
            for fragment in plan.fragments:
                cursor.unregister(fragment.name)


def whole_answer(service: SqlService, governed: str) -> pa.Table:
    with service.snapshot.catalog.engine.cursor() as cursor:
        return cursor.sql(governed).to_arrow_table()


def test_q21_shape_is_one_sales_fragment_with_its_subqueries(service):
    _governed, plan = split(service, "bob", Q21_SHAPED)
    (sales,) = [f for f in plan.fragments if f.domain == "sales"]
    tree = sqlglot.parse_one(sales.sql, read="duckdb")
    assert sales.sql.count(SALES_SCAN) == 4, "o1, o, and the two subqueries' orders"
    semis = sorted(j.args.get("kind") or "" for j in tree.find_all(exp.Join) if j.args.get("on"))
    assert semis == ["ANTI", "SEMI"], "NOT EXISTS and EXISTS, as joins the node plans as such"
    assert sales.kind == "partial_aggregate", "grouped by customer on the node"
    assert sales.products == ("sales.orders",)
    final = sqlglot.parse_one(plan.final_sql, read="duckdb")
    assert not list(final.find_all(exp.Exists)) and not list(final.find_all(exp.Subquery))


def test_in_over_an_aggregate_of_the_domain_moves_with_the_group(service):
    _governed, plan = split(service, "bob", IN_AGGREGATE)
    (sales,) = [f for f in plan.fragments if f.domain == "sales"]
    assert sales.sql.count(SALES_SCAN) == 3 and " IN (" in sales.sql
    assert " IN (" not in plan.final_sql


def test_one_source_with_its_exists_runs_on_the_node(service):
    _governed, plan = split(service, "bob", ONE_SOURCE)
    (sales,) = [f for f in plan.fragments if f.domain == "sales"]
    assert sales.sql.count(SALES_SCAN) == 2 and "SEMI JOIN" in sales.sql
    assert "EXISTS" not in plan.final_sql


def test_an_exists_of_an_aggregate_moves_as_it_is(service):
    _governed, plan = split(service, "bob", EXISTS_AGGREGATE)
    (sales,) = [f for f in plan.fragments if f.domain == "sales"]
    assert sales.sql.count(SALES_SCAN) == 3 and "EXISTS" in sales.sql
    assert "SEMI JOIN" not in sales.sql and "EXISTS" not in plan.final_sql


def test_foreign_and_outside_correlated_subqueries_stay_in_the_gateway(service):
    _governed, plan = split(service, "bob", STAYS_APART)
    final = sqlglot.parse_one(plan.final_sql, read="duckdb")
    assert len(list(final.find_all(exp.Exists))) == 2, plan.final_sql
    joined = [f for f in plan.fragments if f.sql.count(SALES_SCAN) == 2]
    assert len(joined) == 1, "the self-join is still grouped"
    assert "EXISTS" not in joined[0].sql


def test_a_semi_join_fragment_moves_its_distinct_keys_only(service):
    """The NOT EXISTS reads no column of its projections, and its answer depends on the
    set of customer ids: the sales node returns each id once, and nothing else."""
    _governed, plan = split(service, "alice", SEMI_JOINS[0])
    (sales,) = [f for f in plan.fragments if f.domain == "sales"]
    tree = sqlglot.parse_one(sales.sql, read="duckdb")
    assert isinstance(tree, exp.Select) and tree.args.get("distinct")
    assert tree.named_selects == ["customer_id"]
    assert "'EU'" in sales.sql and "4000" in sales.sql, "filtered inside, under the DISTINCT"


def test_exists_over_an_aggregate_and_in_over_a_limit_keep_their_rows(service):
    _governed, plan = split(service, "bob", NOT_SETS[0])
    (sales,) = [f for f in plan.fragments if f.domain == "sales"]
    assert "DISTINCT" not in sales.sql and "MAX(" in plan.final_sql, "still one row each"
    _governed, plan = split(service, "bob", NOT_SETS[1])
    (sales,) = [f for f in plan.fragments if f.domain == "sales"]
    tree = sqlglot.parse_one(sales.sql, read="duckdb")
    assert tree.args.get("limit") is None, "any DISTINCT reads the 50 rows, after the LIMIT"
    assert tree.find(exp.Limit) is not None


@pytest.mark.parametrize("sql", EXISTS_OVER_O2, ids=["join-group", "alone"])
@pytest.mark.parametrize("user", ["bob", "alice"])
def test_an_exists_projecting_a_set_keeps_its_projection(service, user, sql):
    """``EXISTS (SELECT unnest([]))`` is false where ``EXISTS (SELECT 1)`` is true: a body
    whose projection returns a set neither becomes a SEMI JOIN (in a join group) nor
    selects 1 (alone), and the split answers as the governed query run whole."""
    query = governed_query(service, user, sql)
    tree = inline_parameters(query.ast, ())
    body = tree.find(exp.Exists)
    assert body is not None
    body.this.set("expressions", [sqlglot.parse_one(UNNEST_PROJECTION, read="duckdb")])
    governed = tree.sql("duckdb")
    plan = split_fragments(tree, {p.key: p.column_types for p in query.products}, SERVED)
    split_sql = [plan.final_sql, *(f.sql for f in plan.fragments)]
    assert not any("SEMI JOIN" in q for q in split_sql)
    assert sum(q.count("UNNEST(CASE") for q in split_sql) == 1, split_sql
    expected = sorted_rows(whole_answer(service, governed))
    assert expected != sorted_rows(whole_answer(service, query.sql)), "the probe must tell"
    assert sorted_rows(federated_answer(service, governed, plan)) == expected


@pytest.mark.parametrize("user", USERS)
def test_every_user_gets_the_governed_answer_in_process(service, user):
    for sql in ALL_SHAPES:
        try:
            governed, plan = split(service, user, sql)
        except Exception as exc:  # noqa: BLE001 - a user who may not read a product
            assert "may not read" in str(exc) or "unknown product" in str(exc)
            continue
        got, expected = federated_answer(service, governed, plan), whole_answer(service, governed)
        assert got.schema.types == expected.schema.types, sql
        assert sorted_rows(got) == sorted_rows(expected), sql


def test_alice_subqueries_carry_her_row_filter_into_every_scan(service):
    _governed, plan = split(service, "alice", Q21_SHAPED)
    (sales,) = [f for f in plan.fragments if f.domain == "sales"]
    assert sales.sql.count(SALES_SCAN) == 4
    assert sales.sql.count("'EU'") == 4, "each governed scan filters its own rows"


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def nodes(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("join-groups-mesh")
    with running_mesh(demo_mesh, root, {"sales": 1, "crm": 1, "logistics": 1}) as running:
        yield running


@pytest.mark.parametrize("user", USERS)
def test_every_user_gets_the_embedded_answer_through_adbc(
    nodes: Mesh, gateway: RunningGateway, connections, user: str
):
    mesh, embedded = connections(nodes.gateway.uri, user), connections(gateway.uri, user)
    for sql in ALL_SHAPES:
        assert outcome(mesh, sql) == outcome(embedded, sql), (user, sql)


def test_a_set_returning_projection_is_refused_as_embedded(
    nodes: Mesh, gateway: RunningGateway, connections
):
    tree = sqlglot.parse_one(EXISTS_OVER_O2[1], read="duckdb")
    exists = tree.find(exp.Exists)
    assert exists is not None
    exists.this.set("expressions", [sqlglot.parse_one(UNNEST_PROJECTION, read="duckdb")])
    sql = tree.sql("duckdb")
    got = outcome(connections(nodes.gateway.uri, "bob"), sql)
    assert got == outcome(connections(gateway.uri, "bob"), sql)
    assert got[0] == "error" and "unnest" in got[2]


def test_q21_shape_moves_one_pre_aggregated_sales_fragment(
    nodes: Mesh, gateway: RunningGateway, connections
):
    expected = outcome(connections(gateway.uri, "bob"), Q21_SHAPED)
    assert expected[0] == "ok" and expected[2]
    offset = log_offset(nodes.gateway.log_path)
    assert outcome(connections(nodes.gateway.uri, "bob"), Q21_SHAPED) == expected
    record = federated(nodes.gateway.log_path, offset)
    (sales,) = [f for f in record["fragments"] if f["domain"] == "sales"]
    assert sales["kind"] == "partial_aggregate" and sales["complete"]
    with_customers = outcome(
        connections(gateway.uri, "bob"),
        "SELECT count(DISTINCT customer_id) AS n FROM sales.orders",
    )[2][0][0]
    assert sales["rows"] <= int(with_customers), "one row per customer at most, not per order"


def test_hidden_rows_never_decide_alice_exists(nodes: Mesh, gateway: RunningGateway, connections):
    """Orders of every region share days, so bob's EXISTS holds for many orders; alice sees
    EU orders only: her EXISTS over orders of another region holds for none, her NOT EXISTS
    for all of hers, on the mesh as embedded, and the sales node ran every scan of the
    fragment (her filter in each) for her."""
    alice_mesh = connections(nodes.gateway.uri, "alice")
    alice_embedded = connections(gateway.uri, "alice")
    exists = OTHER_REGION_SAME_DAY.format(exists="EXISTS")
    not_exists = OTHER_REGION_SAME_DAY.format(exists="NOT EXISTS")
    bob = outcome(connections(gateway.uri, "bob"), exists)
    assert bob[0] == "ok" and bob[2], (
        "the probe must find other-region orders, or it proves nothing"
    )

    audit = nodes.mesh_dir / ".meshgate" / "audit" / "node-sales"
    begun = len([r for r in read_audit(audit) if r["event"] == "ticket_begin"])
    got = outcome(alice_mesh, exists)
    assert got == outcome(alice_embedded, exists)
    assert got[0] == "ok" and got[2] == []
    begins = [r for r in read_audit(audit) if r["event"] == "ticket_begin"][begun:]
    (ticket,) = [r for r in begins if "SEMI JOIN" in r["sql"]]  # not a size estimate's scan
    assert ticket["user"] == "alice"
    assert ticket["sql"].count(SALES_SCAN) == 3 and ticket["sql"].count("'EU'") == 3

    got = outcome(alice_mesh, not_exists)
    assert got == outcome(alice_embedded, not_exists)
    visible = outcome(
        alice_embedded,
        "SELECT c.region, count(*) AS n FROM crm.customers c JOIN sales.orders o "
        "ON c.customer_id = o.customer_id GROUP BY c.region",
    )
    assert got[0] == "ok" and got[2] == visible[2], "every order of hers qualifies"


def test_erin_correlates_on_masked_amounts(nodes: Mesh, gateway: RunningGateway, connections):
    erin = outcome(connections(nodes.gateway.uri, "erin"), MASKED_CORRELATION)
    assert erin == outcome(connections(gateway.uri, "erin"), MASKED_CORRELATION)
    bob = outcome(connections(nodes.gateway.uri, "bob"), MASKED_CORRELATION)
    assert erin[0] == bob[0] == "ok"
    counted = {row[0]: int(row[1]) for row in erin[2]}
    exact = {row[0]: int(row[1]) for row in bob[2]}
    assert sum(counted.values()) > sum(exact.values()), "rounded amounts match more often"
