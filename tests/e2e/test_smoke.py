"""The gateway answers the ADBC driver and plain pyarrow.flight as a real process."""

from __future__ import annotations

import duckdb
import pyarrow.flight as flight
from support.clients import adbc_connect, flight_client


def test_adbc_query_matches_duckdb_direct(gateway, demo_mesh):
    sql = "SELECT region, count(*) AS n, sum(amount) AS total FROM sales.orders GROUP BY region ORDER BY region"
    with adbc_connect(gateway.uri, "bob") as conn, conn.cursor() as cur:
        cur.execute(sql)
        got = cur.fetch_arrow_table()
    direct = duckdb.connect()
    direct.execute(f"ATTACH '{demo_mesh / 'sales/data/orders.duckdb'}' AS sales (READ_ONLY)")
    expected = direct.sql(sql.replace("sales.orders", "sales.main.orders")).to_arrow_table()
    assert got.equals(expected)


def test_pyarrow_flight_raw_sql(gateway):
    client, options = flight_client(gateway.uri, "bob")
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(b"SELECT count(*) AS n FROM crm.customers"), options
    )
    frame = client.do_get(info.endpoints[0].ticket, options).read_pandas()
    assert frame["n"].tolist() == [20_000]
