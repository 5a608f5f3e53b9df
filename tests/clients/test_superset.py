"""Apache Superset 6.1, in its own environment, on the session gateway through
meshgate-sqlalchemy and its engine spec: one Superset database connection per Meshgate
user (Superset keeps one set of credentials per connection), driven through its REST API.

- as alice, a monthly time series over sales.orders holds only EU rows, and the sums the
  oracle computes;
- as carol, sales.orders is in no list that Superset offers for datasets, nor can it be added;
- SQL Lab shows masked values, and names a product the user may not read; the gateway's
  limits (rows, time) reach it typed; a virtual dataset over a denied product;
- the dialect under Superset's SQLAlchemy 1.4 and pandas 2.1.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import NO_COST_LIMIT, RunningGateway, private_gateway
from support.superset import Superset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DENIED = "unknown product sales.orders (or you may not read it)"


def monthly_amounts(dataset: int) -> dict:
    """The query context of a time-series chart: SUM(amount) by month (P1M) and region."""
    metric = {
        "expressionType": "SIMPLE",
        "column": {"column_name": "amount"},
        "aggregate": "SUM",
        "label": "SUM(amount)",
    }
    return {
        "datasource": {"id": dataset, "type": "table"},
        "force": True,
        "queries": [
            {
                "columns": [
                    {
                        "columnType": "BASE_AXIS",
                        "expressionType": "SQL",
                        "sqlExpression": "order_date",
                        "label": "order_date",
                        "timeGrain": "P1M",
                    },
                    "region",
                ],
                "metrics": [metric],
                "orderby": [[metric, False]],
                "filters": [{"col": "order_date", "op": "TEMPORAL_RANGE", "val": "No filter"}],
                "row_limit": 10000,
            }
        ],
        "result_format": "json",
        "result_type": "full",
    }


def test_superset_knows_meshgate_through_the_engine_spec(superset: Superset, databases):
    available = superset.ok("GET", "/api/v1/database/available/")["databases"]
    meshgate = [d for d in available if d["engine"] == "meshgate"]
    assert [(d["name"], d["default_driver"]) for d in meshgate] == [("Meshgate", "adbc")]
    connection = superset.ok("GET", f"/api/v1/database/{databases['alice']}/connection")
    assert connection["result"]["backend"] == "meshgate"
    assert "alice:alice" not in json.dumps(connection)  # Superset masks the password


@pytest.mark.parametrize(
    ("password", "port", "error_type", "says"),
    [
        ("alice", None, None, None),
        ("n0t-alices-7f3a", None, "CONNECTION_ACCESS_DENIED_ERROR", "Meshgate refused the login"),
        ("alice", 1, "CONNECTION_HOST_DOWN_ERROR", "Meshgate cannot be reached"),
    ],
    ids=["ok", "wrong-password", "nothing-listens"],
)
def test_testing_a_connection_says_what_is_wrong(
    superset: Superset, gateway: RunningGateway, password, port, error_type, says
):
    uri = f"meshgate://alice:{password}@127.0.0.1:{port or gateway.uri.rsplit(':', 1)[1]}"
    status, answer = superset.call(
        "POST", "/api/v1/database/test_connection/", {"sqlalchemy_uri": uri, "database_name": "t"}
    )
    assert isinstance(answer, dict)
    if error_type is None:
        assert (status, answer) == (200, {"message": "OK"})
        return
    assert status == 400
    [error] = answer["errors"]
    assert error["error_type"] == error_type and error["message"].startswith(says)
    assert password not in json.dumps(answer).replace("alice", "")


def test_sql_lab_resolves_bare_names_in_the_urls_schema(
    superset: Superset, gateway: RunningGateway
):
    port = gateway.uri.rsplit(":", 1)[1]
    sales = superset.add_database(
        "meshgate-alice-sales", f"meshgate://alice:alice@127.0.0.1:{port}/sales"
    )
    status, answer = superset.sql_lab(sales, "SELECT DISTINCT region FROM orders")
    assert status == 200 and answer["data"] == [{"region": "EU"}], answer


def test_a_default_schema_the_user_may_read_nothing_of_is_named(
    superset: Superset, gateway: RunningGateway
):
    """``meshgate://carol:...@.../sales``: carol may read nothing in sales."""
    port = gateway.uri.rsplit(":", 1)[1]
    status, answer = superset.call(
        "POST",
        "/api/v1/database/test_connection/",
        {"sqlalchemy_uri": f"meshgate://carol:carol@127.0.0.1:{port}/sales", "database_name": "t"},
    )
    assert status == 400 and isinstance(answer, dict), answer
    [error] = answer["errors"]
    assert error["error_type"] == "SCHEMA_DOES_NOT_EXIST_ERROR"
    assert error["message"] == "unknown schema sales (or you may not read any of its products)"


