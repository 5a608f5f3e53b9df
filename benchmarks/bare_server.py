"""A minimal pyarrow.flight server: the transport baselines of the large-result benchmark.

No Flight SQL, no authentication, no governance. The command of a descriptor (and the
ticket it answers) is the SQL text itself.

- ``--mode duckdb``: each DoGet runs the SQL on DuckDB (the same views over the same files
  as the gateway, same threads and memory limit) and streams ``to_arrow_reader(batch_rows)``
  straight from C++ (``RecordBatchStream``): what any server built on DuckDB's Arrow reader
  gets at best (R2's baseline).
- ``--mode memory``: ``--preload SQL`` is materialised into an Arrow table at start-up and
  every DoGet streams that table from memory: the transport ceiling.

Run: ``python -m benchmarks.bare_server --mesh DIR --port P --mode duckdb``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.flight as flight


class BareServer(flight.FlightServerBase):
    def __init__(self, location: str, con: duckdb.DuckDBPyConnection, mode: str,
                 batch_rows: int, table: pa.Table | None) -> None:
        super().__init__(location)
        self._con = con
        self._mode = mode
        self._batch_rows = batch_rows
        self._table = table

    def _relation(self, sql: str) -> duckdb.DuckDBPyRelation:
        return self._con.cursor().sql(sql)

    def get_flight_info(self, context, descriptor):
        if self._mode == "memory":
            schema = self._table.schema
        else:
            schema = self._relation(descriptor.command.decode()).limit(0).to_arrow_table().schema
        endpoint = flight.FlightEndpoint(descriptor.command, [])
        return flight.FlightInfo(schema, descriptor, [endpoint], -1, -1)

    def do_get(self, context, ticket):
        if self._mode == "memory":
            return flight.RecordBatchStream(self._table)
        reader = self._relation(ticket.ticket.decode()).to_arrow_reader(self._batch_rows)
        return flight.RecordBatchStream(reader)

    def list_actions(self, context):
        return []


def main() -> None:
    from benchmarks.data import load_mesh, open_baseline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("duckdb", "memory"), required=True)
    parser.add_argument("--batch-rows", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--preload", help="SQL materialised in memory (mode memory)")
    args = parser.parse_args()
    con = open_baseline(load_mesh(args.mesh), args.threads, args.memory_limit)
    table = None
    if args.mode == "memory":
        if not args.preload:
            parser.error("--mode memory needs --preload SQL")
        loaded = con.sql(args.preload).to_arrow_table()
        table = pa.Table.from_batches(loaded.to_batches(max_chunksize=args.batch_rows), schema=loaded.schema)
    server = BareServer(f"grpc://127.0.0.1:{args.port}", con, args.mode, args.batch_rows, table)
    server.serve()


if __name__ == "__main__":
    main()
