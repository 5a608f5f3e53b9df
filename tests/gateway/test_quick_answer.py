"""``SqlService.answer`` judges which results are quick (read ahead within DoGet, their
schema sent with their first batch): nothing to run, or a small embedded query whose slot
is free; anything else sends its schema first, so its client may cancel before it runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pyarrow.flight as flight
import pytest

from gateway.catalog.state import MeshState
from gateway.config import load_config
from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql import protocol as flightsql
from gateway.flightsql.service import SqlService
from gateway.security.principal import Principal


@pytest.fixture
def service(mesh_copy: Path) -> Iterator[SqlService]:
    yield SqlService(MeshState(mesh_copy, load_config(mesh_copy)))


@pytest.fixture
def bob(mesh_copy: Path) -> Principal:
    settings = load_config(mesh_copy).users["bob"]
    return Principal("bob", tuple(settings.roles), dict(settings.attributes))


def _quick(service: SqlService, bob: Principal, sql: str) -> bool:
    answer = service.answer(bob, sql.encode(), lambda: False)
    quick = answer.quick
    answer.batches.close()  # nothing read: nothing runs
    return quick


def test_small_queries_and_explanations_are_quick(service: SqlService, bob: Principal) -> None:
    assert _quick(service, bob, "SELECT 1")
    assert _quick(service, bob, "SELECT * FROM sales.orders WHERE order_id = 7")
    assert _quick(service, bob, "EXPLAIN SELECT * FROM sales.orders a, sales.orders b")


def test_a_big_estimate_sends_its_schema_first(service: SqlService, bob: Principal) -> None:
    assert not _quick(service, bob, "SELECT * FROM sales.orders a, sales.orders b")


def test_a_query_that_would_queue_sends_its_schema_first(
    service: SqlService, bob: Principal
) -> None:
    """Its first batch waits for a slot: the client gets a reader it may cancel first.
    (Planned first: a ticket whose plan is current needs no planning slot.)"""
    descriptor = flight.FlightDescriptor.for_command(
        flightsql.pack(pb.CommandStatementQuery(query="SELECT 1"))
    )
    tickets = [service.flight_info(bob, descriptor).endpoints[0].ticket.ticket for _ in "ab"]
    probe = service.workload.new_slot(bob, "running", lambda: False)
    with ExitStack() as held:
        while service.workload.has_room_now(probe):
            held.enter_context(service.workload.slot(bob, "running", "SELECT 1"))
        answer = service.answer(bob, tickets[0], lambda: False)
        assert not answer.quick
        answer.batches.close()
    answer = service.answer(bob, tickets[1], lambda: False)
    assert answer.quick
    assert [b.num_rows for b in answer.batches] == [1]
