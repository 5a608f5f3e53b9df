"""Step: generate the DuckDB SQL the engine runs, and its display copy."""

from __future__ import annotations

from gateway.planning.query import PlanContext, Query

#: What the display SQL shows in place of the hash key.
HASH_KEY_MARKER = "<hash key>"


def generate_sql(query: Query, context: PlanContext) -> Query:
    """Render the final AST as DuckDB SQL (the only text the engine runs) and a display
    copy for EXPLAIN, errors and audit, in which every occurrence of the hash key is
    redacted (the display text is never run)."""
    assert query.ast is not None  # set by parse_statement, the first step
    sql = query.ast.sql(dialect="duckdb", comments=False, copy=False)  # the tree is ours
    key = context.hash_key
    display = sql.replace(key, HASH_KEY_MARKER) if key else sql
    return query.evolve(sql=sql, display_sql=display)
