"""DuckDB's PIVOT and UNPIVOT statements, as queries the pipeline already governs.

``PIVOT sales.orders ON region USING sum(amount)`` and ``UNPIVOT t ON a, b INTO NAME n
VALUE v`` are reads. sqlglot parses them as a bare ``exp.Pivot``; wrapped as ``SELECT *
FROM (PIVOT ...)`` they are the nested form every step knows: the product inside is
resolved, authorized and replaced by its secure subquery like any other, so the pivot
only ever sees filtered, masked rows. The FROM-clause forms (``FROM t PIVOT (sum(x) FOR
c IN (...))``, ``FROM t UNPIVOT (v FOR n IN (...))``) are table arguments that the
secure subquery carries already.

A *dynamic* PIVOT (an ON expression without an IN list) names its result columns after
the values it finds, which DuckDB computes when it binds the statement: from the secure
subquery, hence governed values only, but from the data as it is then. Its result
schema is therefore data, not plan: ``names_columns_from_data`` tells the statement
planner not to keep it. DuckDB also *runs* such a statement as soon as it is bound into
a relation, so a plan made of it shows the scan of its materialised result: the cost of
a dynamic PIVOT is estimated on ``with_static_pivots`` (the same pivot over one listed
value: the same grouping of the same rows, planned without running anything).
"""

from __future__ import annotations

from sqlglot import exp, parse_one

#: the name of the CTE a PIVOT statement's source subquery becomes (see ``as_query``)
_SOURCE = "pivot_source_"


def as_query(ast: exp.Expr) -> exp.Expr:
    """``ast``, a PIVOT or UNPIVOT statement wrapped as ``SELECT * FROM (...)``; any
    other statement unchanged."""
    if not isinstance(ast, exp.Pivot) or ast.this is None:
        return ast
    with_ = ast.args.get("with_")  # WITH c AS (...) PIVOT c ...: the CTEs go outside
    ast.set("with_", None)
    source = ast.this
    if isinstance(source, exp.Subquery) and isinstance(source.this, exp.Query):
        # sqlglot writes every column under a PIVOT unqualified (right for ON and USING,
        # wrong for a join inside its source): the source becomes a CTE of its own
        with_ = with_ or exp.With(expressions=[])
        name = exp.to_identifier(f"{_SOURCE}{len(with_.expressions)}")
        with_.append("expressions", exp.CTE(this=source.this, alias=exp.TableAlias(this=name)))
        alias = source.args.get("alias")
        ast.set(
            "this", exp.Table(this=name.copy(), alias=alias or exp.TableAlias(this=name.copy()))
        )
    query = exp.select(exp.Star(), copy=False).from_(exp.Subquery(this=ast), copy=False)
    if with_ is not None:
        query.set("with_", with_)
    return query


def names_columns_from_data(ast: exp.Expr) -> bool:
    """True when a PIVOT of ``ast`` takes its column names from the data: a statement-form
    PIVOT with an ON expression that lists no values (``ON region``, not ``ON region IN
    ('EU', 'US')``)."""
    for pivot in ast.find_all(exp.Pivot):
        if pivot.this is None or pivot.args.get("unpivot"):
            continue  # a FROM-clause PIVOT lists its values (IN is required); UNPIVOT names none
        if any(not isinstance(on, exp.In) for on in pivot.expressions):
            return True
    return False


def with_static_pivots(sql: str) -> str:
    """``sql`` (governed DuckDB SQL) with every value-less ON expression of a PIVOT given
    the value list ``IN (NULL)``: for cost estimates only (see the module's docstring)."""
    tree = parse_one(sql, read="duckdb")
    for pivot in tree.find_all(exp.Pivot):
        if pivot.this is None or pivot.args.get("unpivot"):
            continue
        pivot.set(
            "expressions",
            [
                on if isinstance(on, exp.In) else exp.In(this=on, expressions=[exp.Null()])
                for on in pivot.expressions
            ],
        )
    return tree.sql("duckdb")
