"""Clients read every endpoint of a FlightInfo: a split scan (mesh mode, ``split_endpoints``)
answers with one endpoint per partition, and reading only the first silently drops rows.

An in-process Flight server stands in for the gateway: three endpoints, one per partition.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from benchmarks.launch import REPO
from gateway.client import connect

PARTITIONS = [pa.table({"n": pa.array(range(s, s + 5), pa.int64())}) for s in (0, 5, 10)]
ALL_ROWS = list(range(15))


class _Bearer(flight.ServerMiddleware):
    def __init__(self, handshake: bool) -> None:
        self._handshake = handshake

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": "Bearer token"} if self._handshake else {}


class _BearerFactory(flight.ServerMiddlewareFactory):
    def start_call(self, info: flight.CallInfo, headers: dict) -> _Bearer:
        return _Bearer(info.method == flight.FlightMethod.HANDSHAKE)


class _NoAuth(flight.ServerAuthHandler):
    def authenticate(
        self, outgoing: flight.ServerAuthSender, incoming: flight.ServerAuthReader
    ) -> None:
        return None

    def is_valid(self, token: bytes) -> str:
        return ""


class SplitServer(flight.FlightServerBase):
    """Answers any command with one endpoint per partition of ``PARTITIONS``."""

    def __init__(self) -> None:
        super().__init__(
            "grpc://127.0.0.1:0", auth_handler=_NoAuth(), middleware={"auth": _BearerFactory()}
        )

    def get_flight_info(self, context, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        endpoints = [flight.FlightEndpoint(str(i).encode(), []) for i in range(len(PARTITIONS))]
        return flight.FlightInfo(PARTITIONS[0].schema, descriptor, endpoints, -1, -1)

    def do_get(self, context, ticket: flight.Ticket) -> flight.RecordBatchStream:
        return flight.RecordBatchStream(PARTITIONS[int(ticket.ticket)])


@pytest.fixture
def server() -> Iterator[str]:
    running = SplitServer()
    try:
        yield f"grpc://127.0.0.1:{running.port}"
    finally:
        running.shutdown()


def test_gateway_client_reads_every_endpoint(server: str) -> None:
    with connect(server, "bob", "bob") as mesh:
        table = mesh.query_arrow("SELECT * FROM sales.orders")
        assert sorted(table.column("n").to_pylist()) == ALL_ROWS
        assert sorted(mesh.query_pandas("SELECT * FROM sales.orders")["n"]) == ALL_ROWS
        reader = mesh.query_reader("SELECT * FROM sales.orders")
        assert reader.schema == PARTITIONS[0].schema
        assert sum(batch.num_rows for batch in reader) == len(ALL_ROWS)


def test_readme_pyarrow_flight_example_reads_every_endpoint(server: str) -> None:
    readme = (Path(REPO) / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Plain `pyarrow.flight` sends raw SQL") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "grpc://127.0.0.1:8815" in code
    scope: dict[str, object] = {}
    exec(code.replace("grpc://127.0.0.1:8815", server), scope)
    assert sorted(scope["frame"]["n"]) == ALL_ROWS
