"""The bound-only result schema equals DuckDB's own: what ``relation.limit(0)`` answers
(types as streamed; repeated names made unique, as the gateway announces them)."""

from __future__ import annotations

import duckdb
import pytest

from gateway.engine.arrow_types import ArrowTypeCache

QUERIES = [
    "SELECT 1 AS a, 'x' AS b, 1.5::DECIMAL(15, 2) AS c, DATE '2020-01-01' AS d",
    "SELECT now()::TIMESTAMP AS ts, now() AS tstz, INTERVAL 1 DAY AS i, uuid() AS u, 'a'::BLOB AS bl",
    "SELECT [1, 2] AS l, {'a b': 1, 'c': [1.5]} AS s, MAP {'k': 1} AS m, 1::HUGEINT AS h, 1::UTINYINT AS t",
    "SELECT 'a'::ENUM('a', 'b') AS e, 1::BIT AS bits, 1::TINYINT AS tiny, NULL AS n, 2.5::FLOAT AS f",
    "SELECT * FROM (SELECT 1 AS a, 2 AS b) t JOIN (SELECT 1 AS a, 3 AS b) u ON t.a = u.a",
    "SELECT 1 AS A, 2 AS a, 3 AS a_1",
    "SELECT count(*), sum(x), avg(x), list(x) FROM range(3) r(x)",
]


@pytest.fixture
def cursor():
    con = duckdb.connect()
    yield con
    con.close()


@pytest.mark.parametrize("sql", QUERIES)
def test_schema_equals_duckdbs_own(cursor, sql):
    cache = ArrowTypeCache()
    expected = cursor.sql(sql).limit(0).to_arrow_table().schema
    assert expected.types == cursor.sql(sql).to_arrow_table().schema.types
    assert cache.schema(cursor, cursor.sql(sql)) == expected
    assert cache.schema(cursor, cursor.sql(sql)) == expected  # answered from the cache


def test_parameters_bind_the_types(cursor):
    cache = ArrowTypeCache()
    for parameters in ([1, "x"], [2**40, 1.5], [None, b"\x00"]):
        relation = cursor.sql("SELECT ? AS p, ? AS q", params=parameters)
        assert (
            cache.schema(cursor, relation)
            == cursor.sql("SELECT ? AS p, ? AS q", params=parameters).to_arrow_table().schema
        )


def test_the_query_itself_is_not_run(cursor):
    cache = ArrowTypeCache()
    relation = cursor.sql("SELECT error('ran') AS boom")
    assert cache.schema(cursor, relation).names == ["boom"]
    with pytest.raises(duckdb.Error, match="ran"):
        relation.to_arrow_table()


def test_long_type_names_are_learned_each_time_not_kept(cursor):
    """A client can write a struct type of any length (``struct_pack("<200 KB>" := 1)``):
    such a type is answered like any other and not kept."""
    cache = ArrowTypeCache()
    sql = f'SELECT struct_pack("{"k" * 20_000}" := 1) AS s, 1 AS n'
    expected = cursor.sql(sql).limit(0).to_arrow_table().schema
    for _ in range(2):
        assert cache.schema(cursor, cursor.sql(sql)) == expected
    assert len(cache) == 1  # INTEGER only


def test_kept_types_are_bounded(cursor, monkeypatch):
    from gateway.engine import arrow_types

    monkeypatch.setattr(arrow_types, "_KEPT_TYPES", 5)
    cache = ArrowTypeCache()
    for width in range(1, 20):
        sql = f"SELECT 1::DECIMAL({width + 1}, 1) AS d"
        assert (
            cache.schema(cursor, cursor.sql(sql))
            == cursor.sql(sql).limit(0).to_arrow_table().schema
        )
        assert len(cache) <= 5
