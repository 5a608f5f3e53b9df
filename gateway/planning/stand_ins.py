"""The governed SQL rewritten for a cost estimate that knows only rows the user may see.

DuckDB estimates cardinalities from a table's statistics, which count every row, also
those a row filter hides: an admission decision (or an estimate in a message) made from
them would let a user measure hidden rows. For the estimate, each product the user reads
through a row filter is replaced by a *stand-in* of exactly as many rows as they may see,
with the product's columns and types (values made from a row number, so no statistic of
the product's data reaches the optimizer), and the row filter it already stands for is
taken out of its secure subquery (the user's own conditions stay). Only plans, never
results, are made from this SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp, parse_one

from gateway.planning.naming import INTERNAL_CATALOG

_ROW = exp.column("range")


@dataclass(frozen=True)
class StandIn:
    """What replaces one product: as many rows as the user may see, its column types, and
    its row filter (DuckDB SQL) to take out."""

    rows: int
    column_types: dict[str, str]
    row_filter: str


def stand_in_sql(sql: str, stand_ins: Mapping[tuple[str, str], StandIn]) -> str:
    """``sql`` (governed DuckDB SQL) with every reference to a product of ``stand_ins``
    (by ``(domain, name)``) replaced by its stand-in."""
    tree = parse_one(sql, read="duckdb")
    for table in list(tree.find_all(exp.Table)):
        key = (table.db, table.name)
        if table.catalog != INTERNAL_CATALOG or key not in stand_ins:
            continue
        stand_in = stand_ins[key]
        _drop_condition(table, stand_in.row_filter)
        rows, column_types = stand_in.rows, stand_in.column_types
        alias = table.alias or table.name
        derived = _stand_in(rows, column_types).subquery(exp.to_identifier(alias, quoted=True))
        table.replace(derived)
    return tree.sql("duckdb")


def _drop_condition(table: exp.Table, condition: str) -> None:
    """Take ``condition`` out of the WHERE of the SELECT reading ``table`` directly."""
    select = table.parent.parent if isinstance(table.parent, exp.From) else None
    if not isinstance(select, exp.Select) or not select.args.get("where"):
        return
    conjuncts = (
        list(select.args["where"].this.flatten())
        if isinstance(select.args["where"].this, exp.And)
        else [select.args["where"].this]
    )
    kept = [c for c in conjuncts if c.sql("duckdb") != condition]
    if len(kept) == len(conjuncts):
        return
    select.set("where", exp.Where(this=exp.and_(*kept)) if kept else None)


def _stand_in(rows: int, column_types: dict[str, str]) -> exp.Select:
    columns = [
        exp.alias_(_value(duckdb_type), name, quoted=True)
        for name, duckdb_type in column_types.items()
    ]
    return exp.select(*columns).from_(
        exp.Table(this=exp.Anonymous(this="range", expressions=[exp.Literal.number(rows)]))
    )


def _value(duckdb_type: str) -> exp.Expr:
    """A value of ``duckdb_type`` made from the row number (NULL for nested types)."""
    upper = duckdb_type.upper()
    if upper in ("DATE",):
        made: exp.Expr = exp.Add(
            this=exp.cast(exp.Literal.string("2000-01-01"), "DATE"),
            expression=exp.cast(
                exp.Mod(this=_ROW.copy(), expression=exp.Literal.number(36500)), "INTEGER"
            ),
        )
    elif upper.startswith("TIMESTAMP"):
        made = exp.Anonymous(this="to_timestamp", expressions=[_ROW.copy()])
    elif upper == "BOOLEAN":
        made = exp.EQ(
            this=exp.Mod(this=_ROW.copy(), expression=exp.Literal.number(2)),
            expression=exp.Literal.number(0),
        )
    elif upper.endswith("]") or upper.startswith(("STRUCT", "MAP", "UNION")):
        return exp.cast(exp.null(), duckdb_type, dialect="duckdb")
    else:
        made = _ROW.copy()  # numbers, text, blobs, intervals: cast from the row number
    return exp.cast(made, duckdb_type, dialect="duckdb")
