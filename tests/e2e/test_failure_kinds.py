"""Issue 14: a query's failure is told to its user as what it is (memory, spill limit, time
limit, cancel, broken data), and only broken data marks a product unhealthy.

Each condition is real, on a private gateway with low limits (a 64MB memory limit, an 8MB
spill limit, a 5 s time limit) and through ADBC. Before, DuckDB's out-of-memory and spill
errors (whose text mentions blocks and files) were reported as "the data of sales.orders
could not be read" and marked the products unhealthy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clients import CLIENT_ERRORS, adbc_connect, product_health, run
from support.logs import log_records, wait_for_query_log
from support.servers import NO_COST_LIMIT, Private, private_gateway

pytestmark = pytest.mark.slow

ALL_OK = {"crm.customers": "ok", "logistics.shipments": "ok", "sales.orders": "ok"}
#: two million names in one list: over the memory limit, and a list cannot spill
MEMORY_HOG = "SELECT list(c.name) FROM crm.customers c, crm.customers d WHERE d.customer_id < 100"
#: 40 million joined rows to sort: spills past 8MB
SPILLER = (
    "SELECT a.order_id, b.order_id AS other, a.amount FROM sales.orders a "
    "JOIN sales.orders b ON a.customer_id = b.customer_id ORDER BY a.amount, b.amount"
)
#: runs for minutes: 1.3e10 joined rows to count
LONG_COUNT = "SELECT count(*) FROM sales.orders a JOIN sales.orders b ON a.region = b.region"
DATA_WORDS = ("could not be read", "corrupt", "unhealthy")


@pytest.fixture(scope="module")
def limited(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    engine = {"memory_limit": "64MB", "max_spill_size": "8MB", "query_timeout_seconds": 5}
    with private_gateway(
        demo_mesh,
        tmp_path_factory.mktemp("limited"),
        engine=engine,
        workload=NO_COST_LIMIT,  # queries that run out of memory or time are the subject
    ) as running:
        assert product_health(running.uri) == ALL_OK
        yield running


def _fails(private: Private, user: str, sql: str) -> str:
    with adbc_connect(private.uri, user) as conn:
        outcome = run(conn, sql)
    assert outcome.refused, f"{sql} answered: {outcome.describe()}"
    return outcome.error


def test_out_of_memory_names_the_memory_limit_and_marks_nothing(limited: Private) -> None:
    error = _fails(limited, "bob", MEMORY_HOG)
    assert "needs more memory than the engine's limit of 64MB" in error, error
    assert "add filters" in error
    assert not any(word in error for word in DATA_WORDS), error
    assert "Out of Memory Error" not in error  # DuckDB's own text stays in the server log
    assert product_health(limited.uri) == ALL_OK


def test_spill_limit_names_the_spill_limit_and_marks_nothing(limited: Private) -> None:
    error = _fails(limited, "bob", SPILLER)
    assert "spill limit of 8MB" in error, error
    assert "add filters" in error
    assert not any(word in error for word in DATA_WORDS), error
    assert "max_temp_directory_size" not in error
    assert product_health(limited.uri) == ALL_OK


def test_out_of_memory_of_a_filtered_user_quotes_no_data(limited: Private) -> None:
    """alice's out-of-memory error says nothing of the rows she may not see."""
    error = _fails(
        limited,
        "alice",
        "SELECT list(o.region || a.region) FROM sales.orders o, sales.orders a "
        "WHERE a.order_id < 100",
    )
    assert "needs more memory than the engine's limit of 64MB" in error, error
    assert not any(region in error for region in ("US", "APAC")), error
    assert product_health(limited.uri) == ALL_OK


def test_time_limit_names_the_limit_and_marks_nothing(limited: Private) -> None:
    error = _fails(limited, "bob", LONG_COUNT)
    assert "exceeded the time limit of 5 s" in error, error
    assert not any(word in error for word in DATA_WORDS), error
    assert product_health(limited.uri) == ALL_OK


def test_cancel_marks_nothing(limited: Private) -> None:
    before = len(log_records(limited.log(), "query"))
    conn = adbc_connect(limited.uri, "erin")
    cursor = conn.cursor()
    failed: list[BaseException] = []

    def count() -> None:
        try:
            cursor.execute(LONG_COUNT)
            cursor.fetchall()
        except CLIENT_ERRORS as exc:
            failed.append(exc)

    worker = threading.Thread(target=count, daemon=True)
    worker.start()
    try:
        time.sleep(1.0)  # the engine is now busy counting
        assert worker.is_alive(), f"the count ended before it was cancelled: {failed}"
        cursor.adbc_cancel()
        worker.join(10)
        assert not worker.is_alive(), "adbc_cancel() did not end the query"
        line = wait_for_query_log(
            limited, user="erin", after=before, timeout=10, outcomes={"cancelled", "disconnected"}
        )
    finally:
        cursor.close()
        conn.close()
    assert failed, "the cancelled query returned a result"
    assert line is not None, "no 'query' log line of a stopped query"
    assert product_health(limited.uri) == ALL_OK


def test_a_truncated_parquet_file_marks_its_product_unhealthy(
    demo_mesh: Path, tmp_path: Path
) -> None:
    with private_gateway(demo_mesh, tmp_path) as running:
        path = running.mesh / "crm/data/customers.parquet"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        error = _fails(
            running,
            "bob",
            "SELECT c.name, sum(o.amount) FROM crm.customers c "
            "JOIN sales.orders o USING (customer_id) GROUP BY c.name",
        )
        assert "the data of crm.customers could not be read" in error, error
        assert "magic" not in error and str(path) not in error
        health = product_health(running.uri)
    assert health["crm.customers"].startswith("unhealthy"), health
    assert health["sales.orders"] == "ok" and health["logistics.shipments"] == "ok", health
