"""The ADBC Flight SQL driver (DB-API) against the real gateway, checked against DuckDB
run directly on the same files: same rows and same Arrow types."""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pytest
from support.clients import adbc_connect
from support.oracle import raw_sources

import gateway as gateway_package

ORDERS_SCHEMA = pa.schema(
    [
        ("order_id", pa.int64()),
        ("customer_id", pa.int64()),
        ("region", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("order_date", pa.date32()),
    ]
)
CUSTOMERS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("name", pa.string()),
        ("email", pa.string()),
        ("ssn", pa.string()),
        ("region", pa.string()),
    ]
)
SHIPMENTS_SCHEMA = pa.schema(
    [
        ("shipment_id", pa.int64()),
        ("order_id", pa.int64()),
        ("carrier", pa.string()),
        ("shipped_at", pa.timestamp("us")),
        ("region", pa.string()),
    ]
)
SCHEMAS = {
    "sales.orders": ORDERS_SCHEMA,
    "crm.customers": CUSTOMERS_SCHEMA,
    "logistics.shipments": SHIPMENTS_SCHEMA,
}
PRIMARY_KEYS = {
    "sales.orders": "order_id",
    "crm.customers": "customer_id",
    "logistics.shipments": "shipment_id",
}
ROW_COUNTS = {"sales.orders": 200_000, "crm.customers": 20_000, "logistics.shipments": 150_000}

# JDBC/XDBC type codes the driver reports for the Arrow types of the products.
XDBC_BIGINT, XDBC_VARCHAR, XDBC_DECIMAL, XDBC_DATE, XDBC_TIMESTAMP = -5, 12, 3, 91, 93


@pytest.fixture(scope="module")
def conn(gateway):
    with adbc_connect(gateway.uri, "bob") as connection:
        yield connection


@pytest.fixture
def cur(conn):
    with conn.cursor() as cursor:
        yield cursor


def assert_same_table(got: pa.Table, expected: pa.Table) -> None:
    """Same schema (names, Arrow types) and same values, with a readable failure."""
    assert got.schema.names == expected.schema.names
    assert got.schema.types == expected.schema.types, (got.schema, expected.schema)
    assert got.num_rows == expected.num_rows
    assert got.equals(expected), "same schema and row count, but different values"


# --------------------------------------------------------------------------- fetch APIs


def test_fetch_arrow_table_matches_duckdb(cur, direct_arrow):
    sql = "SELECT * FROM sales.orders WHERE order_date >= DATE '2025-12-01' ORDER BY order_id"
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    expected = direct_arrow(sql)
    assert got.num_rows > 1000
    assert_same_table(got, expected)
    assert got.schema.field("amount").type == pa.decimal128(12, 2)
    assert got.schema.field("order_date").type == pa.date32()


def test_fetchall_returns_python_tuples(cur, direct):
    sql = "SELECT customer_id, name, region FROM crm.customers WHERE customer_id <= 25 ORDER BY customer_id"
    cur.execute(sql)
    rows = cur.fetchall()
    assert rows == direct.execute(sql).fetchall()
    assert len(rows) == 25
    assert all(isinstance(r, tuple) and len(r) == 3 for r in rows)
    assert [d[0] for d in cur.description] == ["customer_id", "name", "region"]


def test_fetchall_python_types(cur, direct):
    sql = "SELECT order_id, amount, order_date FROM sales.orders ORDER BY order_id LIMIT 3"
    cur.execute(sql)
    rows = cur.fetchall()
    assert rows == direct.execute(sql).fetchall()
    order_id, amount, order_date = rows[0]
    assert isinstance(order_id, int)
    assert isinstance(amount, decimal.Decimal) and amount.as_tuple().exponent == -2
    assert isinstance(order_date, datetime.date) and not isinstance(order_date, datetime.datetime)


def test_fetch_df_matches_duckdb(cur, direct_arrow):
    sql = (
        "SELECT shipment_id, carrier, shipped_at, region FROM logistics.shipments "
        "WHERE shipment_id % 97 = 0 ORDER BY shipment_id"
    )
    cur.execute(sql)
    frame = cur.fetch_df()
    expected = direct_arrow(sql).to_pandas()
    assert len(frame) == len(expected) > 1000
    assert list(frame.columns) == ["shipment_id", "carrier", "shipped_at", "region"]
    assert str(frame["shipped_at"].dtype).startswith("datetime64")
    assert frame.equals(expected)


