"""The security barrier on Spark, proved on Spark's own plans: no predicate the user wrote
runs on a row before that row passed its product's row filter.

tests/adversarial/test_security_barrier.py proves it on DuckDB's plans. On Spark the
barrier of a secure subquery is the always-true ``monotonically_increasing_id() >= 0`` in
its WHERE (``gateway.planning.barrier.add_barrier``): Spark neither merges a filter into
one whose condition is not deterministic, nor pushes one through it. The statements are
planned for Spark as the Spark executor plans them (``SparkExecutor.spark_sql``), on a copy
of the demo mesh where the Parquet products Spark reads in place have row filters (alice:
crm.customers, a data column; erin: logistics.shipments, the hive partition), and
``EXPLAIN EXTENDED`` runs on the session's Spark. In the optimized logical plan and in the
physical plan, every Parquet scan sits under a Filter holding the fence and the row filter
(through projections only), in or under which no user function and no mask runs, and the
scan's DataFilters, PartitionFilters and PushedFilters hold none either; the row filter and
the leakproof conjuncts still reach the scan. sales.orders (a DuckDB file) travels to Spark
as an Arrow fragment the gateway governed already: there the user's predicate must read
that fragment's rows only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest
from sqlglot import parse_one
from support.attacks import barrier_attacks
from support.oracle import Oracle
from support.servers import configure, copy_mesh

from benchmarks.spark_server import SparkServer
from gateway.catalog.state import MeshState
from gateway.config import load_config
from gateway.demo.mesh import DEMO_USERS
from gateway.errors import QueryRefused
from gateway.flightsql.service import SqlService
from gateway.planning.secure import secure_subquery
from gateway.security.principal import Principal
from gateway.spark import connect
from gateway.spark.connect import SparkConnect

pytestmark = [pytest.mark.spark, pytest.mark.slow]

#: A function no mask, row filter or Spark rewrite writes, that Spark runs as DuckDB does:
#: where it stands in a plan, the user's predicate runs.
MARKER = "length"
FENCE = "monotonically_increasing_id()"
#: the row filter of both filtered products, as Spark prints it
ROW_FILTER = re.compile(r"\(region#\d+ = EU\)")
#: the masks Spark computes (hash: sha2; partial email: concat_ws): never under the fence
MASKS = ("sha2(", "concat_ws(")
FRAGMENT = "meshgate_sales__orders"
HASH_KEY = re.compile(r"[0-9a-f]{64}")
POLICIES = {
    "crm": "p, analyst_eu, crm.customers, filter, allow, region = {user.region}",
    "logistics": "p, ops, logistics.shipments, filter, allow, region = 'EU'",
}
#: plan nodes a Parquet scan may sit under between it and its fence
PASS_THROUGH = ("Project", "ColumnarToRow", "InputAdapter", "WholeStageCodegen")


@dataclass(frozen=True)
class Target:
    """A Parquet product with a row filter, the user it filters, and its columns: ``key``
    (a BIGINT), ``text`` (an unmasked VARCHAR), ``join`` (shared with sales.orders)."""

    user: str
    product: str
    key: str
    text: str
    join: str
    scan: str  # how its scan's location reads
    pruning: str  # the scan list that holds the row filter: a data column or the partition
    pruned: re.Pattern

    def statement(self, shape: str) -> str:
        return shape.format(p=self.product, k=self.key, s=self.text, j=self.join, m=MARKER)


TARGETS = {
    "customers": Target(
        "alice",
        "crm.customers",
        "customer_id",
        "name",
        "customer_id",
        "customers.parquet",
        "PushedFilters",
        re.compile(r"EqualTo\(region,EU\)"),
    ),
    "shipments": Target(
        "erin",
        "logistics.shipments",
        "shipment_id",
        "carrier",
        "order_id",
        "shipments",
        "PartitionFilters",
        ROW_FILTER,
    ),
}

#: The attack shapes of tests/adversarial/test_security_barrier.py, over a Parquet product
#: (QUALIFY, which Spark refuses, as a filter over a window).
SHAPES = {
    "where": "SELECT count(*) FROM {p} WHERE CASE WHEN {k} = 4 THEN {m}({s}) ELSE 0 END = 99",
    "where_or": "SELECT * FROM {p} WHERE {k} > 100 OR {m}({s}) = 99",
    "join_on": (
        "SELECT count(*) FROM sales.orders o JOIN {p} t ON t.{j} = o.{j} AND {m}(t.{s}) = 99"
    ),
    "left_join_where": (
        "SELECT count(*) FROM sales.orders o LEFT JOIN {p} t USING ({j}) "
        "WHERE {m}(t.{s}) = 99 OR t.{s} IS NULL"
    ),
    "exists": (
        "SELECT count(*) FROM sales.orders o WHERE EXISTS (SELECT 1 FROM {p} t "
        "WHERE t.{j} = o.{j} AND {m}(t.{s}) + t.{k} = 99)"
    ),
    "in_subquery": (
        "SELECT count(*) FROM sales.orders WHERE {j} IN (SELECT {j} FROM {p} WHERE {m}({s}) = 99)"
    ),
    "having_group_key": "SELECT {s}, count(*) FROM {p} GROUP BY {s} HAVING {m}({s}) = 99",
    "cte": "WITH x AS (SELECT * FROM {p}) SELECT count(*) FROM x WHERE {m}({s}) = 99",
    "derived_column": (
        "SELECT count(*) FROM (SELECT {m}({s}) AS h, {k} FROM {p}) t WHERE h = 99 AND {k} = 4"
    ),
    "union": (
        "SELECT count(*) FROM (SELECT {s} FROM {p} UNION ALL SELECT {s} FROM {p}) u "
        "WHERE {m}({s}) = 99"
    ),
    "window": (
        "SELECT * FROM (SELECT {s}, row_number() OVER (PARTITION BY {s} ORDER BY {k}) AS r "
        "FROM {p}) w WHERE {m}({s}) = 99 AND r = 1"
    ),
    "cross_product_or": (
        "SELECT count(*) FROM sales.orders o, {p} t WHERE o.{j} = t.{j} "
        "AND ((t.{k} > 10 AND {m}(t.{s}) = 99) OR (o.amount < 5 AND t.{s} = 'x'))"
    ),
    "scalar_subquery": (
        "SELECT count(*) FROM sales.orders o WHERE 0 < (SELECT count(*) FROM {p} t "
        "WHERE t.{j} = o.{j} AND {m}(t.{s}) = 99)"
    ),
    "beside_a_leakproof_conjunct": "SELECT count(*) FROM {p} WHERE {k} = 4 AND {m}({s}) = 99",
}


# --------------------------------------------------------------------------- plans


@dataclass
class Node:
    """One operator of a plan printed by Spark, with the operators under it (subquery
    plans printed under an operator count as under it)."""

    text: str
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    def subtree(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.subtree()


def redacted(text: str) -> str:
    """``text`` without the hash key (the hash mask writes it into the SQL and the plans)."""
    return HASH_KEY.sub("<HASH KEY>", text)


def plan_tree(text: str) -> list[Node]:
    """The operator trees of one section of Spark's EXPLAIN output, by indentation."""
    roots: list[Node] = []
    stack: list[tuple[int, Node]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        depth = len(re.match(r"[\s:+\-]*", line).group())
        node = Node(redacted(re.sub(r"^\*\(\d+\) ", "", line[depth:])))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            node.parent = stack[-1][1]
            node.parent.children.append(node)
        else:
            roots.append(node)
        stack.append((depth, node))
    return roots


def nodes(roots: list[Node]) -> Iterator[Node]:
    for root in roots:
        yield from root.subtree()


@dataclass
class SparkPlan:
    sql: str  # the Spark SQL the executor runs
    fragments: dict[str, pa.Table]
    analyzed: list[Node]
    optimized: list[Node]
    physical: list[Node]

    @property
    def shown(self) -> str:
        return redacted(self.sql)


def _section(text: str, title: str, end: str | None) -> str:
    start = text.index(f"== {title} ==") + len(title) + 6
    return text[start : text.index(f"== {end} ==")] if end else text[start:]


def scan_list(scan: str, name: str) -> str:
    """The bracketed list ``name: [...]`` of a FileScan line, whole."""
    start = scan.index(f"{name}: [") + len(name) + 2
    depth = 0
    for at in range(start, len(scan)):
        depth += {"[": 1, "]": -1}.get(scan[at], 0)
        if depth == 0:
            listed = scan[start + 1 : at]
            assert not listed.endswith("..."), f"{name} printed shortened: {scan}"
            return listed
    raise AssertionError(f"no {name} in {scan}")


def user_code(text: str) -> str | None:
    if f"{MARKER}(" in text:
        return "the user's predicate"
    return next((f"a mask ({mask[:-1]})" for mask in MASKS if mask in text), None)


def _partition_pruned(scan: str) -> bool:
    """A physical scan applies a row filter on the partition column itself, before it
    reads a row (so Spark leaves it out of the Filter above)."""
    return scan.startswith("FileScan") and bool(
        ROW_FILTER.search(scan_list(scan, "PartitionFilters"))
    )


def fence_problems(roots: list[Node], scan: str) -> list[str]:
    """Where the fence does not hold in a plan: a Parquet scan (nodes starting with
    ``scan``) that is not under a Filter holding the fence and the row filter (through
    projections only; a physical scan may prune partitions with the row filter instead),
    or user code in that Filter or under it."""
    problems = []
    for relation in nodes(roots):
        if not (relation.text.startswith(scan) and "parquet" in relation.text):
            continue
        fence = relation.parent
        while fence is not None and fence.text.startswith(PASS_THROUGH):
            fence = fence.parent
        if fence is None or not fence.text.startswith("Filter") or FENCE not in fence.text:
            above = fence.text[:300] if fence is not None else "nothing"
            problems.append(f"no fence over {relation.text[:120]}: under {above}")
            continue
        if not ROW_FILTER.search(fence.text) and not _partition_pruned(relation.text):
            problems.append(f"the fence lacks the row filter: {fence.text[:300]}")
        for below in fence.subtree():
            found = user_code(below.text)
            if found:
                problems.append(f"{found} in or under the fence: {below.text[:300]}")
    return problems


def scans(plan: SparkPlan, target: Target) -> list[str]:
    found = [
        n.text
        for n in nodes(plan.physical)
        if n.text.startswith("FileScan parquet") and target.scan in n.text
    ]
    assert found, f"no scan of {target.product} in the physical plan"
    return found


def assert_fenced(plan: SparkPlan) -> None:
    for roots, scan in ((plan.optimized, "Relation ["), (plan.physical, "FileScan parquet")):
        assert fence_problems(roots, scan) == [], plan.shown
    for text in (n.text for n in nodes(plan.physical) if n.text.startswith("FileScan parquet")):
        for listed in ("DataFilters", "PartitionFilters", "PushedFilters"):
            assert user_code(scan_list(text, listed)) is None, text


def assert_row_filter_reaches_the_scan(plan: SparkPlan, target: Target) -> None:
    for scan in scans(plan, target):
        assert target.pruned.search(scan_list(scan, target.pruning)), scan


# --------------------------------------------------------------------------- fixtures


def principal(user: str) -> Principal:
    roles, attributes = DEMO_USERS[user]
    return Principal(user, roles, dict(attributes))


@pytest.fixture(scope="module")
def service(
    demo_mesh: Path, spark_server: SparkServer, tmp_path_factory: pytest.TempPathFactory
) -> SqlService:
    """The gateway's service, in process, on a demo mesh copy with the row filters of
    ``POLICIES`` and every query routed to Spark."""
    mesh = copy_mesh(demo_mesh, tmp_path_factory.mktemp("spark-barrier") / "mesh")
    configure(mesh, "engines.spark", remote=spark_server.remote, route="always")
    for domain, line in POLICIES.items():
        with (mesh / domain / "policy.csv").open("a", encoding="utf-8") as policy:
            policy.write(line + "\n")
    return SqlService(MeshState(mesh, load_config(mesh)))


@pytest.fixture(scope="module")
def whole_plans() -> Iterator[None]:
    """Spark shortens a scan's filter lists past 100 characters: print them whole."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(connect.SESSION_CONF, "spark.sql.maxMetadataStringLength", "1000000")
        yield


@pytest.fixture(scope="module")
def explain(service: SqlService, spark: SparkConnect, whole_plans) -> Callable[..., SparkPlan]:
    """``explain(user, sql)``: ``sql`` planned for Spark as the executor plans it, and
    explained by Spark with the governed fragments it reads."""
    executor = service.router.engine
    assert executor is not None and executor.name == "spark"

    def run(user: str, sql: str, spark_sql: str | None = None) -> SparkPlan:
        planned = service.planner.plan(principal(user), sql)
        text = executor.spark_sql(planned)
        fragments = _fragments(planned, text)
        batches = list(
            spark.run(
                f"EXPLAIN EXTENDED {spark_sql or text}",
                str(uuid.uuid4()),
                str(uuid.uuid4()),
                fragments,
            )
        )
        explained = batches[0].column(0)[0].as_py()
        return SparkPlan(
            text,
            fragments,
            plan_tree(_section(explained, "Analyzed Logical Plan", "Optimized Logical Plan")),
            plan_tree(_section(explained, "Optimized Logical Plan", "Physical Plan")),
            plan_tree(_section(explained, "Physical Plan", None)),
        )

    return run


def _fragments(planned, spark_sql: str) -> dict[str, pa.Table]:
    """The temporary views ``spark_sql`` reads, as the executor makes them: each governed
    product (not Parquet) filtered and masked by the gateway's DuckDB."""
    views = {}
    for product in planned.query.products:
        prefix = re.escape(f"meshgate_{product.domain}__{product.name}")
        for name in set(re.findall(rf"`({prefix}(?:_[0-9a-f]+)?)`", spark_sql)):
            select = secure_subquery(
                product.domain,
                product.name,
                planned.query.accesses[product.key],
                product.column_types,
            )
            with planned.catalog.engine.cursor() as cursor:
                views[name] = cursor.sql(select.sql("duckdb")).to_arrow_table()
    return views


# --------------------------------------------------------------------------- Parquet products


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_user_predicates_run_above_the_fence(explain, target: str, shape: str) -> None:
    product = TARGETS[target]
    plan = explain(product.user, product.statement(SHAPES[shape]))
    assert FENCE in plan.shown.lower(), "the statement must be behind the barrier"
    assert any(f"{MARKER}(" in n.text for n in nodes(plan.optimized)), (
        "the probe must reach the plan, or this test proves nothing"
    )
    assert_fenced(plan)
    assert_row_filter_reaches_the_scan(plan, product)


#: (target, conjunct beside the user's predicate, pushed below the fence?, how it reads
#: in the scan's PushedFilters when pushed, or in the plan when not)
CONJUNCTS = [
    ("customers", "customer_id < 10", True, r"LessThan\(customer_id,10\)"),
    ("customers", "customer_id = 4", True, r"EqualTo\(customer_id,4\)"),
    (
        "customers",
        "customer_id BETWEEN 5 AND 50",
        True,
        r"GreaterThanOrEqual\(customer_id,5\), LessThanOrEqual\(customer_id,50\)",
    ),
    ("customers", "region IN ('EU', 'US')", True, r"In\(region, \[EU,US\]\)"),
    ("customers", "region NOT LIKE '%U'", True, r"Not\(StringEndsWith\(region,U\)\)"),
    ("customers", "name LIKE 'A%'", True, r"StringStartsWith\(name,A\)"),
    ("customers", "name IS NOT NULL", True, r"IsNotNull\(name\)"),
    ("shipments", "order_id < 500", True, r"LessThan\(order_id,500\)"),
    ("shipments", "carrier LIKE 'D%'", True, r"StringStartsWith\(carrier,D\)"),
    (
        "shipments",
        "shipped_at >= TIMESTAMP '2024-01-01'",
        True,
        r"GreaterThanOrEqual\(shipped_at,2024-01-01T00:00\)",
    ),
    (
        "shipments",
        "shipped_at >= '2024-01-01'",
        True,
        r"GreaterThanOrEqual\(shipped_at,2024-01-01T00:00\)",
    ),
    ("customers", "name = 5", False, r"cast\(name#\d+ as bigint\) = 5"),  # casts every name
    ("customers", "customer_id + 1 = 5", False, r"\(customer_id#\d+L \+ 1\) = 5"),  # overflows
    ("customers", "abs(customer_id) = 4", False, r"abs\(customer_id#\d+L\) = 4"),
    ("shipments", "abs(order_id) = 4", False, r"abs\(order_id#\d+L\) = 4"),
]


@pytest.mark.parametrize(
    "target, conjunct, pushed, reads", CONJUNCTS, ids=[f"{t}: {c}" for t, c, _, _ in CONJUNCTS]
)
def test_which_conjuncts_reach_the_scan(
    explain, target: str, conjunct: str, pushed: bool, reads: str
) -> None:
    """Beside a user function only the leakproof conjuncts go below the fence, beside the
    row filter, where Spark prunes with them; the others run above it."""
    product = TARGETS[target]
    plan = explain(
        product.user,
        f"SELECT * FROM {product.product} WHERE {conjunct} AND {MARKER}({product.text}) = 99",
    )
    assert_fenced(plan)
    assert_row_filter_reaches_the_scan(plan, product)
    fences = [
        n.text for n in nodes(plan.optimized) if n.text.startswith("Filter") and FENCE in n.text
    ]
    assert len(fences) == 1, fences
    pushed_filters = " ".join(scan_list(s, "PushedFilters") for s in scans(plan, product))
    outer = plan.sql.split("MONOTONICALLY_INCREASING_ID() >= 0")[-1]
    written = parse_one(conjunct, dialect="duckdb").sql("spark")
    if pushed:
        assert re.search(reads, pushed_filters), pushed_filters
        assert written not in outer, "a pushed WHERE conjunct leaves the outer WHERE"
    else:
        data_filters = " ".join(scan_list(s, "DataFilters") for s in scans(plan, product))
        assert not re.search(reads, fences[0]), fences[0]
        assert not re.search(reads, data_filters), data_filters
        assert re.search(reads, "\n".join(n.text for n in nodes(plan.optimized))), plan.shown
        assert written in outer


def test_masked_columns_stay_above_the_fence(explain) -> None:
    """alice sees ssn hashed and email partly masked: a predicate on them reads the mask's
    value, which only governed rows may compute."""
    plan = explain(
        "alice",
        "SELECT count(*) FROM crm.customers WHERE customer_id < 50 AND ssn = 'y' AND email LIKE 'a%'",
    )
    assert FENCE in plan.shown.lower()
    assert_fenced(plan)
    above = [n.text for n in nodes(plan.optimized) if n.text.startswith("Filter")]
    assert any("sha2(" in text and FENCE not in text for text in above), above
    assert_row_filter_reaches_the_scan(plan, TARGETS["customers"])
    pushed = scan_list(scans(plan, TARGETS["customers"])[0], "PushedFilters")
    assert "LessThan(customer_id,50)" in pushed, pushed


def test_leakproof_statements_need_no_fence(explain) -> None:
    """Comparisons, IN lists and LIKE prefixes of bare columns: Spark may push them all."""
    plan = explain(
        "alice",
        "SELECT * FROM crm.customers WHERE customer_id < 10 AND region IN ('EU', 'US') "
        "AND name LIKE 'A%'",
    )
    assert FENCE not in plan.shown.lower()
    pushed = scan_list(scans(plan, TARGETS["customers"])[0], "PushedFilters")
    for source_filter in (
        "EqualTo(region,EU)",
        "LessThan(customer_id,10)",
        "In(region, [EU,US])",
        "StringStartsWith(name,A)",
    ):
        assert source_filter in pushed, pushed


def test_without_the_fence_spark_runs_the_predicate_in_the_scan(explain) -> None:
    """The control: the same Spark SQL without its fence has Spark merge the user's
    predicate into the row filter's Filter and the scan's DataFilters, and the checks
    above see it."""
    target = TARGETS["customers"]
    sql = target.statement(SHAPES["beside_a_leakproof_conjunct"])
    fenced = explain(target.user, sql)
    assert_fenced(fenced)
    unfenced_sql = fenced.sql.replace(" AND MONOTONICALLY_INCREASING_ID() >= 0", "")
    assert FENCE not in unfenced_sql.lower()
    unfenced = explain(target.user, sql, unfenced_sql)
    assert fence_problems(unfenced.optimized, "Relation [") != []
    data_filters = scan_list(scans(unfenced, target)[0], "DataFilters")
    assert f"{MARKER}(" in data_filters and ROW_FILTER.search(data_filters), data_filters


# --------------------------------------------------------------------------- the DuckDB-file product

#: tests/adversarial/test_security_barrier.py's statements, with a function Spark runs
FRAGMENT_SHAPES = barrier_attacks(MARKER, hit="99", miss="0")


def _attributes(text: str) -> set[str]:
    return set(re.findall(r"\b[a-z_]+#\d+L?", text))


def _calls(text: str, function: str) -> Iterator[str]:
    """The argument lists of every call of ``function`` in ``text``."""
    for match in re.finditer(rf"\b{function}\(", text):
        depth, start = 0, match.end() - 1
        for at in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[at], 0)
            if depth == 0:
                yield text[start + 1 : at]
                break


