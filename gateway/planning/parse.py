"""Step: parse the client's text into exactly one DuckDB-dialect statement.

``EXPLAIN <query>`` and ``EXPLAIN POLICY <query>`` are recognised here (sqlglot reads
them as a generic command): the query inside is what the rest of the pipeline plans.
A PIVOT or UNPIVOT statement becomes the query ``SELECT * FROM (PIVOT ...)``
(``gateway.planning.pivot``).
"""

from __future__ import annotations

import logging
import re

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from gateway.errors import InvalidQuery, QueryRefused, first_line
from gateway.planning.pivot import as_query, names_columns_from_data
from gateway.planning.query import PlanContext, Query

_EXPLAIN_POLICY = "POLICY"
_MAX_TREE_DEPTH = 400
_DIALECT = DuckDB()
_OPENERS = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE})
_CLOSERS = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END})
#: The tokens ``_tokenize`` rewrites: ``?`` and ``?::``.
_QUESTION_MARKS = frozenset({TokenType.PLACEHOLDER, TokenType.QDCOLON})

# sqlglot warns when it falls back to a generic Command (EXPLAIN, SHOW, ...); the
# pipeline handles those itself, so the warning is noise in the server log.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


def parse_statement(query: Query, context: PlanContext) -> Query:
    """Parse ``query.text``; refuse empty, oversized, multiple or unparseable statements."""
    text = query.text
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > context.limits.max_statement_bytes:
        raise QueryRefused(
            f"statement is {size} bytes, over the limit of {context.limits.max_statement_bytes} "
            "([gateway] max_statement_bytes in mesh.toml)"
        )
    limits = context.limits
    ast, placeholders = _parse_one(text, limits.max_nesting, limits.max_tree_nodes)
    explain = None
    if isinstance(ast, exp.Command) and str(ast.this).upper() == "EXPLAIN":
        inner = ast.expression.name if ast.expression else ""
        head, _, rest = inner.lstrip().partition(" ")
        explain = "plan"
        if head.upper() == _EXPLAIN_POLICY:
            explain, inner = "policy", rest
        ast, placeholders = _parse_one(inner, limits.max_nesting, limits.max_tree_nodes)
        if isinstance(ast, exp.Command):
            raise QueryRefused("EXPLAIN takes one read-only query (EXPLAIN ANALYZE is not offered)")
    ast = as_query(ast)
    return query.evolve(
        ast=ast,
        explain=explain,
        parameter_count=_parameter_count(placeholders),
        columns_from_data=names_columns_from_data(ast),
    )


def _parameter_count(placeholders: list[exp.Placeholder]) -> int:
    """How many values the statement needs: its highest ``$n``."""
    numbers = []
    for placeholder in placeholders:
        if not str(placeholder.this).isdigit():
            raise InvalidQuery("named parameters are not supported; use ? or $1, $2, ...")
        numbers.append(int(placeholder.this))
    return max(numbers, default=0)


def _tokenize(text: str) -> list[Token]:
    """DuckDB-dialect tokens, with two normalisations:

    - ``?::`` is read as DuckDB does (a parameter, then a cast), not as Postgres' JSON
      operator;
    - every ``?`` becomes ``$n``, numbered in the order of the text, which is the order
      DuckDB binds them in. The AST then names each parameter, so no later rewrite (a
      LIMIT moved before a WHERE, a fragment split off) can shuffle them.
    """
    try:
        tokens = _DIALECT.tokenize(text)
    except (TokenError, ValueError) as exc:
        raise InvalidQuery(f"SQL syntax error: {first_line(exc)}") from exc
    if not any(token.token_type in _QUESTION_MARKS for token in tokens):
        return tokens
    fixed: list[Token] = []
    numbered = 0
    for token in tokens:
        cast = token.token_type == TokenType.QDCOLON
        if cast or token.token_type == TokenType.PLACEHOLDER:
            numbered += 1
            fixed.append(
                Token(TokenType.PARAMETER, "$", token.line, token.col, token.start, token.start, [])
            )
            fixed.append(
                Token(
                    TokenType.NUMBER,
                    str(numbered),
                    token.line,
                    token.col,
                    token.start,
                    token.start,
                    [],
                )
            )
            if cast:
                fixed.append(
                    Token(
                        TokenType.DCOLON,
                        "::",
                        token.line,
                        token.col,
                        token.start + 1,
                        token.end,
                        token.comments,
                    )
                )
        else:
            fixed.append(token)
    if numbered and any(t.token_type == TokenType.PARAMETER for t in tokens):
        raise InvalidQuery("use either ? or $n parameters in one statement, not both")
    return fixed


def _check_nesting(tokens: list[Token], limit: int) -> None:
    """Refuse deep nesting before parsing: sqlglot's parser recurses per level (and its
    compiled build crashes the process a few thousand levels down)."""
    depth = deepest = 0
    for token in tokens:
        if token.token_type in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif token.token_type in _CLOSERS:
            depth -= 1
    if deepest > limit:
        raise QueryRefused(f"statement nests {deepest} levels deep, over the limit of {limit}")


