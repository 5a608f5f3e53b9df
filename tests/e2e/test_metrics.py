"""The Prometheus ``/metrics`` endpoint of a real gateway, scraped after real ADBC queries,
refused logins and tokens, and a broken policy file: each counter moves by exactly what
happened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import flight
from support.clients import CLIENT_ERRORS, adbc_connect
from support.metrics import Scrape, metrics_url, scrape
from support.polling import wait_until
from support.servers import (
    NO_COST_LIMIT,
    Private,
    configure,
    configure_groups,
    copy_mesh,
    start_private,
)

pytestmark = pytest.mark.slow

ORDERS_BY_REGION = "SELECT region, count(*) AS n FROM sales.orders GROUP BY region"
SEVEN_CUSTOMERS = "SELECT customer_id FROM crm.customers ORDER BY customer_id LIMIT 7"
#: Bound and planned fine; fails while running (no region is a number).
FAILS_RUNNING = "SELECT CAST(region AS INTEGER) AS r FROM sales.orders"


@pytest.fixture
def served(demo_mesh: Path, tmp_path: Path) -> Iterator[Private]:
    """A private gateway with ``[metrics] port = 0``."""
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    configure(mesh, "metrics", port=0)
    running = start_private(mesh, tmp_path / "gateway.log")
    try:
        yield running
    finally:
        running.kill()


def url_of(running: Private) -> str:
    return metrics_url(running.events("gateway_started"))


def fetch(uri: str, user: str, sql: str, password: str | None = None) -> pa.Table:
    connection = adbc_connect(uri, user, password)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetch_arrow_table()
    finally:
        connection.close()


def fails(uri: str, user: str, sql: str) -> str:
    with pytest.raises(CLIENT_ERRORS) as info:
        fetch(uri, user, sql)
    return str(info.value)


def delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
    return after.total(name, **labels) - before.total(name, **labels)


def test_metrics_count_each_query_login_and_token_exactly(served: Private):
    url = url_of(served)
    before = scrape(url)

    by_region = fetch(served.uri, "bob", ORDERS_BY_REGION)
    seven = fetch(served.uri, "bob", SEVEN_CUSTOMERS)
    assert seven.num_rows == 7
    assert "sales.orders" in fails(served.uri, "dave", "SELECT * FROM sales.orders")  # denied
    assert "read-only" in fails(served.uri, "bob", "DROP TABLE sales.orders")  # refused
    fails(served.uri, "bob", FAILS_RUNNING)  # failed while running

    client = flight.FlightClient(served.uri)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("alice", "not-her-password")
    bogus = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer not-a-token")])
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(client.list_actions(bogus))
    client.close()

    ended = 3  # two ok, one failed while running
    after = wait_until(
        lambda: (
            (s := scrape(url)).total("meshgate_query_duration_seconds_count")
            - before.total("meshgate_query_duration_seconds_count")
            >= ended
            and s
        ),
        what="the three queries that ran to be counted",
    )
    assert isinstance(after, Scrape)
    counted = "meshgate_queries_total"
    for outcome in ("ok", "denied", "refused", "failed", "timeout", "cancelled"):
        assert before.has(counted, outcome=outcome, group="default")  # at 0 from the start
    assert delta(after, before, counted, outcome="ok", group="default") == 2
    assert delta(after, before, counted, outcome="denied", group="default") == 1
    assert delta(after, before, counted, outcome="refused", group="default") == 1
    assert delta(after, before, counted, outcome="failed", group="default") == 1
    assert delta(after, before, counted, outcome="cancelled") == 0
    assert delta(after, before, counted) == 5

    products = "meshgate_product_queries_total"
    assert delta(after, before, products, product="sales.orders", outcome="ok") == 1
    assert delta(after, before, products, product="crm.customers", outcome="ok") == 1
    assert delta(after, before, products, product="sales.orders", outcome="failed") == 1
    assert delta(after, before, products) == 3  # the refused ones read nothing

    assert delta(after, before, "meshgate_query_duration_seconds_count", group="default") == ended
    assert delta(after, before, "meshgate_query_duration_seconds_sum") > 0
    assert delta(after, before, "meshgate_refused_logins_total") == 1
    assert delta(after, before, "meshgate_refused_tokens_total") == 1

    # Rows and bytes out: what the clients received, and what the audit recorded.
    ends = wait_until(
        lambda: len(e := [r for r in served.audit() if r["event"] == "query_end"]) == ended and e,
        what="the audit's three end records",
    )
    assert isinstance(ends, list)
    rows = delta(after, before, "meshgate_result_rows_total")
    assert rows == sum(end["rows"] for end in ends)
    ok_rows = sum(end["rows"] for end in ends if end["outcome"] == "ok")
    assert ok_rows == by_region.num_rows + seven.num_rows
    assert delta(after, before, "meshgate_result_bytes_total") == sum(end["bytes"] for end in ends)
    assert delta(after, before, "meshgate_result_bytes_total") > 0


def test_metrics_show_the_engine_and_the_process(served: Private):
    now = scrape(url_of(served))
    assert now.value("meshgate_engine_memory_bytes") > 0
    assert now.value("meshgate_engine_spill_bytes") == 0  # nothing spilled yet
    assert now.value("meshgate_process_resident_memory_bytes") > 50 * 1024**2
    assert now.value("meshgate_catalog_problems") == 0
    assert "meshgate_node_up" not in now.names()  # embedded: no nodes


def test_a_withdrawn_product_takes_its_series_with_it(served: Private):
    """A product whose contract is removed leaves ``/metrics`` with the reload: no series
    of a product that is gone grows the scrape for ever; the others stay."""
    url = url_of(served)
    products = "meshgate_product_queries_total"
    fetch(served.uri, "bob", ORDERS_BY_REGION)
    fetch(served.uri, "bob", SEVEN_CUSTOMERS)
    before = scrape(url)
    assert before.value(products, product="crm.customers", outcome="ok") == 1
    assert before.value(products, product="sales.orders", outcome="ok") == 1
    assert before.labels(products, "product") == {"crm.customers", "sales.orders"}
    (served.mesh / "crm" / "customers.odcs.yaml").unlink()
    after = wait_until(
        lambda: "crm.customers" not in (s := scrape(url)).labels(products, "product") and s,
        what="the withdrawn product's series to go",
    )
    assert isinstance(after, Scrape)
    assert after.labels(products, "product") == {"sales.orders"}
    assert after.value(products, product="sales.orders", outcome="ok") == 1


def test_a_rejected_policy_file_is_counted_once_and_shown_until_fixed(served: Private):
    url = url_of(served)
    assert scrape(url).value("meshgate_policy_reload_failures_total") == 0
    policy = served.mesh / "crm" / "policy.csv"
    good = policy.read_text(encoding="utf-8")
    policy.write_text(good + "p, marketing, crm.customers.email, mask, allow, no_such_mask\n")
    broken = wait_until(
        lambda: (s := scrape(url)).value("meshgate_policy_files_rejected") == 1 and s,
        what="the broken file to be counted",
    )
    assert isinstance(broken, Scrape)
    assert broken.value("meshgate_policy_reload_failures_total") == 1
    policy.write_text(good + "# fixed\n", encoding="utf-8")
    fixed = wait_until(
        lambda: (s := scrape(url)).value("meshgate_policy_files_rejected") == 0 and s,
        what="the fixed file to be in force",
    )
    assert isinstance(fixed, Scrape)
    assert fixed.value("meshgate_policy_reload_failures_total") == 1


def test_no_metrics_section_no_endpoint(demo_mesh: Path, tmp_path: Path):
    running = start_private(copy_mesh(demo_mesh, tmp_path / "mesh"), tmp_path / "gateway.log")
    try:
        (started,) = running.events("gateway_started")
        assert started["metrics"] is None
        assert "Prometheus metrics" not in running.log()
    finally:
        running.kill()


#: About 2.2 M rows sorted: more than 40 MB, so DuckDB spills the sort to disk.
SPILLING_SORT = (
    "SELECT a.order_id, b.order_id AS o2, a.amount FROM sales.orders a "
    "JOIN sales.orders b ON a.customer_id = b.customer_id ORDER BY a.amount, b.order_id"
)


def test_spill_and_engine_memory_follow_a_query_that_spills(demo_mesh: Path, tmp_path: Path):
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    configure(mesh, "engine", memory_limit="40MB")
    configure(mesh, "metrics", port=0)
    configure_groups(mesh, **NO_COST_LIMIT)  # the spilling query is the subject: admit it
    running = start_private(mesh, tmp_path / "gateway.log")
    try:
        url = url_of(running)
        assert scrape(url).value("meshgate_engine_spill_bytes") == 0
        client, options = running.client("bob")
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(SPILLING_SORT.encode()), options
        )
        reader = client.do_get(info.endpoints[0].ticket, options)
        rows = reader.read_chunk().data.num_rows  # sorted (and spilled); the rest waits
        during = scrape(url)
        assert during.value("meshgate_engine_spill_bytes") > 1024**2
        assert during.value("meshgate_engine_memory_bytes") > 1024**2
        rows += sum(chunk.data.num_rows for chunk in reader)
        client.close()
        assert rows > 2_000_000
        assert wait_until(
            lambda: scrape(url).value("meshgate_engine_spill_bytes") == 0,
            what="the spill files removed once the query ended",
        )
    finally:
        running.kill()
