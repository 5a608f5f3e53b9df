"""The Spark route as an operator and a client see it: EXPLAIN names the engine and why,
routing by size, contract hint and exactness, audit records, health, limits, timeout,
client cancel and Spark being down; all against real gateway and Spark processes."""

from __future__ import annotations

import json
import re

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, message
from support.logs import log_records
from support.polling import poll_for
from support.servers import NO_COST_LIMIT

from benchmarks.launch import free_port

pytestmark = [pytest.mark.spark, pytest.mark.slow]

CUSTOM_MASK = "p, marketing, crm.customers.name, mask, allow, sql:upper(value)"


def _run(uri: str, user: str, sql: str) -> pa.Table | str:
    connection = adbc_connect(uri, user)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetch_arrow_table()
    except adbc_driver_manager.Error as exc:
        return message(exc)
    finally:
        connection.close()


def _explained_engine(uri: str, user: str, sql: str) -> str:
    table = _run(uri, user, f"EXPLAIN {sql}")
    assert isinstance(table, pa.Table), table
    values = {row["explain_key"]: row["explain_value"] for row in table.to_pylist()}
    return values["engine"]


def _engine_records(private, engine: str) -> list[dict]:
    return [
        r for r in private.audit() if r.get("event") == "query_begin" and r.get("engine") == engine
    ]


def test_explain_names_spark_and_why(spark_gateway):
    engine = _explained_engine(spark_gateway.uri, "alice", "SELECT count(*) FROM sales.orders")
    assert engine == 'spark: [engines.spark] route = "always"'
    policy = _run(spark_gateway.uri, "alice", "EXPLAIN POLICY SELECT * FROM crm.customers")
    assert isinstance(policy, pa.Table)
    rows = [r for r in policy.to_pylist() if r["decision"] == "engine"]
    assert [r["rule"] for r in rows] == ['spark: [engines.spark] route = "always"']


def test_audit_records_the_engine_and_the_spark_operation(spark_private):
    private = spark_private(route="always")
    table = _run(
        private.uri, "erin", "SELECT region, sum(amount) AS s FROM sales.orders GROUP BY region"
    )
    assert isinstance(table, pa.Table) and table.num_rows == 3
    begins = poll_for(lambda: _engine_records(private, "spark"), timeout=30)
    assert begins and begins[0]["user"] == "erin"
    query_id = begins[0]["query_id"]
    ends = poll_for(
        lambda: [
            r
            for r in private.audit()
            if r.get("event") == "query_end" and r.get("query_id") == query_id
        ],
        timeout=30,
    )
    assert ends and ends[0]["outcome"] == "ok" and ends[0]["rows"] == 3
    assert re.fullmatch(r"[0-9a-f-]{36}", ends[0]["engine_operation"] or "")


def test_health_shows_whether_spark_answers(spark_gateway, spark_private):
    client = flight.FlightClient(spark_gateway.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("bob", "bob")])
    health = json.loads(
        next(iter(client.do_action(flight.Action("Health", b""), options))).body.to_pybytes()
    )
    client.close()
    assert health["engines"]["spark"] == "reachable"  # where Spark runs is the operator's
    down = spark_private(route="always", remote=f"sc://localhost:{free_port()}/;token=x")
    client, options = down.client("bob")
    health = json.loads(
        next(iter(client.do_action(flight.Action("Health", b""), options))).body.to_pybytes()
    )
    client.close()
    assert health["engines"]["spark"] == "unreachable"


def test_route_large_sends_only_big_queries_to_spark(spark_private):
    """crm.customers is some hundred kilobytes of Parquet: over a 1-byte threshold it goes
    to Spark, under a 1 TB one it stays on DuckDB; the explanation says which and why."""
    small = spark_private(route="large", large_bytes=10**12)
    big = spark_private(route="large", large_bytes=1)
    sql = "SELECT region, count(*) AS n FROM crm.customers GROUP BY region ORDER BY region"
    assert _explained_engine(small.uri, "bob", sql) == (
        "duckdb (the gateway's own): it is estimated to read no more than large_bytes"
    )
    assert _explained_engine(big.uri, "bob", sql) == (
        "spark: it is estimated to read more than large_bytes"
    )
    on_duckdb, on_spark = _run(small.uri, "bob", sql), _run(big.uri, "bob", sql)
    assert isinstance(on_spark, pa.Table) and on_spark.equals(on_duckdb)
    assert _engine_records(big, "spark") and not _engine_records(small, "spark")