def _parse_one(
    text: str, max_nesting: int, max_nodes: int
) -> tuple[exp.Expr, list[exp.Placeholder]]:
    """The one statement of ``text`` and its parameter placeholders."""
    tokens = _tokenize(text)
    _check_nesting(tokens, max_nesting)
    try:
        statements = [s for s in _DIALECT.parser().parse(tokens, text) if s is not None]
    except (ParseError, TokenError) as exc:
        misspelt = _misspelt_statement(tokens)
        raise misspelt or InvalidQuery(f"SQL syntax error: {_first_error(exc)}") from exc
    except (TypeError, ValueError, AttributeError, IndexError) as exc:  # sqlglot on odd input
        raise InvalidQuery("SQL syntax error: the statement could not be parsed") from exc
    except RecursionError as exc:
        raise QueryRefused("statement is nested too deeply to analyse") from exc
    if not statements:
        raise InvalidQuery("empty statement: send one SELECT query")
    if len(statements) > 1:
        raise QueryRefused(
            f"{len(statements)} statements sent; send exactly one read-only statement"
        )
    return statements[0], _placeholders_within_depth(statements[0], _MAX_TREE_DEPTH, max_nodes)


def _placeholders_within_depth(ast: exp.Expr, limit: int, max_nodes: int) -> list[exp.Placeholder]:
    """The placeholders of ``ast``, found in the one pass (level by level) that refuses
    trees deeper than ``limit``: long operator chains nest without brackets, and every
    later step walks the tree, some recursively; and trees of more than ``max_nodes``
    nodes, which every later step walks too (6,500 CTEs and 35,000 references fit in
    256 KiB)."""
    placeholders: list[exp.Placeholder] = []
    level = [ast]
    depth = nodes = 0
    while level:
        nodes += len(level)
        if nodes > max_nodes:
            raise QueryRefused(
                f"statement has more than {max_nodes:,} syntax tree nodes (expressions, table "
                "references, CTEs), over the planning limit; split it into smaller statements"
            )
        depth += 1
        if depth > limit:
            raise QueryRefused(f"statement is more than {limit} expressions deep; split it up")
        below: list[exp.Expr] = []
        for node in level:
            if isinstance(node, exp.Placeholder):
                placeholders.append(node)
            below.extend(node.iter_expressions())
        level = below
    return placeholders


_REQUIRED = re.compile(r"Required keyword: '(\w+)' missing for <class '[\w.]*\.(\w+)'>")
_GOT_TOKEN = re.compile(r"\s*but got <Token [^>]*>")
_REPR = re.compile(r"<[^<>]*>")
#: Tokens that start a statement: a first word outside these is a misspelt statement.
_STATEMENT_STARTS = "SELECT, WITH, FROM, VALUES, PIVOT, UNPIVOT, EXPLAIN"


def _first_error(exc: Exception) -> str:
    """The first of sqlglot's errors in the user's terms: what was expected, the offending
    token and where it stands (never sqlglot's class names or token reprs)."""
    errors = getattr(exc, "errors", None)
    if not errors:
        return _REPR.sub("", first_line(exc)).strip() or "the statement could not be parsed"
    first = errors[0]
    token = str(first.get("highlight") or "").strip()
    line, end = first.get("line"), first.get("col")
    column = end - len(token) + 1 if isinstance(end, int) and token else end
    where = f"line {line}, column {column}"
    before = " ".join(str(first.get("start_context") or "").split())[-40:]
    after = f", after {before!r}" if before else ""
    description = str(first.get("description") or "")
    at_end = not str(first.get("end_context") or "").strip()
    if required := _REQUIRED.match(description):
        what = _describe(required.group(2))
        if at_end:
            ending = f"after {token!r}, at the end"
            return f"incomplete {what}: expected an expression {ending} ({where})"
        return f"incomplete {what}: expected an expression, found {token!r} ({where}{after})"
    if description.startswith("Invalid expression / Unexpected token"):
        return f"unexpected {token!r} ({where}{after})"
    if description.startswith("Expecting "):
        expected, end = description.removeprefix("Expecting "), ", at the end" if at_end else ""
        return f"expected {expected} after {token!r}{end} ({where}{after})"
    description = _REPR.sub("", _GOT_TOKEN.sub("", description)).strip() or "unexpected input"
    return f"{description[:1].lower()}{description[1:]}, at {token!r} ({where}{after})"


def _describe(class_name: str) -> str:
    """``Where`` -> ``WHERE clause``; an operator or function -> ``expression``."""
    node = getattr(exp, class_name, None)
    if isinstance(node, type) and issubclass(node, (exp.Binary, exp.Unary, exp.Func)):
        return "expression"
    if isinstance(node, type) and issubclass(
        node,
        (exp.Where, exp.Having, exp.Group, exp.Order, exp.Limit, exp.Offset, exp.Qualify, exp.Join),
    ):
        return f"{node.key.upper()} clause"
    return "statement"


def _misspelt_statement(tokens: list[Token]) -> InvalidQuery | None:
    """A statement whose first word is not a keyword (``SELEC * FRM t``): name that word."""
    first = next((t for t in tokens if t.token_type != TokenType.SEMICOLON), None)
    if first is None or first.token_type != TokenType.VAR:
        return None
    return InvalidQuery(
        f"SQL syntax error: unknown statement {first.text!r} (line {first.line}, column "
        f"{first.col - len(first.text) + 1}); expected a query starting with {_STATEMENT_STARTS}"
    )