def test_fetchone_and_fetchmany(cur, direct):
    sql = "SELECT order_id, region FROM sales.orders ORDER BY order_id LIMIT 10"
    expected = direct.execute(sql).fetchall()
    cur.execute(sql)
    assert cur.fetchone() == expected[0]
    assert cur.fetchmany(3) == expected[1:4]
    assert cur.fetchone() == expected[4]
    assert cur.fetchmany(100) == expected[5:]
    assert cur.fetchone() is None
    assert cur.fetchmany(5) == []


def test_description_reports_arrow_types(cur):
    cur.execute("SELECT * FROM sales.orders LIMIT 1")
    assert [(d[0], d[1]) for d in cur.description] == [(f.name, f.type) for f in ORDERS_SCHEMA]


# --------------------------------------------------------------------------- parameters


def test_prepared_statement_one_parameter(cur, direct_arrow):
    sql = (
        "SELECT customer_id, name, region FROM crm.customers WHERE region = ? ORDER BY customer_id"
    )
    cur.execute(sql, ("EU",))
    got = cur.fetch_arrow_table()
    expected = direct_arrow(sql, ["EU"])
    assert_same_table(got, expected)
    assert set(got.column("region").to_pylist()) == {"EU"}
    assert 5_000 < got.num_rows < 15_000


def test_prepared_statement_two_parameters_of_different_types(cur, direct_arrow):
    sql = (
        "SELECT order_id, customer_id, amount, order_date FROM sales.orders "
        "WHERE customer_id < ? AND order_date >= ? ORDER BY order_id"
    )
    params = (500, datetime.date(2025, 6, 1))
    cur.execute(sql, params)
    got = cur.fetch_arrow_table()
    expected = direct_arrow(sql, list(params))
    assert got.num_rows > 0
    assert_same_table(got, expected)
    assert max(got.column("customer_id").to_pylist()) < 500
    assert min(got.column("order_date").to_pylist()) >= datetime.date(2025, 6, 1)


def test_reexecuting_with_other_parameters_gives_other_results(cur, direct):
    sql = "SELECT count(*) AS n, min(region) AS lo, max(region) AS hi FROM crm.customers WHERE region = ?"
    results = {}
    for region in ("EU", "US", "APAC", "EU"):
        cur.execute(sql, (region,))
        results.setdefault(region, []).append(cur.fetchall())
    for region, runs in results.items():
        expected = direct.execute(sql, [region]).fetchall()
        assert all(run == expected for run in runs), region
        assert expected[0][1] == expected[0][2] == region
    counts = {region: runs[0][0][0] for region, runs in results.items()}
    assert len(set(counts.values())) == 3, counts
    assert sum(counts.values()) == 20_000


def test_parameters_are_values_not_sql(cur):
    cur.execute("SELECT count(*) FROM crm.customers WHERE region = ?", ("EU' OR '1'='1",))
    assert cur.fetchall() == [(0,)]


@pytest.mark.parametrize(
    "value",
    [
        7,
        "text",
        datetime.date(2024, 2, 29),
        datetime.datetime(2024, 2, 29, 12, 30, 1),
        decimal.Decimal("1234.50"),
        2.5,
        True,
        None,
    ],
    ids=repr,
)
def test_parameter_round_trip(cur, value):
    cur.execute("SELECT ? AS v", (value,))
    table = cur.fetch_arrow_table()
    assert table.num_rows == 1
    assert table.column("v").to_pylist() == [value]


