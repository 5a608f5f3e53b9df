"""A minimal pyarrow.flight server: the transport baselines of the large-result benchmark.

No Flight SQL, no authentication, no governance. The command of a descriptor (and the
ticket it answers) is the SQL text itself.

- ``--mode duckdb``: each DoGet runs the SQL on DuckDB (the same views over the same files
  as the gateway, same threads and memory limit) and streams ``to_arrow_reader(batch_rows)``
  straight from C++ (``RecordBatchStream``): what any server built on DuckDB's Arrow reader
  gets at best (R2's baseline).
- ``--mode memory``: ``--preload SQL`` is materialised into an Arrow table at start-up and
  every DoGet streams that table from memory: the transport ceiling.
- ``--mode flightsql``: the least Flight SQL an ADBC client needs (GetSqlInfo,
  CreatePreparedStatement, GetFlightInfo, DoGet, ClosePreparedStatement) over the same
  DuckDB, the statement handle being the SQL itself: what ADBC costs against a Python
  Flight SQL server that does nothing else (no auth, no governance, no audit).
- ``--submit``: DoGet runs the SQL through DuckDB 2's private ``_seam.submit``, as the
  gateway runs a planned statement (``Engine.arrow_reader``), instead of
  ``cursor.sql(q).to_arrow_reader()``, which parses and binds it once more first: the floor
  with the gateway's own DuckDB path.

Run: ``python -m benchmarks.bare_server --mesh DIR --port P --mode duckdb``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.flight as flight

from gateway.engine.database import Engine
from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql import metadata
from gateway.flightsql import protocol as flightsql
from gateway.flightsql.schemas import GET_SQL_INFO


class BareServer(flight.FlightServerBase):
    def __init__(
        self,
        location: str,
        con: duckdb.DuckDBPyConnection,
        mode: str,
        batch_rows: int,
        table: pa.Table | None,
        submit: bool = False,
    ) -> None:
        super().__init__(location)
        self._submit = submit
        self._con = con
        self._mode = mode
        self._batch_rows = batch_rows
        self._table = table
        self._schemas: dict[bytes, pa.Schema] = {}

    def _relation(self, sql: str) -> duckdb.DuckDBPyRelation:
        return self._con.cursor().sql(sql)

    def get_flight_info(self, context, descriptor):
        if self._mode == "flightsql":
            return self._sql_flight_info(descriptor)
        if self._mode == "memory":
            schema = self._table.schema
        else:
            schema = self._relation(descriptor.command.decode()).limit(0).to_arrow_table().schema
        endpoint = flight.FlightEndpoint(descriptor.command, [])
        return flight.FlightInfo(schema, descriptor, [endpoint], -1, -1)

    def do_get(self, context, ticket):
        if self._mode == "flightsql":
            command = flightsql.decode(ticket.ticket)
            if isinstance(command, pb.CommandGetSqlInfo):
                return flight.RecordBatchStream(
                    pa.Table.from_batches([metadata.sql_info(list(command.info))])
                )
            ticket = flight.Ticket(command.statement_handle)
        if self._mode == "memory":
            return flight.RecordBatchStream(self._table)
        sql = ticket.ticket.decode()
        if self._submit:
            reader = Engine.arrow_reader(self._con.cursor(), sql, (), self._batch_rows)
        else:
            reader = self._relation(sql).to_arrow_reader(self._batch_rows)
        return flight.RecordBatchStream(reader)

    def list_actions(self, context):
        return []

    # -- --mode flightsql --------------------------------------------------------------

    def _schema(self, sql: bytes) -> pa.Schema:
        """The result schema, computed once per statement (as the gateway's plan cache does)."""
        if sql not in self._schemas:
            self._schemas[sql] = self._relation(sql.decode()).limit(0).to_arrow_table().schema
        return self._schemas[sql]

    def _sql_flight_info(self, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        command = flightsql.decode(descriptor.command)
        if isinstance(command, pb.CommandGetSqlInfo):
            endpoint = flight.FlightEndpoint(descriptor.command, [])
            return flight.FlightInfo(GET_SQL_INFO, descriptor, [endpoint], -1, -1)
        if isinstance(command, pb.CommandStatementQuery):
            sql = command.query.encode()
        else:
            sql = command.prepared_statement_handle
        ticket = flightsql.pack(pb.TicketStatementQuery(statement_handle=sql))
        return flight.FlightInfo(
            self._schema(sql), descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1
        )

    def do_action(self, context, action):
        body = action.body.to_pybytes()
        if action.type == flightsql.ACTION_CREATE_PREPARED_STATEMENT:
            sql = flightsql.decode_as(body, pb.ActionCreatePreparedStatementRequest).query.encode()
            result = pb.ActionCreatePreparedStatementResult(
                prepared_statement_handle=sql,
                dataset_schema=self._schema(sql).serialize().to_pybytes(),
                parameter_schema=pa.schema([]).serialize().to_pybytes(),
            )
            return [flight.Result(pa.py_buffer(flightsql.pack(result)))]
        if action.type == flightsql.ACTION_CLOSE_PREPARED_STATEMENT:
            return []
        raise NotImplementedError(action.type)


def main() -> None:
    from benchmarks.data import load_mesh, open_baseline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("duckdb", "memory", "flightsql"), required=True)
    parser.add_argument("--batch-rows", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--preload", help="SQL materialised in memory (mode memory)")
    parser.add_argument(
        "--submit",
        action="store_true",
        help="run statements as the gateway runs a planned one (DuckDB's _seam.submit)",
    )
    parser.add_argument(
        "--setup",
        action="append",
        help="instead of the benchmark mesh's baseline: an in-memory DuckDB set up by these "
        "statements (repeatable; e.g. a view over one Parquet file)",
    )
    args = parser.parse_args()
    if args.setup:
        con = duckdb.connect(config={"threads": args.threads, "memory_limit": args.memory_limit})
        for statement in args.setup:
            con.execute(statement)
    else:
        con = open_baseline(load_mesh(args.mesh), args.threads, args.memory_limit)
    table = None
    if args.mode == "memory":
        if not args.preload:
            parser.error("--mode memory needs --preload SQL")
        loaded = con.sql(args.preload).to_arrow_table()
        table = pa.Table.from_batches(
            loaded.to_batches(max_chunksize=args.batch_rows), schema=loaded.schema
        )
    server = BareServer(
        f"grpc://127.0.0.1:{args.port}", con, args.mode, args.batch_rows, table, args.submit
    )
    server.serve()


if __name__ == "__main__":
    main()
