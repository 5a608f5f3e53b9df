"""Every built-in mask gives the same value on Spark as on DuckDB, for every column type
the demo and TPC-H products use, so that a masked join key joins alike on both engines;
where Spark cannot, the mask refuses the Spark route instead of computing otherwise."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest
from sqlglot import exp

from gateway.planning.spark_sql import spark_sql
from gateway.spark.connect import SparkConnect
from policies.errors import PolicyExpressionError
from policies.masks import compile_mask

pytestmark = [pytest.mark.spark, pytest.mark.slow]

KEY = "k3y-with-ünïcode'quote"

#: DuckDB type -> (Arrow type, values); every list holds a NULL
COLUMNS: dict[str, tuple[pa.DataType, list]] = {
    "VARCHAR": (
        pa.string(),
        [
            "alice@example.com",
            "no-at-sign",
            "",
            "ümlaut@bücher.de",
            "😀x@y.z",
            None,
            "o'b@x.io",
            "123",
        ],
    ),
    "BIGINT": (pa.int64(), [0, -1, 123456789012, None, 1234567890123456, 149, 150, -250]),
    "INTEGER": (pa.int32(), [7, -7, None, 2147483647, 50, -50]),
    "DECIMAL(15,2)": (
        pa.decimal128(15, 2),
        [
            Decimal("12.30"),
            Decimal("-0.50"),
            Decimal("0.00"),
            Decimal("1234567.89"),
            None,
            Decimal("150.00"),
            Decimal("-149.99"),
            Decimal("250.00"),
        ],
    ),
    "DECIMAL(12,2)": (pa.decimal128(12, 2), [Decimal("99.95"), None, Decimal("-1000.05")]),
    "DATE": (pa.date32(), [date(2024, 1, 5), date(1999, 12, 31), None, date(2024, 2, 29)]),
    "TIMESTAMP": (
        pa.timestamp("us"),
        [
            datetime(2024, 1, 5, 10),
            datetime(2024, 1, 5, 10, 0, 0, 100000),
            datetime(2024, 12, 31, 23, 59, 59, 123456),
            None,
        ],
    ),
    "BOOLEAN": (pa.bool_(), [True, False, None]),
    "DOUBLE": (pa.float64(), [1.5, 2.5, -2.5, 149.99, 150.0, 1e20, None, 0.1]),
}
_APPLIES = {
    "partial_email": {"VARCHAR"},
    "last4": {"VARCHAR"},
    "year": {"DATE", "TIMESTAMP"},
    "round:100": {"BIGINT", "INTEGER", "DECIMAL(15,2)", "DECIMAL(12,2)", "DOUBLE"},
    "round:7": {"BIGINT", "INTEGER", "DECIMAL(15,2)", "DOUBLE"},
    "round:0.5": {"DOUBLE"},
}
MASKS = (
    "hash",
    "partial_email",
    "last4",
    "year",
    "round:100",
    "round:7",
    "round:0.5",
    "redact",
    "null",
)
#: what Spark cannot compute exactly: Java prints doubles differently from DuckDB
REFUSED_ON_SPARK = {("hash", "DOUBLE"), ("round:0.5", "BIGINT"), ("round:0.5", "DECIMAL(15,2)")}


def _cases() -> list[tuple[str, str]]:
    return [
        (mask, type_)
        for mask in MASKS
        for type_ in COLUMNS
        if type_ in _APPLIES.get(mask, set(COLUMNS))
    ]


def _table(type_: str) -> pa.Table:
    arrow_type, values = COLUMNS[type_]
    return pa.table(
        {"rid": pa.array(range(len(values)), pa.int64()), "v": pa.array(values, arrow_type)}
    )


def _select(masked: exp.Expr) -> exp.Select:
    return exp.select(exp.alias_(masked, "m"), "rid").from_("t").order_by("rid")


def _duckdb_values(type_: str, masked: exp.Expr) -> list:
    con = duckdb.connect()
    try:
        con.register("t", _table(type_))
        return [row[0] for row in con.execute(_select(masked).sql("duckdb")).fetchall()]
    finally:
        con.close()


def _spark_values(spark: SparkConnect, type_: str, masked: exp.Expr) -> list:
    sql = spark_sql(_select(masked))
    batches = list(spark.run(sql, str(uuid.uuid4()), str(uuid.uuid4()), {"t": _table(type_)}))
    return pa.Table.from_batches(batches).column("m").to_pylist() if batches else []


@pytest.mark.parametrize(("spec", "type_"), _cases(), ids=lambda v: str(v))
def test_mask_gives_the_same_value_on_spark_and_duckdb(spec: str, type_: str, spark: SparkConnect):
    data_type = exp.DataType.build(type_, dialect="duckdb")
    mask = compile_mask(spec, data_type, KEY)
    value = exp.column("v", quoted=True)
    assert mask.build_spark is not None
    if (spec, type_) in REFUSED_ON_SPARK:
        with pytest.raises(PolicyExpressionError, match="no exact Spark equivalent"):
            mask.build_spark(value, data_type)
        return
    expected = _duckdb_values(type_, mask.build(value, data_type))
    actual = _spark_values(spark, type_, mask.build_spark(value, data_type))
    assert len(expected) == len(COLUMNS[type_][1])
    assert actual == expected, f"{spec} on {type_}"
    if spec not in {"redact", "null"}:  # a real mask changed something
        assert expected != COLUMNS[type_][1]


def test_custom_sql_masks_have_no_spark_builder():
    mask = compile_mask("sql:upper(value)", exp.DataType.build("VARCHAR"), KEY)
    assert mask.build_spark is None