def test_parameters_of_temporal_and_decimal_types_filter_correctly(cur, direct):
    cases = [
        ("SELECT count(*) FROM sales.orders WHERE amount > ?", (decimal.Decimal("4000.00"),)),
        (
            "SELECT count(*) FROM logistics.shipments WHERE shipped_at < ?",
            (datetime.datetime(2023, 6, 1),),
        ),
        (
            "SELECT count(*) FROM sales.orders WHERE order_date BETWEEN ? AND ?",
            (datetime.date(2024, 1, 1), datetime.date(2024, 1, 31)),
        ),
    ]
    for sql, params in cases:
        cur.execute(sql, params)
        got = cur.fetchall()
        assert got == direct.execute(sql, list(params)).fetchall(), sql
        assert 0 < got[0][0] < 200_000, sql


def test_parameter_cast_with_double_colon(cur, direct):
    """``?::DATE`` is ordinary DuckDB SQL (DuckDB itself accepts it)."""
    sql = "SELECT count(*) FROM sales.orders WHERE order_date >= ?::DATE"
    params = ("2025-12-01",)
    expected = direct.execute(sql, list(params)).fetchall()
    cur.execute(sql, params)
    assert cur.fetchall() == expected


def test_wrong_parameter_count_is_refused_clearly(cur):
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.Error) as info:
        cur.execute("SELECT ? AS a, ? AS b", (1,))
        cur.fetchall()
    assert "2 parameter(s)" in str(info.value)


# --------------------------------------------------------------------------- metadata


def test_get_objects_lists_catalog_domains_tables_and_columns(conn):
    objects = conn.adbc_get_objects().read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["mesh"]
    schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
    assert set(schemas) == {"sales", "crm", "logistics"}
    found = {}
    for domain, schema in schemas.items():
        for table in schema["db_schema_tables"]:
            assert table["table_type"] == "TABLE"
            found[f"{domain}.{table['table_name']}"] = table["table_columns"]
    assert set(found) == set(SCHEMAS)
    expected_codes = {
        pa.int64(): XDBC_BIGINT,
        pa.string(): XDBC_VARCHAR,
        pa.decimal128(12, 2): XDBC_DECIMAL,
        pa.date32(): XDBC_DATE,
        pa.timestamp("us"): XDBC_TIMESTAMP,
    }
    for key, columns in found.items():
        assert [c["column_name"] for c in columns] == SCHEMAS[key].names, key
        assert [c["ordinal_position"] for c in columns] == list(range(1, len(columns) + 1)), key
        assert [c["xdbc_data_type"] for c in columns] == [
            expected_codes[f.type] for f in SCHEMAS[key]
        ], key


def test_get_objects_depths_and_filters(conn):
    catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
    assert [c["catalog_name"] for c in catalogs] == ["mesh"]

    domains = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
    assert sorted(s["db_schema_name"] for s in domains[0]["catalog_db_schemas"]) == [
        "crm",
        "logistics",
        "sales",
    ]

    tables = conn.adbc_get_objects(depth="tables", db_schema_filter="sal%").read_all().to_pylist()
    listed = [
        (s["db_schema_name"], t["table_name"])
        for s in tables[0]["catalog_db_schemas"]
        for t in s["db_schema_tables"] or []
    ]
    assert listed == [("sales", "orders")]

    columns = (
        conn.adbc_get_objects(depth="columns", column_name_filter="amount").read_all().to_pylist()
    )
    with_amount = {
        (s["db_schema_name"], t["table_name"]): [c["column_name"] for c in t["table_columns"]]
        for s in columns[0]["catalog_db_schemas"]
        for t in s["db_schema_tables"]
        if t["table_columns"]
    }
    assert with_amount == {("sales", "orders"): ["amount"]}

    nothing = conn.adbc_get_objects(depth="tables", catalog_filter="other").read_all().to_pylist()
    assert all(not c["catalog_db_schemas"] for c in nothing)

    views = (
        conn.adbc_get_objects(depth="tables", table_types_filter=["VIEW"]).read_all().to_pylist()
    )
    assert [
        t for c in views for s in c["catalog_db_schemas"] for t in s["db_schema_tables"] or []
    ] == []

    by_name = conn.adbc_get_objects(depth="tables", table_name_filter="%s").read_all().to_pylist()
    assert sorted(
        t["table_name"]
        for c in by_name
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"] or []
    ) == ["customers", "orders", "shipments"]

    ssn_like = (
        conn.adbc_get_objects(
            depth="all",
            catalog_filter="mesh",
            db_schema_filter="crm",
            table_name_filter="customers",
            column_name_filter="%s%",
        )
        .read_all()
        .to_pylist()
    )
    columns = ssn_like[0]["catalog_db_schemas"][0]["db_schema_tables"][0]["table_columns"]
    assert sorted(c["column_name"] for c in columns) == ["customer_id", "ssn"]


