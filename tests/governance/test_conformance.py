"""Conformance of every demo rule, for every demo user, through every client path.

Each test id is ``<user>-<product>-<rule>-<path>``. The expected result is always the
hand-written DuckDB oracle (``support.oracle.Oracle``): the demo files read directly, with the
filters and masks of the demo rules written out in SQL. Paths:

- ``adbc_execute``: ADBC DB-API ``cursor.execute`` (prepares, then executes);
- ``adbc_prepared_params``: one ADBC prepared statement, parameters bound and executed
  twice with different values (authorization happens at every execution);
- ``flight_info_do_get``: plain ``pyarrow.flight`` raw SQL command, GetFlightInfo + DoGet;
- ``flight_ticket``: plain ``pyarrow.flight`` raw SQL sent as the DoGet ticket;
- ``explain`` / ``explain_policy``: ``EXPLAIN <q>`` and ``EXPLAIN POLICY <q>``;
- ``metadata``: ADBC GetObjects / GetTableSchema and Flight SQL GetTables(include_schema).

A product the user may not read must fail on every path with exactly the error of a
product that does not exist.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from google.protobuf import any_pb2
from support.clients import adbc_connect, flight_client, normalized_error
from support.oracle import DENIED_TEMPLATE, PRIMARY_KEY, PRODUCTS, USERS
from support.policy_files import rule_origin
from support.tables import assert_tables_equal

from gateway.flightsql import flightsql_pb2 as pb

# --------------------------------------------------------------------------- the demo rules

# Each rule as it is written in the demo mesh's policy files (scope, line text); the line
# number is looked up in the files, so the explanations are checked against the real file.
G_ADMIN_READ = ("global", "p, admin, *, read, allow")
G_PII_HASH = ("global", "p, *, tag:pii, mask, allow, hash")
S_ANALYST_READ = ("sales", "p, analyst_eu, sales.orders, read, allow")
S_ANALYST_FILTER = ("sales", "p, analyst_eu, sales.orders, filter, allow, region = {user.region}")
S_OPS_READ = ("sales", "p, ops, sales.orders, read, allow")
S_OPS_ROUND = ("sales", "p, ops, sales.orders.amount, mask, allow, round:100")
C_ANALYST_READ = ("crm", "p, analyst_eu, crm.customers, read, allow")
C_ANALYST_EMAIL = ("crm", "p, analyst_eu, crm.customers.email, mask, allow, partial_email")
C_MARKETING_READ = ("crm", "p, marketing, crm.customers, read, allow")
C_MARKETING_SSN = ("crm", "p, marketing, crm.customers.ssn, read, deny")
L_OPS_READ = ("logistics", "p, ops, logistics.shipments, read, allow")


@dataclass(frozen=True)
class Case:
    """What one demo user may see of one product, and by which rules."""

    user: str
    product: str
    rule: str
    allowed: bool
    read_by: tuple[tuple[str, str], ...] = ()
    filtered_by: tuple[tuple[str, str], ...] = ()
    masks: dict[str, tuple[str, tuple[str, str]]] = field(
        default_factory=dict
    )  # column -> (spec, rule)
    invisible: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.user}-{self.product}-{self.rule}"

    @property
    def domain(self) -> str:
        return self.product.split(".")[0]

    @property
    def name(self) -> str:
        return self.product.split(".")[1]

    @property
    def unknown(self) -> str:
        """A product of the same domain that does not exist."""
        return f"{self.domain}.no_such_{self.name}"

    @property
    def hashes(self) -> bool:
        return any(spec == "hash" for spec, _ in self.masks.values())


def _denied(user: str, product: str, why: str) -> Case:
    return Case(user, product, why, allowed=False)


CASES = [
    Case(
        "alice",
        "sales.orders",
        "row_filter_region_EU",
        True,
        read_by=(S_ANALYST_READ,),
        filtered_by=(S_ANALYST_FILTER,),
    ),
    Case(
        "alice",
        "crm.customers",
        "email_partial_email+ssn_hash_floor",
        True,
        read_by=(C_ANALYST_READ,),
        masks={"email": ("partial_email", C_ANALYST_EMAIL), "ssn": ("hash", G_PII_HASH)},
    ),
    _denied("alice", "logistics.shipments", "no_grant"),
    Case("bob", "sales.orders", "admin_reads_all", True, read_by=(G_ADMIN_READ,)),
    Case("bob", "crm.customers", "admin_pii_reader_unmasked", True, read_by=(G_ADMIN_READ,)),
    Case("bob", "logistics.shipments", "admin_reads_all", True, read_by=(G_ADMIN_READ,)),
    _denied("carol", "sales.orders", "no_grant"),
    Case(
        "carol",
        "crm.customers",
        "ssn_invisible+email_hash",
        True,
        read_by=(C_MARKETING_READ,),
        masks={"email": ("hash", G_PII_HASH)},
        invisible=("ssn",),
    ),
    _denied("carol", "logistics.shipments", "no_grant"),
    Case(
        "erin",
        "sales.orders",
        "amount_round_100",
        True,
        read_by=(S_OPS_READ,),
        masks={"amount": ("round:100", S_OPS_ROUND)},
    ),
    _denied("erin", "crm.customers", "no_grant"),
    Case("erin", "logistics.shipments", "ops_reads_shipments", True, read_by=(L_OPS_READ,)),
    _denied("dave", "sales.orders", "no_roles"),
    _denied("dave", "crm.customers", "no_roles"),
    _denied("dave", "logistics.shipments", "no_roles"),
]


def test_cases_cover_every_user_and_product_and_agree_with_the_oracle(oracle):
    assert {(c.user, c.product) for c in CASES} == {(u, p) for u in USERS for p in PRODUCTS}
    for case in CASES:
        assert case.allowed == oracle.may_read(case.user, case.product), case.id


# --------------------------------------------------------------------------- connections


@pytest.fixture(scope="module")
def adbc(gateway):
    """user -> one ADBC connection (opened lazily, closed at the end of the module)."""
    connections: dict = {}

    def get(user: str):
        if user not in connections:
            connections[user] = adbc_connect(gateway.uri, user)
        return connections[user]

    yield get
    for connection in connections.values():
        with contextlib.suppress(Exception):
            connection.close()


@pytest.fixture(scope="module")
def flights(gateway):
    """user -> (pyarrow.flight client, call options)."""
    clients: dict = {}

    def get(user: str):
        if user not in clients:
            clients[user] = flight_client(gateway.uri, user)
        return clients[user]

    yield get
    for client, _ in clients.values():
        client.close()


def adbc_query(connection, sql: str, params=None) -> pa.Table:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetch_arrow_table()
    finally:
        with contextlib.suppress(Exception):
            cursor.close()


def flight_info_query(client, options, sql: str) -> pa.Table:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode("utf-8")), options)
    assert len(info.endpoints) == 1
    reader = client.do_get(info.endpoints[0].ticket, options)
    table = reader.read_all()
    assert info.schema.equals(table.schema), (
        f"FlightInfo schema {info.schema} != stream schema {table.schema}"
    )
    return table


def flight_ticket_query(client, options, sql: str) -> pa.Table:
    return client.do_get(flight.Ticket(sql.encode("utf-8")), options).read_all()


def pack(message) -> bytes:
    envelope = any_pb2.Any()
    envelope.Pack(message)
    return envelope.SerializeToString()


def flight_command(client, options, command) -> pa.Table:
    """A Flight SQL metadata command: GetFlightInfo, then DoGet of its ticket."""
    info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(command)), options)
    return client.do_get(info.endpoints[0].ticket, options).read_all()


def flight_get_tables(client, options, **fields) -> pa.Table:
    return flight_command(client, options, pb.CommandGetTables(include_schema=True, **fields))


def assert_denied_like_unknown(run, case: Case, sql_template: str) -> None:
    """``run(sql)`` fails for the product exactly as for a product that does not exist."""
    with pytest.raises(Exception) as denied:
        run(sql_template.format(p=case.product))
    with pytest.raises(Exception) as unknown:
        run(sql_template.format(p=case.unknown))
    assert DENIED_TEMPLATE.format(key=case.product) in str(denied.value)
    assert type(denied.value) is type(unknown.value)
    assert normalized_error(denied.value, case.product) == normalized_error(
        unknown.value, case.unknown
    )


def full_scan(case: Case) -> str:
    return f"SELECT * FROM {{p}} ORDER BY {PRIMARY_KEY[case.product]}"


def by_region(case: Case) -> str:
    return f"SELECT * FROM {{p}} WHERE region = ? ORDER BY {PRIMARY_KEY[case.product]}"


# --------------------------------------------------------------------------- the paths


def path_adbc_execute(case: Case, oracle, adbc, flights) -> None:
    sql = full_scan(case)
    connection = adbc(case.user)
    if not case.allowed:
        assert_denied_like_unknown(lambda text: adbc_query(connection, text), case, sql)
        return
    text = sql.format(p=case.product)
    assert_tables_equal(adbc_query(connection, text), oracle.run(case.user, text), case.id)


def path_adbc_prepared_params(case: Case, oracle, adbc, flights) -> None:
    sql = by_region(case)
    connection = adbc(case.user)
    if not case.allowed:

        def prepare(text: str) -> None:
            cursor = connection.cursor()
            try:
                cursor.adbc_prepare(text)
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()

        assert_denied_like_unknown(prepare, case, sql)
        assert_denied_like_unknown(lambda text: adbc_query(connection, text, ("EU",)), case, sql)
        return
    text = sql.format(p=case.product)
    cursor = connection.cursor()
    try:
        cursor.adbc_prepare(text)
        for region in ("EU", "US", "EU"):  # one prepared statement, executed three times
            cursor.execute(text, (region,))
            actual = cursor.fetch_arrow_table()
            expected = oracle.run(case.user, text, [region])
            assert_tables_equal(actual, expected, f"{case.id} region={region}")
    finally:
        cursor.close()


def flight_schema(client, options, sql: str) -> pa.Schema:
    return client.get_schema(
        flight.FlightDescriptor.for_command(sql.encode("utf-8")), options
    ).schema


def path_flight_info_do_get(case: Case, oracle, adbc, flights) -> None:
    client, options = flights(case.user)
    sql = full_scan(case)
    if not case.allowed:
        assert_denied_like_unknown(lambda text: flight_info_query(client, options, text), case, sql)
        assert_denied_like_unknown(lambda text: flight_schema(client, options, text), case, sql)
        return
    text = sql.format(p=case.product)
    expected = oracle.run(case.user, text)
    assert_tables_equal(flight_info_query(client, options, text), expected, case.id)
    schema = flight_schema(client, options, text)  # GetSchema answers like GetFlightInfo
    assert schema.names == expected.column_names and schema.types == expected.schema.types


def path_flight_ticket(case: Case, oracle, adbc, flights) -> None:
    client, options = flights(case.user)
    sql = full_scan(case)
    if not case.allowed:
        assert_denied_like_unknown(
            lambda text: flight_ticket_query(client, options, text), case, sql
        )
        return
    text = sql.format(p=case.product)
    assert_tables_equal(
        flight_ticket_query(client, options, text), oracle.run(case.user, text), case.id
    )


def path_explain(case: Case, oracle, adbc, flights) -> None:
    connection = adbc(case.user)
    sql = "EXPLAIN SELECT * FROM {p} WHERE region <> 'nowhere'"
    if not case.allowed:
        assert_denied_like_unknown(lambda text: adbc_query(connection, text), case, sql)
        return
    rows = adbc_query(connection, sql.format(p=case.product)).to_pylist()
    values = {row["explain_key"]: row["explain_value"] for row in rows}
    assert set(values) == {"governed_sql", "physical_plan", "engine"}
    assert values["physical_plan"].strip()
    assert values["engine"] == "duckdb (the gateway's own)"
    for value in values.values():
        assert oracle.hash_key not in value, "EXPLAIN shows the hash key"
    governed = values["governed_sql"]
    assert ("<hash key>" in governed) == case.hashes, governed
    # The row filter, with alice's attribute bound as a literal, sits in the governed SQL.
    assert ("region = 'EU'" in governed) == bool(case.filtered_by), governed
    mask_functions = {"hash": "sha256", "partial_email": "split_part", "round:100": "round"}
    for spec, _ in case.masks.values():
        assert mask_functions[spec] in governed, (spec, governed)
    for column in case.invisible:
        assert column not in governed.lower(), f"the governed SQL names invisible column {column}"


def path_explain_policy(case: Case, oracle, adbc, flights) -> None:
    connection = adbc(case.user)
    sql = "EXPLAIN POLICY SELECT * FROM {p}"
    if not case.allowed:
        assert_denied_like_unknown(lambda text: adbc_query(connection, text), case, sql)
        return
    mesh = oracle.mesh
    table = adbc_query(connection, sql.format(p=case.product))
    rows = table.to_pylist()
    assert oracle.hash_key not in str(rows), "EXPLAIN POLICY shows the hash key"
    assert rows[0]["product"] == "(query)" and rows[0]["decision"] == "rewritten SQL"
    product_rows = {
        (r["decision"], r["rule"])
        for r in rows[1:]
        if r["product"] == case.product and r["column"] is None
    }
    expected_product_rows = {
        ("read allowed", f"read allowed by {rule_origin(mesh, *rule)}") for rule in case.read_by
    }
    expected_product_rows |= {
        (
            "rows filtered",
            f"rows filtered by {rule_origin(mesh, *rule)}: {rule[1].split(', ', 5)[5]}",
        )
        for rule in case.filtered_by
    }
    assert product_rows == expected_product_rows
    column_rows = {
        r["column"]: (r["decision"], r["rule"]) for r in rows[1:] if r["column"] is not None
    }
    visible = oracle.schema(case.user, case.product).names
    for column in visible:
        if column in case.masks:
            spec, rule = case.masks[column]
            expected = (f"masked ({spec})", f"masked with {spec} by {rule_origin(mesh, *rule)}")
        else:
            expected = ("visible", None)
        assert column_rows.get(column) == expected, f"{case.id} column {column}"


def path_metadata(case: Case, oracle, adbc, flights) -> None:
    connection = adbc(case.user)
    client, options = flights(case.user)
    objects = connection.adbc_get_objects(depth="all", catalog_filter="mesh").read_all().to_pylist()
    listed = {
        f"{schema['db_schema_name']}.{table['table_name']}": [
            c["column_name"] for c in table["table_columns"]
        ]
        for catalog in objects
        for schema in catalog["catalog_db_schemas"] or []
        for table in schema["db_schema_tables"] or []
    }
    tables = flight_get_tables(
        client, options, db_schema_filter_pattern=case.domain, table_name_filter_pattern=case.name
    ).to_pylist()
    keys = flight_command(
        client, options, pb.CommandGetPrimaryKeys(db_schema=case.domain, table=case.name)
    ).to_pylist()
    if not case.allowed:
        assert case.product not in listed
        assert tables == []
        assert keys == []
        with pytest.raises(Exception) as denied:
            connection.adbc_get_table_schema(case.name, db_schema_filter=case.domain)
        with pytest.raises(Exception) as unknown:
            connection.adbc_get_table_schema(f"no_such_{case.name}", db_schema_filter=case.domain)
        assert type(denied.value) is type(unknown.value)
        assert str(denied.value) == str(unknown.value)
        return
    expected = oracle.schema(case.user, case.product)
    assert listed[case.product] == expected.names
    for column in case.invisible:
        assert column not in listed[case.product]
    schema = connection.adbc_get_table_schema(case.name, db_schema_filter=case.domain)
    assert schema.names == expected.names
    assert schema.types == expected.types
    assert [k["column_name"] for k in keys] == [PRIMARY_KEY[case.product]]
    assert len(tables) == 1
    served = pa.ipc.read_schema(pa.py_buffer(tables[0]["table_schema"]))
    assert served.names == expected.names
    assert served.types == expected.types


PATHS = {
    "adbc_execute": path_adbc_execute,
    "adbc_prepared_params": path_adbc_prepared_params,
    "flight_info_do_get": path_flight_info_do_get,
    "flight_ticket": path_flight_ticket,
    "explain": path_explain,
    "explain_policy": path_explain_policy,
    "metadata": path_metadata,
}


@pytest.mark.parametrize(
    ("case", "path"),
    [pytest.param(case, path, id=f"{case.id}-{path}") for case in CASES for path in PATHS],
)
def test_rule_through_path(case: Case, path: str, oracle, adbc, flights):
    PATHS[path](case, oracle, adbc, flights)


# --------------------------------------------------------------------------- catalog per user

VISIBLE = {
    "alice": {"sales.orders", "crm.customers"},
    "bob": set(PRODUCTS),
    "carol": {"crm.customers"},
    "erin": {"sales.orders", "logistics.shipments"},
    "dave": set(),
}


@pytest.mark.parametrize("user", USERS)
def test_catalog_lists_only_readable_products_and_domains(user, adbc, flights, oracle):
    assert VISIBLE[user] == {p for p in PRODUCTS if oracle.may_read(user, p)}
    objects = adbc(user).adbc_get_objects(depth="all").read_all().to_pylist()
    listed = {
        f"{schema['db_schema_name']}.{table['table_name']}"
        for catalog in objects
        for schema in catalog["catalog_db_schemas"] or []
        for table in schema["db_schema_tables"] or []
    }
    domains = {
        schema["db_schema_name"]
        for catalog in objects
        for schema in catalog["catalog_db_schemas"] or []
    }
    assert listed == VISIBLE[user]
    assert domains == {p.split(".")[0] for p in VISIBLE[user]}
    client, options = flights(user)
    tables = flight_get_tables(client, options).to_pylist()
    assert {f"{t['db_schema_name']}.{t['table_name']}" for t in tables} == VISIBLE[user]
    schemas = flight_command(client, options, pb.CommandGetDbSchemas()).to_pylist()
    assert {s["db_schema_name"] for s in schemas} == {p.split(".")[0] for p in VISIBLE[user]}


# --------------------------------------------------------------------------- semantics under masks


def compare(user: str, sql: str, adbc, oracle, params=None) -> pa.Table:
    actual = adbc_query(adbc(user), sql, params)
    assert_tables_equal(actual, oracle.run(user, sql, params), f"{user}: {sql}")
    return actual


@pytest.mark.parametrize(
    ("user", "column"),
    [("alice", "ssn"), ("carol", "email")],
)
def test_joins_on_a_hashed_key_still_match(user, column, adbc, oracle):
    sql = (
        f"SELECT count(*) AS matches, count(DISTINCT a.{column}) AS keys "
        f"FROM crm.customers a JOIN crm.customers b ON a.{column} = b.{column}"
    )
    result = compare(user, sql, adbc, oracle).to_pylist()[0]
    # A keyed hash is injective in practice: the masked join matches exactly the raw join.
    raw = oracle.raw(sql).to_pylist()[0]
    assert result == raw
    assert result["matches"] >= 20_000
    # The same hashed value joins back to the raw row through the oracle's key.
    sample = compare(
        user,
        f"SELECT customer_id, {column} FROM crm.customers ORDER BY customer_id LIMIT 3",
        adbc,
        oracle,
    ).to_pylist()
    for row in sample:
        assert len(row[column]) == 64 and set(row[column]) <= set("0123456789abcdef")


def test_alice_join_orders_to_customers_on_filtered_and_hashed_data(adbc, oracle):
    sql = (
        "SELECT c.ssn, count(*) AS orders, sum(o.amount) AS total "
        "FROM sales.orders o JOIN crm.customers c USING (customer_id) "
        "GROUP BY c.ssn ORDER BY total DESC, c.ssn LIMIT 20"
    )
    compare("alice", sql, adbc, oracle)
    sql = (
        "SELECT c.region, count(*) AS n FROM sales.orders o JOIN crm.customers c USING (customer_id) "
        "GROUP BY c.region ORDER BY 1"
    )
    assert compare("alice", sql, adbc, oracle).to_pylist() == [
        {
            "region": "EU",
            "n": oracle.raw("SELECT count(*) FROM sales.orders WHERE region = 'EU'")
            .column(0)[0]
            .as_py(),
        }
    ]


def test_predicate_on_a_masked_column_sees_the_masked_value(adbc, oracle):
    # erin: amount is rounded to hundreds *before* her WHERE runs.
    sql = "SELECT count(*) AS n FROM sales.orders WHERE amount = 300"
    rounded_count = compare("erin", sql, adbc, oracle).column("n")[0].as_py()
    raw_count = oracle.raw(sql).column(0)[0].as_py()
    by_hand = (
        oracle.raw(
            "SELECT count(*) FROM sales.orders WHERE CAST(round(amount / 100) * 100 AS DECIMAL(12,2)) = 300"
        )
        .column(0)[0]
        .as_py()
    )
    assert rounded_count == by_hand
    assert rounded_count > raw_count, (rounded_count, raw_count)
    compare(
        "erin", "SELECT count(*) AS odd FROM sales.orders WHERE amount % 100 <> 0", adbc, oracle
    )


def test_predicates_cannot_probe_raw_values_behind_a_mask(adbc, oracle):
    raw = oracle.raw("SELECT email, ssn FROM crm.customers WHERE customer_id = 1").to_pylist()[0]
    # alice: ssn is a keyed hash; the real ssn matches nothing, its hash matches one row.
    assert (
        adbc_query(
            adbc("alice"), "SELECT count(*) AS n FROM crm.customers WHERE ssn = ?", (raw["ssn"],)
        )
        .column("n")[0]
        .as_py()
        == 0
    )
    expected_hash = (
        oracle.run("alice", "SELECT ssn FROM crm.customers WHERE customer_id = 1")
        .column(0)[0]
        .as_py()
    )
    assert adbc_query(
        adbc("alice"), "SELECT customer_id FROM crm.customers WHERE ssn = ?", (expected_hash,)
    ).to_pylist() == [{"customer_id": 1}]
    assert (
        adbc_query(
            adbc("alice"),
            "SELECT count(*) AS n FROM crm.customers WHERE email = ?",
            (raw["email"],),
        )
        .column("n")[0]
        .as_py()
        == 0
    )
    local_part = raw["email"].split("@")[0]
    assert (
        adbc_query(
            adbc("alice"),
            f"SELECT count(*) AS n FROM crm.customers WHERE email LIKE '%{local_part[1:]}%'",
        )
        .column("n")[0]
        .as_py()
        == 0
    )
    # carol: email is a keyed hash.
    for sql in (
        "SELECT count(*) AS n FROM crm.customers WHERE email = 'x' OR email LIKE '%@example.com'",
        f"SELECT count(*) AS n FROM crm.customers WHERE email = '{raw['email']}'",
    ):
        assert adbc_query(adbc("carol"), sql).column("n")[0].as_py() == 0


def test_aggregates_run_over_filtered_and_masked_rows(adbc, oracle):
    sql = "SELECT count(*) AS n, sum(amount) AS total, min(amount) AS lo, max(amount) AS hi FROM sales.orders"
    alice = compare("alice", sql, adbc, oracle).to_pylist()[0]
    eu = oracle.raw(sql + " WHERE region = 'EU'").to_pylist()[0]
    assert alice == eu
    bob = compare("bob", sql, adbc, oracle).to_pylist()[0]
    assert bob["total"] > alice["total"]
    erin = compare("erin", sql, adbc, oracle).to_pylist()[0]
    assert erin["n"] == bob["n"] and erin["total"] != bob["total"]
    compare(
        "alice",
        "SELECT region, count(*) AS n, avg(amount) AS a FROM sales.orders GROUP BY ALL ORDER BY 1",
        adbc,
        oracle,
    )
    compare(
        "alice",
        "SELECT order_id, sum(amount) OVER (PARTITION BY region) AS s FROM sales.orders "
        "ORDER BY order_id LIMIT 50",
        adbc,
        oracle,
    )
    compare(
        "alice",
        "WITH o AS (SELECT * FROM sales.orders) SELECT DISTINCT region FROM o ORDER BY 1",
        adbc,
        oracle,
    )
    compare(
        "alice",
        "SELECT region FROM sales.orders UNION SELECT region FROM sales.orders ORDER BY 1",
        adbc,
        oracle,
    )
    compare(
        "erin",
        "SELECT region, sum(amount) AS s FROM sales.orders GROUP BY region ORDER BY 1",
        adbc,
        oracle,
    )
    # Grouping by a masked column groups the masked values (many raw values per group).
    compare(
        "alice",
        "SELECT email, count(*) AS n FROM crm.customers GROUP BY email ORDER BY n DESC, email LIMIT 10",
        adbc,
        oracle,
    )
    compare(
        "erin",
        "SELECT amount, count(*) AS n FROM sales.orders GROUP BY amount ORDER BY n DESC, amount LIMIT 10",
        adbc,
        oracle,
    )


def test_prepared_statement_is_authorized_at_every_execution(adbc, oracle):
    """alice: one prepared statement, executed with US (her filter leaves 0 rows), EU, APAC."""
    sql = "SELECT count(*) AS n FROM sales.orders WHERE region = ?"
    eu_count = oracle.raw(sql, ["EU"]).column(0)[0].as_py()
    cursor = adbc("alice").cursor()
    try:
        cursor.adbc_prepare(sql)
        for region, expected in (("US", 0), ("EU", eu_count), ("APAC", 0), ("EU", eu_count)):
            cursor.execute(sql, (region,))
            assert cursor.fetch_arrow_table().column("n")[0].as_py() == expected, region
    finally:
        cursor.close()


INVISIBLE_SHAPES = [
    "SELECT {c} FROM crm.customers LIMIT 1",
    "SELECT c.{c} FROM crm.customers c LIMIT 1",
    "SELECT customers.{c} FROM crm.customers LIMIT 1",
    "SELECT count(*) FROM crm.customers WHERE {c} IS NOT NULL",
    "SELECT customer_id FROM crm.customers ORDER BY {c} LIMIT 1",
    "SELECT region, count(DISTINCT {c}) FROM crm.customers GROUP BY region",
    "SELECT * EXCLUDE ({c}) FROM crm.customers LIMIT 1",
    "SELECT * REPLACE ({c} AS name) FROM crm.customers LIMIT 1",
    "SELECT a.customer_id FROM crm.customers a JOIN crm.customers b USING ({c}) LIMIT 1",
]


@pytest.mark.parametrize("shape", INVISIBLE_SHAPES)
def test_carol_naming_ssn_errors_exactly_like_a_nonexistent_column(shape, adbc, flights):
    client, options = flights("carol")
    runners = {
        "adbc": lambda sql: adbc_query(adbc("carol"), sql),
        "adbc_prepared": lambda sql: adbc_query(adbc("carol"), sql + " OFFSET ?", (0,)),
        "flight": lambda sql: flight_info_query(client, options, sql),
        "flight_ticket": lambda sql: flight_ticket_query(client, options, sql),
        "explain": lambda sql: adbc_query(adbc("carol"), "EXPLAIN " + sql),
    }
    for name, run in runners.items():
        with pytest.raises(Exception) as hidden:
            run(shape.format(c="ssn"))
        with pytest.raises(Exception) as missing:
            run(shape.format(c="no_such_col"))
        assert type(hidden.value) is type(missing.value), name
        assert normalized_error(hidden.value, "ssn") == normalized_error(
            missing.value, "no_such_col"
        ), name
    # EXPLAIN POLICY does not bind the statement: both answer, and identically.
    hidden = adbc_query(adbc("carol"), "EXPLAIN POLICY " + shape.format(c="ssn")).to_pylist()
    missing = adbc_query(
        adbc("carol"), "EXPLAIN POLICY " + shape.format(c="no_such_col")
    ).to_pylist()
    assert str(hidden).replace("ssn", "X") == str(missing).replace("no_such_col", "X")


def test_carol_select_star_and_struct_forms_never_carry_ssn(adbc, oracle):
    for sql in (
        "SELECT * FROM crm.customers LIMIT 3",
        "SELECT c.* FROM crm.customers c LIMIT 3",
        "SELECT COLUMNS(*) FROM crm.customers LIMIT 3",
        "SELECT c FROM crm.customers c LIMIT 3",
        "SELECT to_json(c) AS j FROM crm.customers c LIMIT 3",
    ):
        table = adbc_query(adbc("carol"), sql)
        assert (
            "ssn" not in str(table.schema).lower() and "ssn" not in str(table.to_pylist()).lower()
        ), sql
    raw_ssns = oracle.raw("SELECT ssn FROM crm.customers LIMIT 3").column(0).to_pylist()
    text = str(adbc_query(adbc("carol"), "SELECT c FROM crm.customers c LIMIT 3").to_pylist())
    assert not any(s in text for s in raw_ssns)


def test_explain_policy_does_not_reveal_carols_invisible_column(adbc):
    """ssn is invisible to carol (absent from SELECT * and metadata, naming it errors like
    a nonexistent column): the policy explanation must not list it either."""
    rows = adbc_query(adbc("carol"), "EXPLAIN POLICY SELECT * FROM crm.customers").to_pylist()
    mentions = [r for r in rows if "ssn" in str(r).lower()]
    assert mentions == [], f"EXPLAIN POLICY reveals the invisible column: {mentions}"


@pytest.mark.parametrize("column", ["region", "order_id"])
def test_stats_do_not_reveal_rows_outside_alices_row_filter(column, adbc, oracle):
    """``stats(x)`` reports the statistics DuckDB keeps for the base table: through the
    row filter it would show alice the min/max of orders she may not read (regions
    APAC..US, order ids up to the table's last). So it is refused at planning, with the
    message any function outside the allow-list gets."""
    eu = oracle.raw(
        f"SELECT min({column})::VARCHAR AS lo, max({column})::VARCHAR AS hi FROM sales.orders WHERE region = 'EU'"
    ).to_pylist()[0]
    everything = oracle.raw(
        f"SELECT min({column})::VARCHAR AS lo, max({column})::VARCHAR AS hi FROM sales.orders"
    ).to_pylist()[0]
    outside = {v for v in everything.values() if v not in eu.values()}
    assert outside, "the premise: the full table's bounds differ from the EU rows' bounds"
    with pytest.raises(adbc_driver_manager.Error) as refused:
        adbc_query(adbc("alice"), f"SELECT CAST(stats({column}) AS VARCHAR) AS s FROM sales.orders")
    text = str(refused.value)
    assert "function stats() is not allowed" in text, text
    named = [v for v in outside if v in text]
    assert not named, f"the refusal names values outside alice's filter: {text}"


REFERENCE_SPELLINGS = [
    "SELECT count(*) AS n, sum(amount) AS s FROM sales.orders",
    "SELECT count(*) AS n, sum(amount) AS s FROM mesh.sales.orders",
    'SELECT count(*) AS n, sum(amount) AS s FROM "sales"."orders"',
    'SELECT count(*) AS n, sum(amount) AS s FROM "mesh"."sales"."orders"',
    "SELECT count(*) AS n, sum(amount) AS s FROM SALES.ORDERS",
    "SELECT count(*) AS n, sum(sales.orders.amount) AS s FROM sales.orders",
    "SELECT count(*) AS n, sum(mesh.sales.orders.amount) AS s FROM mesh.sales.orders",
    "SELECT count(*) AS n, sum(o.amount) AS s FROM sales.orders AS o",
    "SELECT count(*) AS n, sum(amount) AS s FROM (SELECT * FROM sales.orders) AS orders",
    "SELECT count(*) AS n, sum(amount) AS s FROM (FROM sales.orders)",
    "WITH orders AS (SELECT * FROM sales.orders) SELECT count(*) AS n, sum(amount) AS s FROM orders",
    "SELECT count(*) AS n, sum(amount) AS s FROM sales.orders WHERE order_id IN (SELECT order_id FROM sales.orders)",
    "SELECT count(*) AS n, sum(x.amount) AS s FROM sales.orders x, LATERAL (SELECT 1) l",
]


@pytest.mark.parametrize(
    "sql", REFERENCE_SPELLINGS, ids=[f"ref{i}" for i in range(len(REFERENCE_SPELLINGS))]
)
@pytest.mark.parametrize("user", ["alice", "erin"])
def test_every_spelling_of_a_product_reference_is_governed(user, sql, adbc, oracle):
    """Every spelling is answered, with exactly the governed answer."""
    expected = oracle.run(user, "SELECT count(*) AS n, sum(amount) AS s FROM sales.orders")
    actual = adbc_query(adbc(user), sql)
    assert actual.to_pylist() == expected.to_pylist(), sql


def test_tickets_and_prepared_handles_are_bound_to_their_user(flights):
    """bob's ticket or prepared statement, presented by carol, reads nothing."""
    bob, bob_options = flights("bob")
    carol, carol_options = flights("carol")
    sql = "SELECT * FROM sales.orders LIMIT 5"
    info = bob.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), bob_options)
    with pytest.raises(Exception) as stolen:
        carol.do_get(info.endpoints[0].ticket, carol_options).read_all()
    assert "sales.orders" not in str(stolen.value).replace(sql, "")
    request = pb.ActionCreatePreparedStatementRequest(query=sql)
    results = list(
        bob.do_action(flight.Action("CreatePreparedStatement", pack(request)), bob_options)
    )
    envelope = any_pb2.Any()
    envelope.ParseFromString(results[0].body.to_pybytes())
    prepared = pb.ActionCreatePreparedStatementResult()
    assert envelope.Unpack(prepared)
    command = pb.CommandPreparedStatementQuery(
        prepared_statement_handle=prepared.prepared_statement_handle
    )
    with pytest.raises(pa.ArrowKeyError):  # NOT_FOUND: the handle is not carol's
        info = carol.get_flight_info(
            flight.FlightDescriptor.for_command(pack(command)), carol_options
        )
        carol.do_get(info.endpoints[0].ticket, carol_options).read_all()
    # bob himself can run it.
    info = bob.get_flight_info(flight.FlightDescriptor.for_command(pack(command)), bob_options)
    assert bob.do_get(info.endpoints[0].ticket, bob_options).read_all().num_rows == 5
