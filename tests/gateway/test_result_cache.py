"""The governed result cache through ADBC on a real gateway: a repeated statement is a hit
(audit and metrics say so) with the same rows; users with different effective policies
never share an entry, users with the same one do; a data rewrite, a policy change and
volatile functions never let a stale result out; the byte bound evicts least recently
used first; a resource group may opt out."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.clients import adbc_connect, adbc_connections
from support.metrics import metrics_url, scrape
from support.polling import wait_until
from support.servers import configure, private_gateway

from gateway.query.result_cache import is_deterministic
from gateway.security.passwords import hash_password

#: small bounds, so that a few ~110 KB results fill the cache
CACHE = {"enabled": True, "max_bytes": 400_000, "max_entry_bytes": 200_000}
CUSTOMERS_BY_REGION = "SELECT region, count(*) AS n FROM crm.customers GROUP BY region ORDER BY 1"
ORDERS = (
    "SELECT region, count(*) AS n, sum(amount) AS total FROM sales.orders GROUP BY 1 ORDER BY 1"
)


def _add_users(mesh: Path) -> None:
    """carol2 (carol's policy), alice_us (alice's role, another region) and frank (in a
    group that never uses the cache), all with password ``secret``; metrics on."""
    text = (mesh / "mesh.toml").read_text(encoding="utf-8")
    digest = hash_password("secret")
    live_group = '[workload.groups.live]\nusers = ["frank"]\nresult_cache = false\n\n'
    text = text.replace(
        "[workload.groups.interactive]", live_group + "[workload.groups.interactive]"
    )
    text += (
        f'\n[users.carol2]\npassword_hash = "{digest}"\nroles = ["marketing"]\n'
        f'\n[users.alice_us]\npassword_hash = "{digest}"\nroles = ["analyst_eu"]\n'
        'attributes = { region = "US" }\n'
        f'\n[users.frank]\npassword_hash = "{digest}"\nroles = ["marketing"]\n'
    )
    (mesh / "mesh.toml").write_text(text, encoding="utf-8")
    configure(mesh, "cache", **CACHE)
    configure(mesh, "metrics", port=0)


@pytest.fixture(scope="module")
def cached(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory):
    with private_gateway(
        demo_mesh, tmp_path_factory.mktemp("result_cache"), prepare=_add_users
    ) as running:
        yield running


@pytest.fixture
def connect(cached):
    with adbc_connections() as get:

        def open_(user: str):
            return get(cached.uri, user) if user in _DEMO else _extra(cached.uri, user, opened)

        opened: dict[str, object] = {}
        yield open_
        for conn in opened.values():
            conn.close()


_DEMO = {"alice", "bob", "carol", "dave", "erin"}


def _extra(uri: str, user: str, opened: dict[str, object]):
    if user not in opened:
        opened[user] = adbc_connect(uri, user, "secret")
    return opened[user]


def _ends(running) -> dict[str, dict]:
    return {r["query_id"]: r for r in running.audit() if r.get("event") == "query_end"}


def _run(running, conn, user: str, sql: str) -> tuple[pa.Table, str | None]:
    """The rows of ``sql`` and what the audit's end record says of the cache."""
    begun = {
        r["query_id"]
        for r in running.audit()
        if r.get("event") == "query_begin" and r.get("user") == user
    }
    with conn.cursor() as cursor:
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()

    def ended() -> dict | None:
        records = running.audit()
        new = [
            r["query_id"]
            for r in records
            if r.get("event") == "query_begin"
            and r.get("user") == user
            and r["query_id"] not in begun
            and r.get("sql") == sql
        ]
        ends = _ends(running)
        return ends.get(new[-1]) if new else None

    end = wait_until(ended, what="the query's end record")
    assert isinstance(end, dict) and end["outcome"] == "ok"
    return table, end.get("cache")


def _hits(running) -> float:
    return scrape(metrics_url(running.events("gateway_started"))).value(
        "meshgate_result_cache_total", result="hit"
    )


