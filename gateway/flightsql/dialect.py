"""What GetSqlInfo says of the SQL the gateway accepts: its function lists and grammar.

JDBC's ``getNumericFunctions`` and friends (and ODBC's ``SQLGetInfo``) list the X/Open
CLI scalar functions a database offers. Each candidate here comes with a call; a name is
listed only when that call passes the gateway's own function allow-list
(``policies.safe_sql``, DuckDB's built-ins): a function the gateway refuses, or DuckDB
lacks, is never announced. DuckDB spells a few differently (``TRUNC``, ``CHR``, ``LN``):
those spellings are listed, not the X/Open ones it would refuse. ``LOG`` is left out:
DuckDB's is base 10, X/Open's natural.
"""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from gateway.flightsql import flightsql_pb2 as pb
from policies.safe_sql import function_refusal

_DAY = "DATE '2024-01-02'"
_MOMENT = "TIMESTAMP '2024-01-02 10:11:12'"

#: candidate functions per SqlInfo list, each with a call the gateway must accept
CANDIDATES: dict[int, dict[str, str]] = {
    pb.SQL_NUMERIC_FUNCTIONS: {
        "ABS": "ABS(-1)",
        "ACOS": "ACOS(1)",
        "ASIN": "ASIN(0)",
        "ATAN": "ATAN(0)",
        "ATAN2": "ATAN2(1, 1)",
        "CEILING": "CEILING(1.5)",
        "COS": "COS(0)",
        "COT": "COT(1)",
        "DEGREES": "DEGREES(1)",
        "EXP": "EXP(1)",
        "FLOOR": "FLOOR(1.5)",
        "LN": "LN(1)",
        "LOG10": "LOG10(10)",
        "MOD": "MOD(5, 3)",
        "PI": "PI()",
        "POWER": "POWER(2, 3)",
        "RADIANS": "RADIANS(180)",
        "RANDOM": "RANDOM()",
        "ROUND": "ROUND(1.5)",
        "SIGN": "SIGN(-2)",
        "SIN": "SIN(0)",
        "SQRT": "SQRT(4)",
        "TAN": "TAN(0)",
        "TRUNC": "TRUNC(1.5)",
    },
    pb.SQL_STRING_FUNCTIONS: {
        "ASCII": "ASCII('a')",
        "BIT_LENGTH": "BIT_LENGTH('a')",
        "CHAR_LENGTH": "CHAR_LENGTH('a')",
        "CHARACTER_LENGTH": "CHARACTER_LENGTH('a')",
        "CHR": "CHR(65)",
        "CONCAT": "CONCAT('a', 'b')",
        "LCASE": "LCASE('A')",
        "LEFT": "LEFT('abc', 1)",
        "LENGTH": "LENGTH('abc')",
        "LOWER": "LOWER('A')",
        "LTRIM": "LTRIM(' a')",
        "OCTET_LENGTH": "OCTET_LENGTH(CAST('a' AS BLOB))",
        "POSITION": "POSITION('b' IN 'abc')",
        "REPEAT": "REPEAT('a', 2)",
        "REPLACE": "REPLACE('abc', 'b', 'x')",
        "RIGHT": "RIGHT('abc', 1)",
        "RTRIM": "RTRIM('a ')",
        "SUBSTRING": "SUBSTRING('abc', 1, 2)",
        "TRIM": "TRIM(' a ')",
        "UCASE": "UCASE('a')",
        "UPPER": "UPPER('a')",
    },
    pb.SQL_DATETIME_FUNCTIONS: {
        "CURRENT_DATE": "CURRENT_DATE",
        "CURRENT_TIME": "CURRENT_TIME",
        "CURRENT_TIMESTAMP": "CURRENT_TIMESTAMP",
        "DATE_ADD": f"DATE_ADD({_DAY}, INTERVAL 1 DAY)",
        "DATE_DIFF": f"DATE_DIFF('day', {_DAY}, DATE '2024-02-01')",
        "DATE_PART": f"DATE_PART('year', {_DAY})",
        "DATE_TRUNC": f"DATE_TRUNC('month', {_DAY})",
        "DAYNAME": f"DAYNAME({_DAY})",
        "DAYOFMONTH": f"DAYOFMONTH({_DAY})",
        "DAYOFWEEK": f"DAYOFWEEK({_DAY})",
        "DAYOFYEAR": f"DAYOFYEAR({_DAY})",
        "EXTRACT": f"EXTRACT(YEAR FROM {_DAY})",
        "HOUR": f"HOUR({_MOMENT})",
        "MINUTE": f"MINUTE({_MOMENT})",
        "MONTH": f"MONTH({_DAY})",
        "MONTHNAME": f"MONTHNAME({_DAY})",
        "NOW": "NOW()",
        "QUARTER": f"QUARTER({_DAY})",
        "SECOND": f"SECOND({_MOMENT})",
        "WEEK": f"WEEK({_DAY})",
        "YEAR": f"YEAR({_DAY})",
    },
    pb.SQL_SYSTEM_FUNCTIONS: {
        "COALESCE": "COALESCE(NULL, 1)",
        "IFNULL": "IFNULL(NULL, 1)",
        "NULLIF": "NULLIF(1, 1)",
    },
}


