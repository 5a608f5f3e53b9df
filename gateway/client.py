"""A tiny client for pandas and Arrow users who do not want to learn Flight.

from gateway.client import connect
mesh = connect("grpc://127.0.0.1:8815", "bob", "bob")
frame = mesh.query_pandas("SELECT * FROM sales.orders LIMIT 5")
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight


class MeshClient:
    """A connection to a Meshgate server, authenticated as one user."""

    def __init__(self, uri: str, user: str, password: str) -> None:
        self._client = flight.FlightClient(uri)
        header = self._client.authenticate_basic_token(user, password)
        self._options = flight.FlightCallOptions(headers=[header])

    def query_reader(self, sql: str) -> pa.RecordBatchReader:
        """Stream the result of ``sql`` batch by batch: every endpoint's batches, in order.

        In mesh mode a split scan answers with one endpoint per partition; each ticket is
        sent back to the gateway, which relays it from the domain's node."""
        info = self._client.get_flight_info(
            flight.FlightDescriptor.for_command(sql.encode("utf-8")), self._options
        )
        endpoints = list(info.endpoints)
        if not endpoints:
            return pa.RecordBatchReader.from_batches(info.schema, iter(()))
        first = self._client.do_get(endpoints[0].ticket, self._options)

        def batches() -> Iterator[pa.RecordBatch]:
            readers = itertools.chain(
                [first], (self._client.do_get(e.ticket, self._options) for e in endpoints[1:])
            )
            for reader in readers:
                for chunk in reader:
                    yield chunk.data

        return pa.RecordBatchReader.from_batches(first.schema, batches())

    def query_arrow(self, sql: str) -> pa.Table:
        """The whole result of ``sql`` as an Arrow table."""
        return self.query_reader(sql).read_all()

    def query_pandas(self, sql: str):
        """The whole result of ``sql`` as a pandas DataFrame (needs pandas)."""
        return self.query_reader(sql).read_pandas()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(uri: str, user: str, password: str) -> MeshClient:
    """Connect and authenticate; raises ``pyarrow.flight.FlightUnauthenticatedError`` when wrong."""
    return MeshClient(uri, user, password)