def test_a_contract_hint_sends_its_product_to_spark(spark_private):
    def hint(mesh):
        contract = mesh / "logistics" / "shipments.odcs.yaml"
        text = contract.read_text(encoding="utf-8")
        assert "customProperties" not in text
        contract.write_text(
            text + "customProperties:\n  - property: engine\n    value: spark\n", encoding="utf-8"
        )

    private = spark_private(route="large", large_bytes=10**12, prepare=hint)
    shipments = "SELECT carrier, count(*) AS n FROM logistics.shipments GROUP BY carrier"
    assert _explained_engine(private.uri, "bob", shipments) == (
        "spark: the contract of logistics.shipments asks for engine spark"
    )
    assert _explained_engine(private.uri, "bob", "SELECT count(*) FROM crm.customers").startswith(
        "duckdb"
    )
    assert isinstance(_run(private.uri, "bob", shipments), pa.Table)
    assert _engine_records(private, "spark")


def test_custom_masks_refuse_spark_or_stay_on_duckdb(spark_private):
    always = spark_private(route="always", crm_policy=(CUSTOM_MASK,))
    large = spark_private(route="large", large_bytes=1, crm_policy=(CUSTOM_MASK,))
    sql = "SELECT name FROM crm.customers ORDER BY customer_id LIMIT 3"
    refused = _run(always.uri, "carol", sql)
    assert isinstance(refused, str)
    assert (
        "the mask 'sql:upper(value)' on crm.customers.name has no exact Spark equivalent" in refused
    )
    # audited as a refusal (the route refused it before anything ran)
    records = [r for r in always.audit() if r.get("sql") == sql]
    assert [(r["event"], r["decision"], r["user"]) for r in records] == [
        ("query_refused", "refused", "carol")
    ], records
    assert "has no exact Spark equivalent" in records[0]["error"]
    kept = _run(large.uri, "carol", sql)
    assert isinstance(kept, pa.Table) and kept.num_rows == 3
    assert all(name == name.upper() for name in kept.column("name").to_pylist())
    assert not _engine_records(large, "spark")
    assert "Spark cannot run it exactly" in _explained_engine(large.uri, "carol", sql)
    assert any(r.get("event") == "spark_fallback" for r in log_records(large.log()))


def test_functions_without_a_spark_twin_refuse_spark(spark_gateway):
    refused = _run(spark_gateway.uri, "bob", "SELECT reverse(name) AS r FROM crm.customers LIMIT 1")
    assert isinstance(refused, str)
    assert "the function reverse() has no exact Spark equivalent" in refused
    division = _run(
        spark_gateway.uri, "bob", "SELECT customer_id // 7 AS d FROM crm.customers LIMIT 1"
    )
    assert isinstance(division, str) and "integer division (//)" in division


def test_result_limits_hold_on_spark(spark_private):
    private = spark_private(route="always", engine={"max_result_rows": 1000})
    refused = _run(private.uri, "bob", "SELECT * FROM crm.customers")
    assert isinstance(refused, str) and "exceeds the limit of 1,000 rows" in refused
    fine = _run(private.uri, "bob", "SELECT * FROM crm.customers LIMIT 1000")
    assert isinstance(fine, pa.Table) and fine.num_rows == 1000


def test_a_query_past_the_timeout_is_interrupted_on_spark(spark_private):
    private = spark_private(
        route="always", engine={"query_timeout_seconds": 4}, workload=NO_COST_LIMIT
    )
    sql = (
        "SELECT count(*) AS n FROM crm.customers a, crm.customers b, crm.customers c "
        "WHERE a.name <> c.name"
    )
    outcome = _run(private.uri, "bob", sql)
    assert isinstance(outcome, str) and "exceeded the time limit of 4 s" in outcome
    ends = poll_for(
        lambda: [
            r
            for r in private.audit()
            if r.get("event") == "query_end" and r.get("outcome") == "timeout"
        ],
        timeout=30,
    )
    assert ends and ends[0]["engine_operation"]
    # the gateway still answers (a statement of its own: a Spark query may take longer than
    # this gateway's 4 s on a loaded machine)
    assert _explained_engine(private.uri, "bob", "SELECT 1 AS one").startswith("spark")