@lru_cache(maxsize=1)
def function_lists() -> dict[int, list[str]]:
    """Each SqlInfo function list: the candidates whose call the gateway accepts."""
    return {
        info: [name for name, call in calls.items() if _accepted(call)]
        for info, calls in CANDIDATES.items()
    }


def _accepted(call: str) -> bool:
    """Whether ``SELECT <call>`` passes the gateway's function allow-list."""
    try:
        tree = sqlglot.parse_one(f"SELECT {call}", dialect="duckdb")
    except SqlglotError:
        return False
    return all(function_refusal(node) is None for node in tree.find_all(exp.Func))


#: The grammar the gateway accepts, as GetSqlInfo's bitmasks and ordinals encode it
#: (FlightSql.proto's enums; a bitmask sets bit ``1 << value``).
GRAMMAR: dict[int, int] = {
    # SupportedSqlGrammar: minimum and core (the extended grammar is DDL)
    pb.SQL_SUPPORTED_GRAMMAR: 0b011,
    # SupportedAnsi92SqlGrammarLevel: entry and intermediate
    pb.SQL_ANSI92_SUPPORTED_LEVEL: 0b011,
    # SqlOuterJoinsSupportLevel (an ordinal): full outer joins
    pb.SQL_OUTER_JOINS_SUPPORT_LEVEL: 2,
    # SqlSupportedGroupBy: unrelated columns, and beyond the select list
    pb.SQL_SUPPORTED_GROUP_BY: 0b11,
    # SqlSupportedSubqueries: in comparisons, EXISTS, IN, quantified (ANY / ALL)
    pb.SQL_SUPPORTED_SUBQUERIES: 0b1111,
    # nothing but queries: no procedures, indexes, privileges, positioned updates
    pb.SQL_SCHEMAS_SUPPORTED_ACTIONS: 0,
    pb.SQL_CATALOGS_SUPPORTED_ACTIONS: 0,
    pb.SQL_SUPPORTED_POSITIONED_COMMANDS: 0,
    # SqlTransactionIsolationLevel (an ordinal) and its bitmask: no transactions
    pb.SQL_DEFAULT_TRANSACTION_ISOLATION: 0,
    pb.SQL_SUPPORTED_TRANSACTIONS_ISOLATION_LEVELS: 0,
    # SqlSupportedResultSetType: forward only; SqlSupportedResultSetConcurrency: read only
    pb.SQL_SUPPORTED_RESULT_SET_TYPES: 1 << 1,
    pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_FORWARD_ONLY: 1 << 1,
}