def test_alice_monthly_time_series_holds_only_eu_rows(
    superset: Superset, orders_dataset: int, oracle
):
    dataset = orders_dataset
    columns = superset.ok("GET", f"/api/v1/dataset/{dataset}")["result"]["columns"]
    assert {c["column_name"]: c["is_dttm"] for c in columns}["order_date"] is True
    result = superset.ok("POST", "/api/v1/chart/data", monthly_amounts(dataset))["result"][0]
    assert "DATE_TRUNC('month', order_date)" in result["query"]
    rows = result["data"]
    assert rows and {row["region"] for row in rows} == {"EU"}
    expected = {
        (
            datetime.datetime.combine(month, datetime.time(), datetime.UTC).timestamp() * 1000,
            region,
        ): float(total)
        for month, region, total in oracle.rows(
            "alice",
            "SELECT date_trunc('month', order_date)::DATE, region, sum(amount) "
            "FROM sales.orders GROUP BY ALL",
        )
    }
    got = {(row["order_date"], row["region"]): row["SUM(amount)"] for row in rows}
    assert got.keys() == expected.keys()
    for key, total in expected.items():
        assert got[key] == pytest.approx(total, abs=0.005)


def test_carol_is_not_offered_sales_orders(superset: Superset, databases):
    carol = databases["carol"]
    schemas = superset.ok("GET", f"/api/v1/database/{carol}/schemas/?q=(force:!t)")["result"]
    assert "sales" not in schemas and "crm" in schemas
    tables = superset.ok("GET", f"/api/v1/database/{carol}/tables/?q=(schema_name:sales,force:!t)")
    assert tables["count"] == 0 and tables["result"] == []
    status, refused = superset.call(
        "POST", "/api/v1/dataset/", {"database": carol, "schema": "sales", "table_name": "orders"}
    )
    assert status == 422, refused
    assert "could not be found" in json.dumps(refused)
    alice = superset.ok(
        "GET", f"/api/v1/database/{databases['alice']}/tables/?q=(schema_name:sales,force:!t)"
    )
    assert [t["value"] for t in alice["result"]] == ["orders"]


def test_sql_lab_shows_masked_values(superset: Superset, databases, oracle):
    sql = "SELECT customer_id, email FROM crm.customers ORDER BY customer_id LIMIT 20"
    status, answer = superset.sql_lab(databases["alice"], sql, limit=20)
    assert status == 200 and answer["status"] == "success", answer
    shown = [(row["customer_id"], row["email"]) for row in answer["data"]]
    assert shown == oracle.rows("alice", sql)
    raw = {email for _, email in oracle.raw_rows(sql)}
    assert not raw & {email for _, email in shown}


def test_sql_lab_names_a_product_the_user_may_not_read(superset: Superset, databases):
    """The gateway's sentence, typed as a missing table. Superset 6.1 answers every failed
    synchronous SQL Lab statement with HTTP 500, whatever the database and error type:
    superset/sqllab/sql_json_executer.py raises ``SupersetErrorsException(errors)`` without
    a status, whose class status is SupersetException's 500; the page shows the errors."""
    status, answer = superset.sql_lab(databases["carol"], "SELECT * FROM sales.orders")
    assert status == 500 and "data" not in answer
    [error] = answer["errors"]
    assert error["message"] == DENIED
    assert error["error_type"] == "TABLE_DOES_NOT_EXIST_ERROR"