def test_repeated_statement_is_a_hit_with_the_same_rows(cached, connect) -> None:
    hits = _hits(cached)
    sql = "SELECT customer_id, name, region FROM crm.customers WHERE customer_id <= 50 ORDER BY 1"
    first, how_first = _run(cached, connect("bob"), "bob", sql)
    second, how_second = _run(cached, connect("bob"), "bob", sql)
    assert (how_first, how_second) == ("miss", "hit")
    assert second.equals(first) and first.num_rows == 50
    assert _hits(cached) == hits + 1
    url = metrics_url(cached.events("gateway_started"))
    assert 0 < scrape(url).value("meshgate_result_cache_bytes") <= CACHE["max_bytes"]


def test_same_effective_policy_shares_different_policies_never(cached, connect) -> None:
    sql = "SELECT * FROM crm.customers WHERE customer_id <= 100 ORDER BY 1"
    carol, how_carol = _run(cached, connect("carol"), "carol", sql)
    carol2, how_carol2 = _run(cached, connect("carol2"), "carol2", sql)
    assert (how_carol, how_carol2) == ("miss", "hit") and carol2.equals(carol)
    assert "ssn" not in carol.column_names  # marketing may not read it

    # bob reads ssn and unmasked emails: never carol's entry, nor she his
    bob, how_bob = _run(cached, connect("bob"), "bob", sql)
    assert how_bob == "miss" and "ssn" in bob.column_names


def test_attributes_are_part_of_the_key(cached, connect) -> None:
    eu, how_eu = _run(cached, connect("alice"), "alice", ORDERS)
    us, how_us = _run(cached, connect("alice_us"), "alice_us", ORDERS)
    assert (how_eu, how_us) == ("miss", "miss")
    assert set(eu.column("region").to_pylist()) == {"EU"}
    assert set(us.column("region").to_pylist()) == {"US"}
    again, how_again = _run(cached, connect("alice_us"), "alice_us", ORDERS)
    assert how_again == "hit" and again.equals(us)


def test_parameters_are_part_of_the_key(cached, connect) -> None:
    sql = "SELECT customer_id, region FROM crm.customers WHERE customer_id = ?"
    seen = []
    for value in (7, 8, 7):
        with connect("bob").cursor() as cursor:
            cursor.execute(sql, (value,))
            seen.append(cursor.fetch_arrow_table().column("customer_id").to_pylist())
    assert seen == [[7], [8], [7]]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) AS n, random() AS r FROM crm.customers",
        "SELECT count(*) AS n, now() AS t FROM crm.customers",
        "SELECT count(*) AS n, uuid() AS u FROM crm.customers",
        "SELECT count(*) AS n FROM crm.customers USING SAMPLE 10%",
        "SELECT count(*) AS n FROM logistics.shipments WHERE shipped_at > ago(INTERVAL 1 DAY)",
        "SELECT max(age(shipped_at)) AS oldest FROM logistics.shipments",
        'SELECT "current_date" AS d, count(*) AS n FROM crm.customers GROUP BY 1',
    ],
)
def test_volatile_statements_are_never_cached(cached, connect, sql: str) -> None:
    for _ in range(2):
        _, how = _run(cached, connect("bob"), "bob", sql)
        assert how is None


def test_group_without_the_cache_reads_live(cached, connect) -> None:
    _run(cached, connect("carol"), "carol", CUSTOMERS_BY_REGION)
    for _ in range(2):
        _, how = _run(cached, connect("frank"), "frank", CUSTOMERS_BY_REGION)
        assert how is None


