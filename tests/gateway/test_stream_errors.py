"""An error raised while a result streams reaches the client as a clean Flight error: the
gateway's message, never pyarrow's framing of a Python exception (its class names)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import adbc_driver_manager
import pytest
from pyarrow import flight
from support.clients import adbc_connect, error_text, run_sql
from support.servers import NO_COST_LIMIT, Private, private_gateway

#: runs for days: the 1 s query time limit stops it once its result has begun streaming
RUNAWAY = "SELECT count(*) FROM sales.orders a, sales.orders b, sales.orders c"
TIME_LIMIT = "the query exceeded the time limit of 1 s"
INTERNALS = ("pyarrow.lib", "Python exception", "ArrowInvalid", "Traceback")


@pytest.fixture(scope="module")
def limited(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_gateway(
        demo_mesh,
        tmp_path_factory.mktemp("stream-errors"),
        engine={"query_timeout_seconds": 1},
        workload=NO_COST_LIMIT,
    ) as running:
        yield running


def _clean(text: str) -> None:
    assert TIME_LIMIT in text, text
    for internal in INTERNALS:
        assert internal not in text, text


def test_pyarrow_flight_client_gets_the_time_limit_as_a_clean_flight_error(
    limited: Private,
) -> None:
    with pytest.raises(flight.FlightError) as caught:
        run_sql(limited, "alice", RUNAWAY, timeout=120)
    _clean(error_text(caught.value))


def test_adbc_client_gets_the_time_limit_as_a_clean_error(limited: Private) -> None:
    connection = adbc_connect(limited.uri, "alice")
    try:
        cursor = connection.cursor()
        with pytest.raises(adbc_driver_manager.Error) as caught:
            cursor.execute(RUNAWAY)
            cursor.fetch_arrow_table()
        _clean(error_text(caught.value))
        cursor.close()
    finally:
        connection.close()