def test_get_table_schema_orders(conn, direct_arrow):
    schema = conn.adbc_get_table_schema("orders", db_schema_filter="sales")
    assert schema.names == ORDERS_SCHEMA.names
    assert schema.types == ORDERS_SCHEMA.types
    assert schema.types == direct_arrow("SELECT * FROM sales.orders LIMIT 0").schema.types


@pytest.mark.parametrize("key", sorted(SCHEMAS))
def test_get_table_schema_every_product(conn, direct_arrow, key):
    domain, name = key.split(".")
    schema = conn.adbc_get_table_schema(name, db_schema_filter=domain)
    assert list(zip(schema.names, schema.types, strict=True)) == list(
        zip(SCHEMAS[key].names, SCHEMAS[key].types, strict=True)
    )
    expected = direct_arrow(f"SELECT * FROM {key} LIMIT 0").schema
    assert schema.types == expected.types


def test_get_table_schema_unknown_table_fails(conn):
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.Error):
        conn.adbc_get_table_schema("nope", db_schema_filter="sales")


def test_get_info_vendor(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "Meshgate"
    assert info["vendor_version"] == gateway_package.__version__
    assert info["vendor_arrow_version"] == pa.__version__


def test_get_table_types(conn):
    assert conn.adbc_get_table_types() == ["TABLE"]


# --------------------------------------------------------------------------- queries vs DuckDB


def test_cross_domain_join_with_aggregates(cur, direct_arrow):
    sql = """
        SELECT c.region,
               count(*)               AS orders,
               count(DISTINCT customer_id) AS customers,
               sum(o.amount)          AS revenue,
               avg(o.amount)          AS avg_amount,
               min(o.order_date)      AS first_order,
               max(c.name)            AS last_name_sorted
        FROM sales.orders o JOIN crm.customers c USING (customer_id)
        GROUP BY c.region
        ORDER BY c.region
    """
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    expected = direct_arrow(sql)
    assert got.num_rows == 3
    assert sum(got.column("orders").to_pylist()) == 200_000
    assert got.schema.field("revenue").type == pa.decimal128(38, 2)
    assert_same_table(got, expected)


def test_three_domain_join(cur, direct_arrow):
    sql = """
        SELECT s.carrier, c.region, count(*) AS parcels, sum(o.amount) AS value
        FROM logistics.shipments s
        JOIN sales.orders o ON o.order_id = s.order_id
        JOIN crm.customers c ON c.customer_id = o.customer_id
        GROUP BY ALL
        ORDER BY s.carrier, c.region
    """
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    assert sum(got.column("parcels").to_pylist()) == 150_000
    assert_same_table(got, direct_arrow(sql))


def test_window_functions(cur, direct_arrow):
    sql = """
        SELECT order_id, customer_id, amount, order_date,
               row_number() OVER w                                   AS rn,
               rank() OVER (PARTITION BY region ORDER BY amount DESC) AS amount_rank,
               sum(amount) OVER (PARTITION BY customer_id)           AS customer_total,
               lag(order_date) OVER w                                AS previous_order,
               avg(amount) OVER (w ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS moving_avg
        FROM sales.orders
        WINDOW w AS (PARTITION BY customer_id ORDER BY order_date, order_id)
        QUALIFY customer_id <= 40
        ORDER BY customer_id, rn
    """
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    assert got.num_rows > 100
    assert_same_table(got, direct_arrow(sql))


def test_order_by_limit_offset(cur, direct_arrow):
    sql = "SELECT * FROM sales.orders ORDER BY amount DESC, order_id LIMIT 25 OFFSET 10"
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    assert got.num_rows == 25
    amounts = got.column("amount").to_pylist()
    assert amounts == sorted(amounts, reverse=True)
    assert_same_table(got, direct_arrow(sql))


def test_cte_subquery_and_set_operation(cur, direct_arrow):
    sql = """
        WITH big AS (SELECT customer_id FROM sales.orders WHERE amount > 4500)
        SELECT 'big' AS kind, count(*) AS n FROM crm.customers WHERE customer_id IN (SELECT customer_id FROM big)
        UNION ALL
        SELECT 'shipped', count(DISTINCT order_id) FROM logistics.shipments
        ORDER BY kind
    """
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    assert got.num_rows == 2
    assert_same_table(got, direct_arrow(sql))


def test_identifiers_are_case_insensitive_and_quotable(cur):
    for sql in (
        "SELECT COUNT(*) FROM SALES.ORDERS",
        'SELECT count(*) FROM "sales"."orders"',
        "SELECT count(*) FROM mesh.sales.orders",
        "SELECT count(sales.orders.amount) FROM sales.orders",
        "SELECT count(o.amount) FROM sales.orders AS o",
        "FROM sales.orders SELECT count(*)",
    ):
        cur.execute(sql)
        assert cur.fetchall() == [(200_000,)], sql


def test_unicode_values_and_column_names(cur):
    cur.execute("SELECT 'ünïcödé 🎉' AS \"wéird name\", 'it''s' AS quote")
    table = cur.fetch_arrow_table()
    assert table.column_names == ["wéird name", "quote"]
    assert table.to_pylist() == [{"wéird name": "ünïcödé 🎉", "quote": "it's"}]


def test_self_join_of_a_product(cur, direct_arrow):
    sql = """
        SELECT a.region, count(*) AS pairs
        FROM sales.orders a JOIN sales.orders b
          ON a.customer_id = b.customer_id AND a.order_id < b.order_id
        WHERE a.customer_id <= 200
        GROUP BY a.region ORDER BY a.region
    """
    cur.execute(sql)
    assert_same_table(cur.fetch_arrow_table(), direct_arrow(sql))


def test_empty_result_keeps_its_schema(cur):
    cur.execute("SELECT * FROM logistics.shipments WHERE shipment_id < 0")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 0
    assert table.schema.types == SHIPMENTS_SCHEMA.types


def test_full_scan_of_orders_is_streamed_in_several_batches(cur, direct_arrow):
    cur.execute("SELECT * FROM sales.orders")
    reader = cur.fetch_record_batch()
    batches = list(reader)
    assert len(batches) > 1, "200k rows should arrive in several record batches"
    assert all(b.schema.equals(ORDERS_SCHEMA) for b in batches)
    got = pa.Table.from_batches(batches).sort_by("order_id")
    assert got.num_rows == 200_000
    expected = direct_arrow("SELECT * FROM sales.orders ORDER BY order_id")
    assert_same_table(got, expected)


@pytest.mark.parametrize("key", sorted(SCHEMAS))
def test_select_star_of_each_product_matches_its_files(cur, direct, demo_mesh, key):
    """Every row and Arrow type of each product, against the raw files (not views)."""
    cur.execute(f"SELECT * FROM {key}")
    got = cur.fetch_arrow_table().sort_by(PRIMARY_KEYS[key])
    source = raw_sources(demo_mesh)[key]
    expected = direct.sql(
        f"SELECT {', '.join(SCHEMAS[key].names)} FROM {source} ORDER BY {PRIMARY_KEYS[key]}"
    ).to_arrow_table()
    assert got.num_rows == ROW_COUNTS[key]
    assert got.schema.types == SCHEMAS[key].types
    assert_same_table(got, expected)


def test_enum_result_column(cur, direct_arrow):
    """A DuckDB ENUM result travels as an Arrow dictionary column."""
    sql = (
        "SELECT CAST(region AS ENUM('EU', 'US', 'APAC')) AS region, count(*) AS n "
        "FROM crm.customers GROUP BY ALL ORDER BY region"
    )
    expected = direct_arrow(sql)
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    assert got.column("region").to_pylist() == expected.column("region").to_pylist()
    assert got.column("n").to_pylist() == expected.column("n").to_pylist()
