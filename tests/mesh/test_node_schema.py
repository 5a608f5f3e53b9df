"""A node plans a ticket's result schema with each long key list cut to values DuckDB
types the same way (``gateway.mesh.node._typed_alike``): the schema is the one the full
list gives, whether or not the SQL casts the list."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from gateway.mesh.node import _typed_alike

LISTS = [
    list(range(-5, 40_000)),
    [1, 2, 2**40, 7],
    [3, 1, -(2**63), 2**63 - 1],
    [0, 2**64 - 1, 5],
    ["a", "bb", "ccc"],
    [dt.date(2024, 1, d) for d in range(1, 20)],
    [1.5, 2.25, 3.0],
    [1, "a", 2],
]


@pytest.mark.parametrize("values", LISTS, ids=lambda v: type(v[0]).__name__ + str(len(v)))
def test_cut_lists_bind_as_the_full_ones(values: list) -> None:
    (cut,) = _typed_alike((values,))
    assert cut == values or len(cut) <= 2
    with duckdb.connect() as con:
        types = [str(con.sql("SELECT $1 AS x", params=[v]).types) for v in (cut, values)]
        assert types[0] == types[1]
