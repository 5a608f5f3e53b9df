"""``answer_stream``: quick one-batch results go out whole, others stream, errors keep
their place; read by a real pyarrow.flight client from a server on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from gateway.flightsql.server import answer_stream

SCHEMA = pa.schema([("x", pa.int64())])


def _batch(start: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(start, start + 3), pa.int64())], schema=SCHEMA)


class _Server(flight.FlightServerBase):
    def __init__(
        self,
        results: Callable[[], tuple[pa.Schema, Iterator[pa.RecordBatch]]],
        quick: bool = True,
    ):
        super().__init__("grpc://127.0.0.1:0")
        self.results = results
        self.quick = quick
        self.streams: list[flight.FlightDataStream] = []

    def do_get(self, context, ticket):
        stream = answer_stream(*self.results(), self.quick)
        self.streams.append(stream)
        return stream


def _read(results) -> tuple[flight.FlightDataStream, tuple[list, flight.FlightError | None]]:
    server = _Server(results)
    client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
    try:
        reader = client.do_get(flight.Ticket(b""))
        chunks = []
        try:
            for chunk in reader:
                chunks.append(chunk.data)
        except flight.FlightError as exc:
            return server.streams[0], (chunks, exc)
        return server.streams[0], (chunks, None)
    finally:
        client.close()
        server.shutdown()


def test_one_batch_goes_out_whole_without_a_generator() -> None:
    stream, (chunks, error) = _read(lambda: (SCHEMA, iter([_batch(0)])))
    assert isinstance(stream, flight.RecordBatchStream)
    assert error is None
    assert pa.Table.from_batches(chunks).column("x").to_pylist() == [0, 1, 2]


def test_an_empty_result_keeps_its_schema_even_with_unions() -> None:
    union = pa.schema([("v", pa.dense_union([pa.field("a", pa.int64())]))])
    stream, (chunks, error) = _read(lambda: (union, iter([])))
    assert isinstance(stream, flight.RecordBatchStream)
    assert (chunks, error) == ([], None)


def test_longer_results_stream_every_batch_in_order() -> None:
    stream, (chunks, error) = _read(lambda: (SCHEMA, iter([_batch(0), _batch(3), _batch(6)])))
    assert isinstance(stream, flight.GeneratorStream)
    assert error is None
    assert pa.Table.from_batches(chunks).column("x").to_pylist() == list(range(9))


@pytest.mark.parametrize("failing_batch", [1, 2])
def test_an_error_reaches_the_client_after_the_batches_before_it(failing_batch: int) -> None:
    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(3):
            if i == failing_batch:
                raise flight.FlightServerError("the query exceeded the time limit of 1 s")
            yield _batch(3 * i)

    _, (chunks, error) = _read(lambda: (SCHEMA, batches()))
    assert pa.Table.from_batches(chunks, SCHEMA).column("x").to_pylist() == list(
        range(3 * failing_batch)
    )
    assert error is not None and "time limit of 1 s" in str(error)


def test_a_result_not_quick_sends_its_schema_before_its_first_batch_exists() -> None:
    """The client has its reader (and may cancel) while the first batch is computed."""
    reader_open = threading.Event()
    waited: list[bool] = []

    def batches() -> Iterator[pa.RecordBatch]:
        waited.append(reader_open.wait(30))
        yield _batch(0)

    server = _Server(lambda: (SCHEMA, batches()), quick=False)
    client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
    try:
        reader = client.do_get(flight.Ticket(b""))
        reader_open.set()
        assert reader.read_all().column("x").to_pylist() == [0, 1, 2]
    finally:
        client.close()
        server.shutdown()
    assert waited == [True]
    assert isinstance(server.streams[0], flight.GeneratorStream)