def test_an_uncached_product_is_read_live(demo_mesh: Path, tmp_path: Path) -> None:
    """``[cache] uncached_products``: a statement reading one is never cached, even
    joined with others; statements on the other products are."""

    def settings(mesh: Path) -> None:
        configure(mesh, "cache", **CACHE, uncached_products=["crm.customers"])

    joined = (
        "SELECT c.region, count(*) AS n FROM sales.orders o "
        "JOIN crm.customers c USING (customer_id) GROUP BY 1 ORDER BY 1"
    )
    with (
        private_gateway(demo_mesh, tmp_path, prepare=settings) as running,
        adbc_connections() as get,
    ):
        bob = get(running.uri, "bob")
        for sql in (CUSTOMERS_BY_REGION, joined):
            assert [_run(running, bob, "bob", sql)[1] for _ in range(2)] == [None, None]
        assert [_run(running, bob, "bob", ORDERS)[1] for _ in range(2)] == ["miss", "hit"]


def test_byte_bound_evicts_least_recently_used(cached, connect) -> None:
    bob = connect("bob")
    sqls = [
        f"SELECT * FROM crm.customers WHERE customer_id BETWEEN {start} AND {start + 1499}"
        for start in (5001, 7001, 9001, 11001)
    ]  # ~110 KB each: four pass the 400 KB bound
    assert [_run(cached, bob, "bob", sql)[1] for sql in sqls] == ["miss"] * 4
    assert _run(cached, bob, "bob", sqls[-1])[1] == "hit"
    assert _run(cached, bob, "bob", sqls[0])[1] == "miss"  # evicted, the oldest
    everything = "SELECT * FROM crm.customers ORDER BY customer_id DESC"  # over the entry bound
    assert [_run(cached, bob, "bob", everything)[1] for _ in range(2)] == ["miss", "miss"]


def test_rewritten_data_is_a_miss_with_the_new_rows(cached, connect) -> None:
    sql = "SELECT region, count(*) AS n FROM logistics.shipments GROUP BY region ORDER BY 1"
    bob = connect("bob")
    before, _ = _run(cached, bob, "bob", sql)
    assert _run(cached, bob, "bob", sql)[1] == "hit"
    (path,) = (cached.mesh / "logistics" / "data" / "shipments" / "region=EU").glob("*.parquet")
    table = pq.read_table(path)
    kept = table.slice(0, table.num_rows // 2)
    staged = path.with_suffix(".tmp")
    pq.write_table(kept, staged)
    staged.replace(path)
    after, how = _run(cached, bob, "bob", sql)
    assert how == "miss"
    counts = dict(
        zip(after.column("region").to_pylist(), after.column("n").to_pylist(), strict=True)
    )
    assert counts["EU"] == kept.num_rows != table.num_rows
    assert after.num_rows == before.num_rows
    assert _run(cached, bob, "bob", sql)[1] == "hit"


def test_policy_change_is_a_miss(cached, connect) -> None:
    carol, bob = connect("carol"), connect("bob")
    bob_sql = "SELECT customer_id, region FROM crm.customers WHERE customer_id <= 20 ORDER BY 1"
    before, _ = _run(cached, carol, "carol", CUSTOMERS_BY_REGION)
    assert _run(cached, carol, "carol", CUSTOMERS_BY_REGION)[1] == "hit"
    bob_rows, _ = _run(cached, bob, "bob", bob_sql)
    assert _run(cached, bob, "bob", bob_sql)[1] == "hit"

    policy = cached.mesh / "crm" / "policy.csv"
    policy.write_text(
        policy.read_text(encoding="utf-8")
        + "p, marketing, crm.customers, filter, allow, region = 'EU'\n",
        encoding="utf-8",
    )
    after = wait_until(
        lambda: (r := _run(cached, carol, "carol", CUSTOMERS_BY_REGION))[0] != before and r,
        what="the new policy in force",
    )
    rows, how = after  # type: ignore[misc]
    assert how == "miss" and rows.column("region").to_pylist() == ["EU"]
    with duckdb.connect() as oracle:
        expected = oracle.execute(
            "SELECT count(*) FROM read_parquet(?) WHERE region = 'EU'",
            [str(cached.mesh / "crm" / "data" / "customers.parquet")],
        ).fetchone()
    assert expected is not None and rows.column("n").to_pylist() == [expected[0]]
    # bob's statement reads as before, but under a new policy version: computed again
    again, how_bob = _run(cached, bob, "bob", bob_sql)
    assert how_bob == "miss" and again.equals(bob_rows)


def test_a_row_filter_over_the_clock_is_never_cached(cached, connect) -> None:
    """A policy may filter rows by the clock (the last N days): the governed SQL then calls
    a clock macro, so no entry can keep rows that the filter has aged out since."""
    erin = connect("erin")
    sql = "SELECT count(*) AS n FROM logistics.shipments"
    _run(cached, erin, "erin", sql)
    assert _run(cached, erin, "erin", sql)[1] == "hit"  # cacheable without the filter
    policy = cached.mesh / "logistics" / "policy.csv"
    original = policy.read_text(encoding="utf-8")
    policy.write_text(
        original + "p, ops, logistics.shipments, filter, allow, "
        "shipped_at > ago(INTERVAL 36500 DAY)\n",
        encoding="utf-8",
    )
    try:
        wait_until(
            lambda: "AGO(" in _last_governed_sql(cached, "erin"), what="the clock filter in force"
        )
        runs = [_run(cached, erin, "erin", sql) for _ in range(3)]
        assert [how for _, how in runs] == [None, None, None]
        assert runs[0][0].column("n").to_pylist() == [_shipment_rows(cached)]
    finally:
        policy.write_text(original, encoding="utf-8")
        wait_until(  # the next test starts under the policy it expects
            lambda: "AGO(" not in _last_governed_sql(cached, "erin"), what="the policy restored"
        )


def _last_governed_sql(running, user: str) -> str:
    """The governed SQL of ``user``'s last statement, after a fresh one."""
    with adbc_connect(running.uri, user, user) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) AS n FROM logistics.shipments WHERE shipment_id > 0")
        cursor.fetch_arrow_table()
    begins = [
        r for r in running.audit() if r.get("event") == "query_begin" and r.get("user") == user
    ]
    return str(begins[-1]["governed_sql"]) if begins else ""


