"""Private or unstable library APIs the code relies on. When a dependency upgrade (see
constraints.txt and .ci/lock) removes or changes one, these fail first, naming the API,
where it is used and what breaks, instead of a silent slowdown or a puzzling failure
somewhere else."""

from __future__ import annotations

import json

import casbin
import duckdb
import pyarrow as pa

from gateway.engine import streaming
from gateway.engine.streaming import StreamedTable
from policies.decider import _model

DUCKDB_USE = (
    "gateway/engine/streaming.py registers a federated fragment's stream through DuckDB's "
    "private DuckDBPyConnection._register_arrow_source with a subclass of "
    "duckdb._sources.pyarrow.PyArrowReaderSource whose rows() gives the planner the "
    "stream's estimated size. Without it streams are registered with no estimate and DuckDB "
    "plans them as one row: a big stream becomes the build side of hash joins, held whole. "
    f"Installed: duckdb {duckdb.__version__}; pinned in constraints.txt"
)


def test_duckdb_private_arrow_source_registration_is_there():
    assert hasattr(duckdb.DuckDBPyConnection, "_register_arrow_source"), (
        f"DuckDBPyConnection._register_arrow_source is gone. {DUCKDB_USE}"
    )
    try:
        from duckdb._sources.pyarrow import PyArrowReaderSource
    except ImportError as exc:
        raise AssertionError(
            f"duckdb._sources.pyarrow.PyArrowReaderSource: {exc}. {DUCKDB_USE}"
        ) from exc
    assert callable(getattr(PyArrowReaderSource, "rows", None)), (
        f"PyArrowReaderSource has no rows() hook to override. {DUCKDB_USE}"
    )
    assert streaming._EstimatedStream is not None, (
        f"streaming.py fell back to registering streams without an estimate. {DUCKDB_USE}"
    )


def test_duckdb_plans_a_registered_stream_with_its_estimate():
    table = pa.table({"n": list(range(10))})
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    connection = duckdb.connect()
    try:
        streaming._register(connection, "fragment", StreamedTable(reader, 123_456))
        plan = json.loads(connection.sql("SELECT * FROM fragment").explain(format="json"))
        assert connection.execute("SELECT count(*) FROM fragment").fetchall() == [(10,)]
    finally:
        connection.close()
    estimates = [
        node.get("extra_info", {}).get("Estimated Cardinality")
        for node in _nodes(plan)
        if "ARROW_SCAN" in node.get("name", "")
    ]
    assert estimates == ["123456"], (
        f"DuckDB no longer plans the stream with the estimate its source reports "
        f"(scan estimates: {estimates}). {DUCKDB_USE}"
    )


def _nodes(plan: list[dict]):
    for node in plan:
        yield node
        yield from _nodes(node.get("children", []))


SUBMIT_USE = (
    "gateway/engine/database.py (Engine.arrow_reader) runs every planned statement through "
    "DuckDB 2's private duckdb._seam.submit(connection, sql, values, 'stream', batch_rows)"
    ".arrow_reader(), which the relation API executes with; without it each statement is "
    "parsed and bound once more by cursor.sql() (0.2-0.6 ms a statement in the server). "
    f"Installed: duckdb {duckdb.__version__}; pinned in constraints.txt"
)


def test_duckdb_private_submit_streams_a_statement_with_its_parameters():
    from gateway.engine import database

    assert database._submit is not None, f"duckdb._seam.submit is gone. {SUBMIT_USE}"
    connection = duckdb.connect()
    try:
        connection.execute("CREATE TABLE t AS SELECT range AS k FROM range(10)")
        reader = database.Engine.arrow_reader(
            connection, "SELECT k, k * $1 AS twice FROM t WHERE k < $2 ORDER BY k", (2, 4), 2
        )
        assert isinstance(reader, pa.RecordBatchReader), f"not a RecordBatchReader. {SUBMIT_USE}"
        batches = list(reader)
    finally:
        connection.close()
    assert [b.num_rows for b in batches] == [2, 2], f"batch sizes ignored. {SUBMIT_USE}"
    assert pa.Table.from_batches(batches).to_pydict() == {
        "k": [0, 1, 2, 3],
        "twice": [0, 2, 4, 6],
    }, f"wrong rows. {SUBMIT_USE}"


def test_casbin_enforces_the_policy_lines_refilled_in_place():
    use = (
        "policies/decider.py refills the list casbin.Enforcer.get_model()['p']['p'].policy in "
        "place with the candidate rules of each request, relying on enforce() reading that "
        "very list (pycasbin, pinned in constraints.txt)"
    )
    enforcer = casbin.Enforcer(_model())
    enforcer.add_function("objectMatch", lambda request, pattern: request == pattern)
    lines = enforcer.get_model()["p"]["p"].policy
    assert isinstance(lines, list), f"the model's p lines are no longer a list. {use}"
    lines[:] = [["alice", "sales.orders", "read", "allow", ""]]
    assert enforcer.enforce("alice", "sales.orders", "read"), f"a refilled allow is ignored. {use}"
    lines[:] = []
    assert not enforcer.enforce("alice", "sales.orders", "read"), (
        f"enforce() decides on lines that were removed. {use}"
    )