def test_a_client_that_goes_away_stops_its_spark_query(spark_gateway):
    client = flight.FlightClient(spark_gateway.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("erin", "erin")])
    sql = "SELECT o.*, s.carrier FROM sales.orders o JOIN logistics.shipments s USING (order_id)"
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    reader = client.do_get(info.endpoints[0].ticket, options)
    first = reader.read_chunk()
    assert first.data.num_rows > 0
    reader.cancel()
    client.close()
    records = poll_for(
        lambda: [
            r
            for r in log_records(spark_gateway.log(), "query")
            if r.get("engine") == "spark" and r.get("outcome") in {"disconnected", "cancelled"}
        ],
        timeout=60,
    )
    assert records, "the Spark query was not stopped when its client went away"


def test_spark_down_fails_fast_or_falls_back(spark_private):
    closed = f"sc://localhost:{free_port()}/;token=x"
    down = spark_private(route="always", remote=closed)
    failed = _run(down.uri, "bob", "SELECT count(*) AS n FROM crm.customers")
    assert isinstance(failed, str) and "Spark is unreachable; the query did not run" in failed
    assert "localhost" not in failed  # where Spark runs is the operator's
    fallback = spark_private(route="large", large_bytes=1, fallback=True, remote=closed)
    # reads the regions (DuckDB answers an ungrouped count(*) while planning: nothing read)
    sql = "SELECT region, count(*) AS n FROM crm.customers GROUP BY region"
    table = _run(fallback.uri, "bob", sql)
    assert isinstance(table, pa.Table) and sum(table.column("n").to_pylist()) == 20000
    assert any(r.get("event") == "spark_fallback" for r in log_records(fallback.log()))


def test_spark_errors_name_spark_and_never_quote_values(spark_gateway):
    failed = _run(spark_gateway.uri, "alice", "SELECT CAST(name AS DATE) AS d FROM crm.customers")
    assert isinstance(failed, str)
    assert "Spark failed the query (CAST_INVALID_INPUT)" in failed
    names = _run(spark_gateway.uri, "bob", "SELECT name FROM crm.customers LIMIT 50")
    assert isinstance(names, pa.Table)
    for name in names.column("name").to_pylist():
        assert name not in failed
    assert "org.apache" not in failed and "SQLSTATE" not in failed


def test_a_fragment_past_its_bound_names_the_product_to_publish_as_parquet(spark_private):
    private = spark_private(route="always", max_fragment_bytes=1_000_000)
    failed = _run(private.uri, "bob", "SELECT count(*) AS n FROM sales.orders")
    assert isinstance(failed, str)
    assert "sales.orders is too big to send to Spark as a fragment" in failed
    assert "max_fragment_bytes = 1,000,000" in failed and "publish it as Parquet" in failed
    parquet = _run(private.uri, "bob", "SELECT count(*) AS n FROM crm.customers")
    assert isinstance(parquet, pa.Table) and parquet.column("n").to_pylist() == [20000]


def test_meshgate_explain_names_the_engine(spark_gateway):
    from typer.testing import CliRunner

    from gateway.cli import app

    result = CliRunner().invoke(
        app,
        [
            "explain",
            "--mesh",
            str(spark_gateway.mesh),
            "--user",
            "alice",
            "SELECT * FROM crm.customers",
        ],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    assert 'spark: [engines.spark] route = "always"' in result.output


def test_spark_substitutes_nothing_from_its_environment(spark_gateway, spark_server):
    """Spark would replace ``${env:NAME}`` in a statement by the server's environment (its
    token among it): the gateway's Spark SQL never lets it."""
    sql = "SELECT '${env:MESHGATE_SPARK_TOKEN}' AS x, '${spark.app.name}' AS y FROM crm.customers LIMIT 1"
    table = _run(spark_gateway.uri, "bob", sql)
    assert isinstance(table, pa.Table), table
    assert table.to_pylist() == [{"x": "${env:MESHGATE_SPARK_TOKEN}", "y": "${spark.app.name}"}]
    assert spark_server.token not in str(table.to_pylist())
