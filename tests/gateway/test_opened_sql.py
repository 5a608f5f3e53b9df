"""``opened_sql`` (what a domain node streams): the query is bound once, its schema is the
one its batches carry (ENUMs decoded), and a failure to bind is recorded and raised."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from gateway.catalog.catalog import Catalog, load_catalog
from gateway.config import EngineSettings
from gateway.engine.streaming import opened_sql, result_schema
from gateway.errors import MeshgateError


@pytest.fixture(scope="module")
def catalog(demo_mesh: Path) -> Iterator[Catalog]:
    catalog = load_catalog(demo_mesh, EngineSettings(batch_rows=1_000))
    yield catalog
    catalog.engine.close()


def _opened(catalog: Catalog, sql: str, parameters: tuple = ()) -> tuple:
    ends: list[tuple] = []
    schema, batches = opened_sql(
        catalog.engine,
        sql,
        parameters,
        lambda: False,
        lambda stats, outcome, error: ends.append((stats.rows, outcome, error)),
    )
    return schema, list(batches), ends


def test_the_schema_is_the_planned_one_and_the_batches_carry_it(catalog: Catalog) -> None:
    sql = (
        "SELECT order_id, CAST(region AS ENUM('APAC', 'EU', 'US')) AS region "
        "FROM sales.orders WHERE order_id <= $1 ORDER BY order_id"
    )
    schema, batches, ends = _opened(catalog, sql, (2_500,))
    assert schema == result_schema(catalog, sql, (2_500,), ())
    assert schema.field("region").type == pa.string()  # the ENUM, decoded
    assert len(batches) > 1 and all(batch.schema == schema for batch in batches)
    assert pa.Table.from_batches(batches).column("order_id").to_pylist() == list(range(1, 2_501))
    assert ends == [(2_500, "ok", None)]


def test_an_empty_result_keeps_its_schema(catalog: Catalog) -> None:
    schema, batches, ends = _opened(catalog, "SELECT order_id FROM sales.orders WHERE false")
    assert schema == pa.schema([("order_id", pa.int64())])
    assert batches == [] and ends == [(0, "ok", None)]


def test_a_query_that_cannot_bind_is_recorded_and_raised(catalog: Catalog) -> None:
    ends: list[tuple] = []
    with pytest.raises(MeshgateError, match="no_such_column"):
        opened_sql(
            catalog.engine,
            "SELECT no_such_column FROM sales.orders",
            (),
            lambda: False,
            lambda stats, outcome, error: ends.append((outcome, error)),
        )
    assert [outcome for outcome, _ in ends] == ["error"]


def test_the_query_runs_only_when_its_first_batch_is_asked_for(catalog: Catalog) -> None:
    """Bound, not run: a failure only running can find comes with the first batch, after
    the schema went out (a node's client learns the schema, and can cancel, first)."""
    ends: list[str] = []
    schema, batches = opened_sql(
        catalog.engine,
        "SELECT CAST('x' || order_id AS INTEGER) AS n FROM sales.orders",
        (),
        lambda: False,
        lambda stats, outcome, error: ends.append(outcome),
    )
    assert schema == pa.schema([("n", pa.int32())]) and ends == []
    with pytest.raises(MeshgateError):
        next(batches)
    assert ends == ["error"]