def _shipment_rows(running) -> int:
    """Rows of the shipments' files (all of them: the filter keeps a century)."""
    with duckdb.connect() as oracle:
        found = oracle.execute(
            "SELECT count(*) FROM read_parquet(?, hive_partitioning = true)",
            [str(running.mesh / "logistics" / "data" / "shipments" / "**" / "*.parquet")],
        ).fetchone()
    assert found is not None
    return int(found[0])


def test_contract_may_keep_its_product_out_of_the_cache(cached, connect) -> None:
    sql = "SELECT carrier, count(*) AS n FROM logistics.shipments GROUP BY 1 ORDER BY 1"
    bob = connect("bob")
    _run(cached, bob, "bob", sql)
    assert _run(cached, bob, "bob", sql)[1] == "hit"
    contract = cached.mesh / "logistics" / "shipments.odcs.yaml"
    original = contract.read_text(encoding="utf-8")
    live = original.replace(
        "servers:", "customProperties:\n  - property: resultCache\n    value: false\nservers:", 1
    )
    try:
        contract.write_text(live, encoding="utf-8")
        wait_until(lambda: _run(cached, bob, "bob", sql)[1] is None, what="the contract reloaded")
        assert _run(cached, bob, "bob", sql)[1] is None
    finally:
        contract.write_text(original, encoding="utf-8")
    wait_until(lambda: _run(cached, bob, "bob", sql)[1] == "hit", what="cached again")


