"""Implied predicates of an OR across sources, so each source's share can be pushed down.

``(l.k = p.k AND l.q <= 11 AND p.brand = 'A') OR (l.k = p.k AND l.q >= 10 AND p.brand = 'B')``
(TPC-H q19) names two sources in every branch, so no branch can move into one fragment.
It implies, exactly, the conjuncts common to every branch (``l.k = p.k``) and, per source
that every branch constrains, the OR of that source's own conjuncts
(``(l.q <= 11) OR (l.q >= 10)``, ``p.brand = 'A' OR p.brand = 'B'``). Those are added
beside the original OR, which stays where it is: the result cannot change, and sqlglot's
predicate pushdown then moves the single-source ones into their fragments (where every
other user predicate goes: never past a secure subquery's barrier) and the common join
key becomes an equi-join that dynamic filtering can use (``gateway.mesh.dynamic``).
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlglot import exp

from gateway.mesh.join_groups import select_sources

#: Nodes that make a conjunct unfit to copy: subqueries, aggregates, windows, volatiles.
_UNFIT = (exp.Query, exp.AggFunc, exp.Window, exp.Rand, exp.Randn, exp.Uuid, exp.Anonymous)


def add_implied_predicates(tree: exp.Expr) -> exp.Expr:
    """``tree`` with the implied predicates of every WHERE's cross-source ORs added."""
    for select in list(tree.find_all(exp.Select)):
        where = select.args.get("where")
        if where is None:
            continue
        sources = {node.alias_or_name for node in select_sources(select)}
        implied: list[exp.Expr] = []
        for conjunct in _flat(where.this, exp.And):
            if isinstance(conjunct, exp.Or):
                implied.extend(_implied(conjunct, sources))
        if implied:
            select.where(*implied, copy=False)
    return tree


def _implied(disjunction: exp.Or, sources: set[str]) -> Iterator[exp.Expr]:
    branches = [list(_flat(branch, exp.And)) for branch in _flat(disjunction, exp.Or)]
    if len(branches) < 2 or any(c.find(*_UNFIT) for b in branches for c in b):
        return
    keyed = [{c.sql("duckdb"): c for c in branch} for branch in branches]
    common = [key for key in keyed[0] if all(key in others for others in keyed[1:])]
    for key in common:
        yield keyed[0][key].copy()
    branches = [[c for k, c in branch.items() if k not in common] for branch in keyed]
    tables = {column.table for column in disjunction.find_all(exp.Column)}
    if len(tables) < 2:
        return  # a single-source OR is pushed down as it is
    for table in sorted(tables & sources):
        shares = [[c for c in branch if _reads_only(c, table)] for branch in branches]
        if all(shares) and any(len(s) < len(b) for s, b in zip(shares, branches, strict=True)):
            yield exp.or_(*(exp.and_(*(c.copy() for c in share)) for share in shares))


def _reads_only(conjunct: exp.Expr, table: str) -> bool:
    columns = list(conjunct.find_all(exp.Column))
    return bool(columns) and all(column.table == table for column in columns)


def _flat(node: exp.Expr, kind: type[exp.Connector]) -> Iterator[exp.Expr]:
    node = node.unnest()
    if isinstance(node, kind):
        for part in node.flatten():
            yield from _flat(part, kind)
    else:
        yield node
