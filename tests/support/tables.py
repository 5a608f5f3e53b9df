"""Comparing what the gateway returned with what the oracle expects, column by column."""

from __future__ import annotations

import pyarrow as pa


def assert_tables_equal(actual: pa.Table, expected: pa.Table, what: str = "") -> None:
    """Same column names, same Arrow types, same values in the same order."""
    prefix = f"{what}: " if what else ""
    assert actual.column_names == expected.column_names, (
        f"{prefix}columns {actual.column_names} != {expected.column_names}"
    )
    actual_types = [f.type for f in actual.schema]
    expected_types = [f.type for f in expected.schema]
    assert actual_types == expected_types, f"{prefix}types {actual_types} != {expected_types}"
    assert actual.num_rows == expected.num_rows, (
        f"{prefix}{actual.num_rows} rows != {expected.num_rows}"
    )
    for name in actual.column_names:
        left, right = actual.column(name), expected.column(name)
        if left.equals(right):
            continue
        left_values, right_values = left.to_pylist(), right.to_pylist()
        first = next(
            i for i, (a, b) in enumerate(zip(left_values, right_values, strict=True)) if a != b
        )
        raise AssertionError(
            f"{prefix}column {name!r} differs first at row {first}: "
            f"{left_values[first]!r} != {right_values[first]!r}"
        )
