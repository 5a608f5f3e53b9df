"""Dynamic filters as planned and written (``gateway.mesh.dynamic``), in process: which
joins may filter their probe side, and where the keys go in the probe's fragment."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from gateway.mesh import dynamic
from gateway.mesh.fragments import FederatedPlan, Fragment
from gateway.planning.barrier import is_barrier

BARE = Fragment(
    "__fragment_1",
    "sales",
    'SELECT "o"."customer_id" AS "customer_id" FROM "memory"."sales"."orders" AS "o" '
    'WHERE "o"."region" = \'EU\'',
    ("sales.orders",),
)
MASKED = Fragment(
    "__fragment_1",
    "crm",
    'SELECT system.main.partial_email("c"."email") AS "email" '
    'FROM "memory"."crm"."customers" AS "c" WHERE "c"."region" = \'EU\'',
    ("crm.customers",),
)


def plan(final_sql: str) -> FederatedPlan:
    fragments = tuple(Fragment(f"__fragment_{i}", "d", "SELECT 1", (f"d.p{i}",)) for i in range(3))
    return FederatedPlan(fragments, final_sql, True)


KEY_SET = "__meshgate_keys_0"


def keys(*values: int) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, pa.int64())])


def key_filter(column: str, values: pa.ChunkedArray, probe: pa.DataType) -> dynamic.KeyFilter:
    made = dynamic.key_predicate(dynamic.probe_column(column), values, probe, 1, KEY_SET)
    assert made is not None
    return made


def filtered_sql(fragment: Fragment, column: str, made: dynamic.KeyFilter) -> str:
    sets = {KEY_SET: made.key_set} if made.key_set is not None else {}
    return dynamic.filtered(fragment, {column: made.predicate}, made.parameters, sets).sql


def run(con: duckdb.DuckDBPyConnection, sql: str, made: dynamic.KeyFilter) -> list:
    """``sql`` as a node runs it: the key set registered as its table."""
    if made.key_set is not None:
        con.register(KEY_SET, pa.table({"key": made.key_set}))
    return sorted(con.execute(sql, list(made.parameters) or None).fetchall())


def semi_joins(tree: exp.Expr) -> list[exp.In]:
    """The IN subqueries reading the key set."""
    return [
        n for n in tree.find_all(exp.In) if any(t.name == KEY_SET for t in n.find_all(exp.Table))
    ]


def test_inner_equi_joins_filter_either_side():
    joins = dynamic.key_joins(
        plan('SELECT * FROM "__fragment_0" AS a JOIN "__fragment_1" AS b ON a.x = b.y')
    )
    assert set(joins) == {
        dynamic.KeyJoin("__fragment_0", "x", "__fragment_1", "y"),
        dynamic.KeyJoin("__fragment_1", "y", "__fragment_0", "x"),
    }


def test_outer_joins_and_probes_read_twice_are_not_filtered():
    left = 'SELECT * FROM "__fragment_0" AS a LEFT JOIN "__fragment_1" AS b ON a.x = b.y'
    assert dynamic.key_joins(plan(left)) == []
    twice = (
        'SELECT * FROM "__fragment_0" AS a JOIN "__fragment_1" AS b ON a.x = b.y '
        'UNION ALL SELECT * FROM "__fragment_0" AS c'
    )
    assert dynamic.key_joins(plan(twice)) == [
        dynamic.KeyJoin("__fragment_1", "y", "__fragment_0", "x")
    ]


def test_keys_of_a_bare_column_filter_the_fragment_output_without_a_barrier():
    made = key_filter("customer_id", keys(3, 5, 3), pa.int32())
    assert (made.kind, made.distinct, made.parameters) == ("in", 2, ())
    assert sorted(made.key_set.to_pylist()) == [3, 5]
    tree = sqlglot.parse_one(filtered_sql(BARE, "customer_id", made), read="duckdb")
    governed = tree.args["from_"].this.this
    assert governed.sql("duckdb") == sqlglot.parse_one(BARE.sql, read="duckdb").sql("duckdb")
    assert semi_joins(tree) and not semi_joins(governed)


def test_keys_of_a_masked_column_stay_behind_a_barrier():
    made = key_filter("email", pa.chunked_array([pa.array(["a***@x.org"])]), pa.string())
    tree = sqlglot.parse_one(filtered_sql(MASKED, "email", made), read="duckdb")
    fence = tree.args["from_"].this.this
    assert isinstance(fence, exp.Select) and is_barrier(fence)


def test_no_keys_filter_everything_and_many_keys_send_their_range():
    made = key_filter("x", keys(), pa.int64())
    assert (made.predicate, made.parameters, made.key_set, made.kind) == (
        exp.false(),
        (),
        None,
        "empty",
    )
    many = key_filter("x", keys(*range(dynamic.IN_MAX_KEYS + 1)), pa.int64())
    assert (many.kind, many.parameters, many.key_set, many.distinct) == (
        "range",
        (0, dynamic.IN_MAX_KEYS),
        None,
        dynamic.IN_MAX_KEYS + 1,
    )


def test_the_filtered_fragment_runs_in_duckdb_with_its_keys():
    with duckdb.connect() as con:
        con.sql("CREATE TABLE t AS SELECT range AS x FROM range(100)")
        fragment = Fragment("f", "d", 'SELECT "t"."x" AS "x" FROM "t" AS "t"', ("d.t",))
        for made, expected in (
            (key_filter("x", keys(7, 70, 700), pa.int64()), [(7,), (70,)]),
            (key_filter("x", keys(*range(50, dynamic.IN_MAX_KEYS + 51)), pa.int64()), None),
        ):
            got = run(con, filtered_sql(fragment, "x", made), made)
            assert got == (expected or [(x,) for x in range(50, 100)])


def test_keys_narrower_than_the_probe_column_never_cast_it_down():
    """INTEGER keys against a BIGINT column: the keys are read as BIGINT."""
    with duckdb.connect() as con:
        con.sql("CREATE TABLE t AS SELECT range * 4294967296 + 1 AS x FROM range(3)")
        fragment = Fragment("f", "d", 'SELECT "t"."x" AS "x" FROM "t" AS "t"', ("d.t",))
        made = key_filter("x", pa.chunked_array([pa.array([1], pa.int32())]), pa.int64())
        assert run(con, filtered_sql(fragment, "x", made), made) == [(1,)]


def test_semi_joins_correlations_and_equated_columns_filter_too():
    semi = (
        'SELECT * FROM "__fragment_0" AS a JOIN "__fragment_1" AS b ON a.x = b.y '
        'WHERE a.x IN (SELECT * FROM "__fragment_2")'
    )
    assert {
        dynamic.KeyJoin("__fragment_0", "x", "__fragment_2", dynamic.ONLY_COLUMN),
        dynamic.KeyJoin("__fragment_1", "y", "__fragment_2", dynamic.ONLY_COLUMN),
    } <= set(dynamic.key_joins(plan(semi)))
    correlated = (
        'SELECT * FROM "__fragment_0" AS a '
        'WHERE NOT EXISTS (SELECT 1 FROM "__fragment_1" AS b WHERE b.y = a.x)'
    )
    assert dynamic.key_joins(plan(correlated)) == [
        dynamic.KeyJoin("__fragment_1", "y", "__fragment_0", "x")
    ]


AGGREGATE = Fragment(
    "f",
    "d",
    'SELECT "j"."k" AS "k", SUM("j"."v") AS "total" FROM (SELECT "a"."k" AS "k", "b"."v" AS "v" '
    'FROM (SELECT "a"."k" AS "k" FROM "memory"."main"."a" AS "a" WHERE "a"."k" > 0) AS "a", '
    '(SELECT "b"."k" AS "k", "b"."v" AS "v" FROM "memory"."main"."b" AS "b") AS "b" '
    'WHERE "a"."k" = "b"."k") AS "j" GROUP BY "j"."k"',
    ("d.a", "d.b"),
)


def _in_keys(column: str, *values: int) -> dynamic.KeyFilter:
    return key_filter(column, keys(*values), pa.int64())


def _tables(con: duckdb.DuckDBPyConnection) -> None:
    con.sql("CREATE TABLE a AS SELECT range AS k FROM range(10)")
    con.sql("CREATE TABLE b AS SELECT range % 10 AS k, range AS v FROM range(100)")


def test_keys_of_a_group_key_filter_the_rows_before_they_are_grouped():
    """DuckDB moves no semi-join below an aggregate: the keys go into the WHERE of the
    join the group reads (the deepest SELECT above the products' own), same rows."""
    made = _in_keys("k", 3, 5, 30)
    tree = sqlglot.parse_one(filtered_sql(AGGREGATE, "k", made), read="duckdb")
    (semi,) = semi_joins(tree)
    assert semi.this.sql("duckdb") == '"a"."k"'
    join = semi.parent_select
    assert join.args["from_"].this.alias == "a" and join is not tree  # below the GROUP BY
    assert all(t.parent_select is not join for t in tree.find_all(exp.Table) if t.name != KEY_SET)
    with duckdb.connect() as con:
        _tables(con)
        wrapped = (
            exp.select("*")
            .from_(sqlglot.parse_one(AGGREGATE.sql, read="duckdb").subquery("w"))
            .where("w.k IN (3, 5, 30)")
        )
        expected = sorted(con.sql(wrapped.sql("duckdb")).fetchall())
        got = run(con, tree.sql("duckdb"), made)
        assert got == expected == [(3, 480), (5, 500)]


def test_keys_stay_above_an_outer_join_whose_side_they_filter():
    fragment = Fragment(
        "f",
        "d",
        'SELECT "a"."k" AS "k", "b"."v" AS "v" FROM (SELECT "a"."k" AS "k" FROM "memory"."main"."a" AS "a") AS "a" '
        'LEFT JOIN (SELECT "b"."k" AS "k", "b"."v" AS "v" FROM "memory"."main"."b" AS "b" WHERE "b"."v" < 20) '
        'AS "b" ON "a"."k" = "b"."k"',
        ("d.a", "d.b"),
    )
    made = _in_keys("v", 1, 2)
    sql = filtered_sql(fragment, "v", made)
    tree = sqlglot.parse_one(sql, read="duckdb")
    (semi,) = semi_joins(tree)
    assert semi.parent_select is tree  # the outer join's own WHERE, not inside its side
    with duckdb.connect() as con:
        _tables(con)
        assert run(con, sql, made) == [(1, 1), (2, 2)]


def test_a_correlated_probe_gets_the_keys_that_filter_its_outer_rows():
    """q20's shape: the outer rows that matter have ``b.y`` among fragment 2's keys, so
    the correlated subquery only ever meets ``a.x`` values among them too."""
    correlated = (
        'SELECT * FROM "__fragment_1" AS b WHERE b.y IN (SELECT * FROM "__fragment_2") '
        'AND b.v > (SELECT sum(a.w) FROM "__fragment_0" AS a WHERE a.x = b.y)'
    )
    assert {
        dynamic.KeyJoin("__fragment_0", "x", "__fragment_1", "y"),
        dynamic.KeyJoin("__fragment_0", "x", "__fragment_2", dynamic.ONLY_COLUMN),
    } <= set(dynamic.key_joins(plan(correlated)))
    either = (
        'SELECT * FROM "__fragment_1" AS b WHERE (b.y IN (SELECT * FROM "__fragment_2") '
        'OR b.v > 0) AND b.v > (SELECT sum(a.w) FROM "__fragment_0" AS a WHERE a.x = b.y)'
    )
    assert dynamic.KeyJoin("__fragment_0", "x", "__fragment_2", dynamic.ONLY_COLUMN) not in set(
        dynamic.key_joins(plan(either))
    )


def test_a_fragment_an_earlier_build_filters_may_be_a_bigger_build():
    """q5: Asia's customers (150k rows unfiltered, filtered by its nations' keys) are a
    build for orders; customers no build filters stay a probe only."""
    joins = [
        dynamic.KeyJoin("__fragment_1", "nation", "__fragment_0", "nation"),
        dynamic.KeyJoin("__fragment_2", "customer", "__fragment_1", "customer"),
    ]
    rows = {"0": 5, "1": 150_000, "2": 1_500_000}
    estimate = {f"__fragment_{i}": n for i, n in rows.items()}
    three = FederatedPlan(
        tuple(Fragment(name, "d", name, (name,)) for name in estimate), "SELECT 1", True
    )
    order = dynamic.plan_order(three, joins, lambda sql: estimate[sql])
    assert [(build, [j.probe for j in uses]) for build, uses in order] == [
        ("__fragment_0", ["__fragment_1"]),
        ("__fragment_1", ["__fragment_2"]),
    ]
    unfiltered = dynamic.plan_order(three, joins[1:], lambda sql: estimate[sql])
    assert unfiltered == []


def test_a_whole_product_no_build_filters_is_no_build():
    """q8: every nation, then every supplier: keys that filter nothing are not worth
    the wait; the same product under a predicate (or a row filter) is a build."""
    whole = 'SELECT "n"."k" AS "k" FROM "memory"."c"."nation" AS "n"'
    some = whole + ' WHERE "n"."region" = 1'
    for sql, builds in ((whole, []), (some, ["__fragment_0"])):
        two = FederatedPlan(
            (
                Fragment("__fragment_0", "c", sql, ("c.nation",)),
                Fragment("__fragment_1", "o", "big", ("o.orders",)),
            ),
            "SELECT 1",
            True,
        )
        joins = [dynamic.KeyJoin("__fragment_1", "k", "__fragment_0", "k")]
        order = dynamic.plan_order(two, joins, lambda sql: 10**6 if sql == "big" else 25)
        assert [build for build, _ in order] == builds