@pytest.fixture(scope="module")
def limited(
    superset: Superset, demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """The id of a Superset database logging in as alice to a gateway of its own whose
    results stop at 1,000 rows and whose queries at 1 s."""
    with private_gateway(
        demo_mesh,
        tmp_path_factory.mktemp("limited"),
        engine={"query_timeout_seconds": 1, "max_result_rows": 1000},
        workload=NO_COST_LIMIT,  # the runaway query is the subject: let it run
    ) as running:
        yield superset.add_database(
            "meshgate-limited-alice", f"meshgate://alice:alice@127.0.0.1:{running.port}"
        )


@pytest.mark.parametrize(
    ("sql", "limit", "error_type", "says"),
    [
        (
            "SELECT * FROM sales.orders",
            5000,
            "RESULT_TOO_LARGE_ERROR",
            "the result exceeds the limit of 1,000 rows",
        ),
        (
            "SELECT count(*) FROM sales.orders a, sales.orders b, sales.orders c",
            10,
            "BACKEND_TIMEOUT_ERROR",
            "the query exceeded the time limit of 1 s",
        ),
    ],
    ids=["row-limit", "time-limit"],
)
def test_sql_lab_types_the_gateways_limits(
    superset: Superset, limited: int, sql, limit, error_type, says
):
    status, answer = superset.sql_lab(limited, sql, limit=limit)
    assert status == 500 and "data" not in answer  # Superset's status for any failure
    [error] = answer["errors"]
    assert error["error_type"] == error_type
    assert error["message"].startswith(says)
    assert "FlightSQL" not in error["message"] and "Detail" not in error["message"]


def test_a_virtual_dataset_over_a_product_the_user_may_not_read(superset: Superset, databases):
    """carol's SQL dataset over sales.orders. Created, Superset 6.1 runs its SQL for its
    columns and answers any database failure there with HTTP 500 "Fatal error", whatever the
    database (connectors/sqla/utils.py wraps it in SupersetGenericDBErrorException, which
    the dataset command does not catch and Flask-AppBuilder's ``safe`` turns into that
    answer): nothing of the product or the driver shows. A virtual dataset that exists
    (saved before the policy changed, here by editing its SQL) reads in a chart as the
    gateway's sentence, a 400."""
    carol = databases["carol"]
    body = {"database": carol, "schema": "crm", "sql": "SELECT * FROM sales.orders"}
    status, refused = superset.call("POST", "/api/v1/dataset/", {**body, "table_name": "denied"})
    assert (status, refused) == (500, {"message": "Fatal error"})
    dataset = superset.ok(
        "POST",
        "/api/v1/dataset/",
        {**body, "table_name": "was_allowed", "sql": "SELECT region FROM crm.customers"},
    )["id"]
    superset.ok("PUT", f"/api/v1/dataset/{dataset}", {"sql": "SELECT * FROM sales.orders"})
    context = {
        "datasource": {"id": dataset, "type": "table"},
        "force": True,
        "queries": [
            {
                "columns": [],
                "metrics": [{"expressionType": "SQL", "sqlExpression": "count(*)", "label": "n"}],
                "row_limit": 10,
            }
        ],
        "result_format": "json",
        "result_type": "full",
    }
    status, answer = superset.call("POST", "/api/v1/chart/data", context)
    assert (status, answer) == (400, {"message": f"Error: {DENIED}"})


def test_a_chart_metric_on_a_column_the_user_may_not_read_is_a_400(superset: Superset, databases):
    dataset = superset.add_dataset(databases["carol"], "crm", "customers")
    context = {
        "datasource": {"id": dataset, "type": "table"},
        "force": True,
        "queries": [
            {
                "columns": ["region"],
                "metrics": [{"expressionType": "SQL", "sqlExpression": "count(ssn)", "label": "n"}],
                "row_limit": 10,
            }
        ],
        "result_format": "json",
        "result_type": "full",
    }
    status, answer = superset.call("POST", "/api/v1/chart/data", context)
    assert status == 400
    message = json.dumps(answer)
    assert "ssn" in message and "FlightSQL" not in message and "Traceback" not in message


# --------------------------------------------------------------------------- SQLAlchemy 1.4

_UNDER_SQLALCHEMY_1_4 = """
import datetime, json, sys
import pandas as pd, sqlalchemy as sa
port = sys.argv[1]
out = {"sqlalchemy": sa.__version__, "pandas": pd.__version__}
alice = sa.create_engine(f"meshgate://alice:alice@127.0.0.1:{port}")
carol = sa.create_engine(f"meshgate://carol:carol@127.0.0.1:{port}")
out["alice_schemas"] = sa.inspect(alice).get_schema_names()
out["carol_schemas"] = sa.inspect(carol).get_schema_names()
out["types"] = [str(c["type"].compile(alice.dialect)) for c in sa.inspect(alice).get_columns("orders", "sales")]
orders = sa.Table("orders", sa.MetaData(), schema="sales", autoload_with=alice)
query = sa.select(sa.func.count()).select_from(orders).where(orders.c.order_date >= sa.bindparam("since"))
out["compiled"] = str(query.compile(alice))
with alice.connect() as conn:
    out["since_2024"] = conn.execute(query, {"since": datetime.date(2024, 1, 1)}).scalar()
    out["bound"] = conn.execute(sa.text("SELECT count(*) FROM sales.orders WHERE region = :r"), {"r": "US"}).scalar()
frame = pd.read_sql_table("orders", alice, schema="sales")
out["frame"] = [len(frame), sorted(set(frame["region"]))]
try:
    sa.Table("orders", sa.MetaData(), schema="sales", autoload_with=carol)
    out["carol_orders"] = "reflected"
except sa.exc.NoSuchTableError:
    out["carol_orders"] = "no such table"
sales = sa.create_engine(f"meshgate://alice:alice@127.0.0.1:{port}/sales")
with sales.connect() as conn:
    out["bare_name"] = conn.execute(sa.text("SELECT count(*) FROM orders")).scalar()
out["sales_tables"] = sa.inspect(sales).get_table_names()
try:
    sa.create_engine(f"meshgate://carol:carol@127.0.0.1:{port}/sales").connect()
    out["carol_sales"] = "connected"
except sa.exc.DBAPIError as refused:
    out["carol_sales"] = str(refused.orig)
print(json.dumps(out))
"""


def test_the_dialect_under_sqlalchemy_1_4_and_pandas_2_1(
    superset: Superset, gateway: RunningGateway, oracle, tmp_path: Path
):
    script = tmp_path / "probe.py"
    script.write_text(_UNDER_SQLALCHEMY_1_4, encoding="utf-8")
    done = subprocess.run(
        [str(superset.env.python), str(script), gateway.uri.rsplit(":", 1)[1]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["sqlalchemy"].startswith("1.4.") and out["pandas"].startswith("2.1.")
    assert out["alice_schemas"] == ["crm", "sales"] and out["carol_schemas"] == ["crm"]
    assert out["types"] == ["BIGINT", "BIGINT", "VARCHAR", "NUMERIC(12, 2)", "DATE"]
    assert "?" in out["compiled"] and "FROM sales.orders" in out["compiled"]
    assert (
        out["since_2024"]
        == oracle.rows(
            "alice", "SELECT count(*) FROM sales.orders WHERE order_date >= DATE '2024-01-01'"
        )[0][0]
    )
    assert out["bound"] == 0  # alice's rows are EU only: a US filter, bound, finds none
    count = oracle.rows("alice", "SELECT count(*) FROM sales.orders")[0][0]
    assert out["frame"] == [count, ["EU"]]
    assert out["carol_orders"] == "no such table"
    assert out["bare_name"] == count and out["sales_tables"] == ["orders"]
    assert out["carol_sales"].startswith("unknown schema sales (or you may not read any")
