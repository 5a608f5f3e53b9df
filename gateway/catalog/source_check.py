"""Check a contract's declared columns against the columns its source really has."""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp
from sqlglot.errors import ParseError

from gateway.catalog.contracts import ColumnContract, ProductContract
from gateway.errors import ContractError

_LOGICAL_FAMILIES: dict[str, frozenset[exp.DType]] = {
    "integer": frozenset(exp.DataType.INTEGER_TYPES),
    "number": frozenset(exp.DataType.NUMERIC_TYPES),
    "string": frozenset(exp.DataType.TEXT_TYPES),
    "date": frozenset({exp.DataType.Type.DATE}),
    "timestamp": frozenset(exp.DataType.TEMPORAL_TYPES - {exp.DataType.Type.DATE}),
    "time": frozenset({exp.DataType.Type.TIME, exp.DataType.Type.TIMETZ}),
    "boolean": frozenset({exp.DataType.Type.BOOLEAN}),
    "array": frozenset({exp.DataType.Type.ARRAY, exp.DataType.Type.LIST}),
    "object": frozenset({exp.DataType.Type.STRUCT, exp.DataType.Type.MAP}),
}


def check_columns(contract: ProductContract, actual: Sequence[tuple[str, str]]) -> None:
    """Raise ContractError when a declared column is missing or has another type in the source."""
    by_name = {name.lower(): duck_type for name, duck_type in actual}
    for column in contract.columns:
        source_type = by_name.get(column.name.lower())
        if source_type is None:
            raise ContractError(
                f"{contract.contract_path}: field `{column.field}.name` (product {contract.key}): "
                f"column {column.name!r} is declared but the source lacks it (source columns: "
                f"{', '.join(name for name, _ in actual)}); fix the name or publish the column"
            )
        _check_type(contract, column, source_type)


def _check_type(contract: ProductContract, column: ColumnContract, source_type: str) -> None:
    actual = _parse_type(source_type)
    where = f"{contract.contract_path}: field `{column.field}"
    if column.physical_type:
        try:
            declared = _parse_type(column.physical_type)
        except ParseError as exc:
            raise ContractError(
                f"{where}.physicalType` (product {contract.key}, column {column.name!r}): "
                f"{column.physical_type!r} is not a DuckDB type; use e.g. BIGINT, VARCHAR"
            ) from exc
        if declared != actual:
            raise ContractError(
                f"{where}.physicalType` (product {contract.key}, column {column.name!r}): "
                f"declared {column.physical_type} but the source has {source_type}; "
                "fix the contract or the data"
            )
        return
    family = _LOGICAL_FAMILIES.get((column.logical_type or "").lower())
    if family is None:
        raise ContractError(
            f"{where}.logicalType` (product {contract.key}, column {column.name!r}): unknown "
            f"logicalType {column.logical_type!r}; use one of {', '.join(_LOGICAL_FAMILIES)}"
        )
    if actual.this not in family:
        raise ContractError(
            f"{where}.logicalType` (product {contract.key}, column {column.name!r}): declared "
            f"{column.logical_type} but the source has {source_type}; fix the contract or the data"
        )


def _parse_type(text: str) -> exp.DataType:
    return exp.DataType.build(text, dialect="duckdb")