@pytest.mark.parametrize(
    ("sql", "deterministic"),
    [
        ("SELECT a FROM t WHERE b = 1", True),
        ("SELECT year(d) AS y, count(*) AS n FROM t GROUP BY 1", True),
        ("SELECT a FROM t WHERE d < current_date", False),
        ("SELECT a FROM t WHERE u = current_user", False),
        ("SELECT nextval('s') AS n", False),
        ("SELECT a FROM (SELECT a, random() AS r FROM t) WHERE r < 0.5", False),
        ("SELECT a FROM t WHERE v = getvariable('x')", False),
        ("SELECT a FROM t TABLESAMPLE 10%", False),
        # a macro over the clock, and age() measured from today's date
        ("SELECT a FROM t WHERE ts > ago(INTERVAL 1 HOUR)", False),
        ("SELECT age(ts) AS old FROM t", False),
        ("SELECT age(ts, TIMESTAMP '2026-01-01') AS old FROM t", True),
        # the clock's keywords quoted, read by DuckDB as the clock when no column has the name
        ('SELECT "current_date" AS d, count(*) AS n FROM t GROUP BY 1', False),
        ('SELECT a FROM t WHERE ts > "current_timestamp" - INTERVAL 30 DAY', False),
        ('SELECT a FROM t WHERE u = "current_user"', False),
        ("SELECT t.current_date_seen AS d FROM t", True),
    ],
)
def test_volatility_is_decided_on_the_tree(sql: str, deterministic: bool) -> None:
    assert is_deterministic(sql) is deterministic


def test_an_entry_weighs_its_governed_sql_too() -> None:
    """Empty results of large unique statements are bounded like large results: the key
    (the governed SQL) counts towards the byte bound."""
    from gateway.query.result_cache import ResultCache, _Entry

    cache = ResultCache(max_bytes=1_000_000, max_entry_bytes=300_000)
    schema = pa.schema([("n", pa.int64())])

    def empty() -> _Entry:
        return _Entry(schema, [], 0, (), [])

    for n in range(20):
        assert cache.put((f"SELECT '{'x' * 100_000}' AS pad, {n} AS n WHERE false", "()"), empty())
    assert len(cache) <= 10 and cache.bytes <= 1_000_000
    assert not cache.put(("x" * 300_001, "()"), empty())  # over the entry bound by its key alone


def test_a_long_statement_is_judged_each_time_not_kept() -> None:
    from gateway.query import result_cache

    pad = "x" * (result_cache._KEPT_SQL_BYTES + 1)
    is_deterministic.cache_clear()
    before = is_deterministic.cache_info().currsize
    assert is_deterministic(f"SELECT '{pad}' AS p")
    assert not is_deterministic(f"SELECT '{pad}' AS p, random() AS r")
    assert is_deterministic.cache_info().currsize == before
    assert is_deterministic("SELECT 1 AS kept_verdict_probe")
    assert is_deterministic.cache_info().currsize == before + 1


def test_an_empty_wide_result_weighs_its_schema() -> None:
    from gateway.query.result_cache import ResultCache, _Entry

    wide = pa.schema([(f"column_{n}", pa.int64()) for n in range(2_000)])
    cache = ResultCache(max_bytes=1_000_000, max_entry_bytes=1_000_000)
    for n in range(50):
        assert cache.put((f"SELECT {n}", "()"), _Entry(wide, [], 0, (), []))
    assert len(cache) * wide.serialize().size <= 1_000_000 and cache.bytes <= 1_000_000


def test_a_same_size_rewrite_with_the_old_mtime_is_a_new_version(tmp_path: Path) -> None:
    """``cp -p``, ``rsync --inplace -t`` or ``touch -r`` over a file: same inode, same size,
    same mtime, other bytes. Only the change time tells, and the version must change (the
    one fingerprint of accelerated copies, cached results and bound plans)."""
    from connectors.file_versions import files_version

    data = tmp_path / "part.parquet"
    data.write_bytes(b"A" * 4096)
    version = files_version([tmp_path])
    before = os.stat(data)
    wait_until(  # the change time moves on (its clock ticks in jiffies on some kernels)
        lambda: time.time_ns() > before.st_ctime_ns + 10_000_000, what="the clock to move"
    )
    with data.open("r+b") as rewritten:
        rewritten.write(b"B" * 4096)
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(data)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert files_version([tmp_path]) != version