@pytest.mark.parametrize("shape", sorted(FRAGMENT_SHAPES))
def test_predicates_on_orders_read_the_governed_fragment(
    explain, oracle: Oracle, shape: str
) -> None:
    """sales.orders reaches Spark as the rows the gateway filtered and masked for alice,
    a temporary view: every column the user's function reads comes from that view."""
    try:
        plan = explain("alice", FRAGMENT_SHAPES[shape])
    except QueryRefused as exc:  # planned for Spark and refused: nothing ran
        assert "cannot run on Spark" in exc.client_message, exc.client_message
        return
    views = [name for name in plan.fragments if name.startswith(FRAGMENT)]
    assert views, plan.shown
    for name in views:
        regions = plan.fragments[name].column("region").to_pylist()
        assert set(regions) == {"EU"}, "the fragment holds alice's rows only"
        assert len(regions) == oracle.orders_by_region["EU"]
    fragment_columns: set[str] = set()
    for node in nodes(plan.analyzed):
        if node.text.startswith(f"View (`{FRAGMENT}"):
            fragment_columns |= {
                a
                for child in node.children
                if child.text.startswith("LocalRelation")
                for a in _attributes(child.text)
            }
    assert fragment_columns, "the orders are read from the fragment view"
    read = [
        _attributes(arguments)
        for node in nodes(plan.analyzed)
        for arguments in _calls(node.text, MARKER)
    ]
    assert read, "the probe must reach the plan, or this test proves nothing"
    for columns in read:
        assert columns and columns <= fragment_columns, (columns, fragment_columns)
    for roots, scan in ((plan.analyzed, "Relation ["), (plan.optimized, "Relation [")):
        assert fence_problems(roots, scan) == [], plan.shown  # alice's crm.customers
    assert_fenced(plan)
