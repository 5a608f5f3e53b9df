"""GetSqlInfo says what the gateway really accepts: each claim BI clients read is checked
against the gateway itself, through real clients."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, flight_client

from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql.protocol import pack

#: a call of every function a list may name (the test's own, not the server's)
CALLS = {
    "ABS": "ABS(-1)",
    "ACOS": "ACOS(1)",
    "ASIN": "ASIN(0)",
    "ATAN": "ATAN(0)",
    "ATAN2": "ATAN2(1, 2)",
    "CEILING": "CEILING(1.2)",
    "COS": "COS(0)",
    "COT": "COT(0.5)",
    "DEGREES": "DEGREES(PI())",
    "EXP": "EXP(0)",
    "FLOOR": "FLOOR(1.8)",
    "LN": "LN(10)",
    "LOG10": "LOG10(1000)",
    "MOD": "MOD(7, 4)",
    "PI": "PI()",
    "POWER": "POWER(3, 2)",
    "RADIANS": "RADIANS(90)",
    "RANDOM": "RANDOM()",
    "ROUND": "ROUND(2.5)",
    "SIGN": "SIGN(-7)",
    "SIN": "SIN(1)",
    "SQRT": "SQRT(9)",
    "TAN": "TAN(1)",
    "TRUNC": "TRUNC(2.7)",
    "ASCII": "ASCII('A')",
    "BIT_LENGTH": "BIT_LENGTH('ab')",
    "CHAR_LENGTH": "CHAR_LENGTH('ab')",
    "CHARACTER_LENGTH": "CHARACTER_LENGTH('ab')",
    "CHR": "CHR(66)",
    "CONCAT": "CONCAT('x', region)",
    "LCASE": "LCASE(region)",
    "LEFT": "LEFT(region, 1)",
    "LENGTH": "LENGTH(region)",
    "LOWER": "LOWER(region)",
    "LTRIM": "LTRIM('  x')",
    "OCTET_LENGTH": "OCTET_LENGTH(CAST(region AS BLOB))",
    "POSITION": "POSITION('U' IN region)",
    "REPEAT": "REPEAT(region, 2)",
    "REPLACE": "REPLACE(region, 'E', 'e')",
    "RIGHT": "RIGHT(region, 1)",
    "RTRIM": "RTRIM('x  ')",
    "SUBSTRING": "SUBSTRING(region, 1, 1)",
    "TRIM": "TRIM('  x  ')",
    "UCASE": "UCASE(region)",
    "UPPER": "UPPER(region)",
    "CURRENT_DATE": "CURRENT_DATE",
    "CURRENT_TIME": "CURRENT_TIME",
    "CURRENT_TIMESTAMP": "CURRENT_TIMESTAMP",
    "DATE_ADD": "DATE_ADD(order_date, INTERVAL 1 DAY)",
    "DATE_DIFF": "DATE_DIFF('day', order_date, DATE '2030-01-01')",
    "DATE_PART": "DATE_PART('month', order_date)",
    "DATE_TRUNC": "DATE_TRUNC('month', order_date)",
    "DAYNAME": "DAYNAME(order_date)",
    "DAYOFMONTH": "DAYOFMONTH(order_date)",
    "DAYOFWEEK": "DAYOFWEEK(order_date)",
    "DAYOFYEAR": "DAYOFYEAR(order_date)",
    "EXTRACT": "EXTRACT(YEAR FROM order_date)",
    "HOUR": "HOUR(CAST(order_date AS TIMESTAMP))",
    "MINUTE": "MINUTE(CAST(order_date AS TIMESTAMP))",
    "MONTH": "MONTH(order_date)",
    "MONTHNAME": "MONTHNAME(order_date)",
    "NOW": "NOW()",
    "QUARTER": "QUARTER(order_date)",
    "SECOND": "SECOND(CAST(order_date AS TIMESTAMP))",
    "WEEK": "WEEK(order_date)",
    "YEAR": "YEAR(order_date)",
    "COALESCE": "COALESCE(NULL, region)",
    "IFNULL": "IFNULL(NULL, region)",
    "NULLIF": "NULLIF(region, 'EU')",
}
FUNCTION_LISTS = (
    pb.SQL_NUMERIC_FUNCTIONS,
    pb.SQL_STRING_FUNCTIONS,
    pb.SQL_DATETIME_FUNCTIONS,
    pb.SQL_SYSTEM_FUNCTIONS,
)


@pytest.fixture(scope="module")
def info(gateway) -> dict[int, object]:
    client, options = flight_client(gateway.uri, "alice")
    try:
        descriptor = flight.FlightDescriptor.for_command(pack(pb.CommandGetSqlInfo()))
        flight_info = client.get_flight_info(descriptor, options)
        table = client.do_get(flight_info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()
    return {row["info_name"]: row["value"] for row in table.to_pylist()}


@pytest.fixture(scope="module")
def cur(gateway):
    conn = adbc_connect(gateway.uri, "bob")
    cursor = conn.cursor()
    yield cursor
    cursor.close()
    conn.close()


def one(cur, sql: str) -> list[tuple]:
    cur.execute(sql)
    return cur.fetchall()


def test_adbc_reads_the_server_description(gateway, info):
    conn = adbc_connect(gateway.uri, "bob")
    try:
        described = conn.adbc_get_info()
    finally:
        conn.close()
    assert described["vendor_name"] == info[pb.FLIGHT_SQL_SERVER_NAME] == "Meshgate"
    assert info[pb.FLIGHT_SQL_SERVER_READ_ONLY] is True
    assert info[pb.FLIGHT_SQL_SERVER_TRANSACTION] == pb.SQL_SUPPORTED_TRANSACTION_NONE


def test_identifiers_quote_with_double_quotes_and_match_whatever_their_case(cur, info):
    assert info[pb.SQL_IDENTIFIER_QUOTE_CHAR] == '"'
    insensitive = pb.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE
    assert info[pb.SQL_IDENTIFIER_CASE] == insensitive
    assert info[pb.SQL_QUOTED_IDENTIFIER_CASE] == insensitive
    expected = one(cur, "SELECT order_id FROM sales.orders ORDER BY order_id LIMIT 3")
    for sql in (
        'SELECT "order_id" FROM "sales"."orders" ORDER BY 1 LIMIT 3',
        "SELECT ORDER_ID FROM SALES.ORDERS ORDER BY 1 LIMIT 3",
        'SELECT "ORDER_ID" FROM "Sales"."Orders" ORDER BY 1 LIMIT 3',
        'SELECT o."Order_Id" FROM "MESH"."SALES"."ORDERS" AS o ORDER BY 1 LIMIT 3',
    ):
        assert one(cur, sql) == expected, sql


def test_every_listed_function_is_accepted(cur, info):
    listed = {name for list_id in FUNCTION_LISTS for name in info[list_id]}
    assert listed <= set(CALLS), listed - set(CALLS)
    assert {"ABS", "UPPER", "SUBSTRING", "YEAR", "EXTRACT", "COALESCE"} <= listed
    calls = ", ".join(f"{CALLS[name]} AS f{number}" for number, name in enumerate(sorted(listed)))
    rows = one(cur, f"SELECT {calls} FROM sales.orders WHERE region = 'EU' LIMIT 1")
    assert len(rows) == 1 and len(rows[0]) == len(listed)


def test_functions_the_gateway_refuses_are_not_listed(cur, info):
    listed = {name for list_id in FUNCTION_LISTS for name in info[list_id]}
    for refused in ("CURRENT_SETTING", "USER", "DATABASE", "VERSION"):
        assert refused not in listed
        with pytest.raises(adbc_driver_manager.Error):
            one(cur, f"SELECT {refused}()")


def test_keywords_are_duckdbs_and_quoting_them_makes_identifiers(cur, info):
    keywords = info[pb.SQL_KEYWORDS]
    assert keywords == sorted(keywords) and all(k == k.upper() for k in keywords)
    assert {"SELECT", "QUALIFY", "PIVOT", "ASOF"} <= set(keywords)
    aliases = ", ".join(f'{number} AS "{keyword}"' for number, keyword in enumerate(keywords))
    cur.execute(f"SELECT {aliases}")
    assert [d[0] for d in cur.description] == keywords
    assert cur.fetchall() == [tuple(range(len(keywords)))]


def test_search_string_escape_makes_a_wildcard_literal(gateway, info):
    escape = info[pb.SQL_SEARCH_STRING_ESCAPE]
    assert escape == "\\"
    client, options = flight_client(gateway.uri, "bob")
    try:

        def tables(pattern: str) -> list[str]:
            command = pb.CommandGetTables(table_name_filter_pattern=pattern)
            descriptor = flight.FlightDescriptor.for_command(pack(command))
            found = client.get_flight_info(descriptor, options)
            table = client.do_get(found.endpoints[0].ticket, options).read_all()
            return table.column("table_name").to_pylist()

        assert tables("ord_rs") == ["orders"]
        assert tables(f"ord{escape}_rs") == []
        assert tables(f"orders{escape}%") == []
    finally:
        client.close()


def test_nulls_sort_at_the_end_either_way_and_null_plus_null_is_null(cur, info):
    assert info[pb.SQL_NULL_ORDERING] == pb.SQL_NULLS_SORTED_AT_END
    values = "(VALUES (1), (NULL), (2)) AS t(x)"
    assert one(cur, f"SELECT x FROM {values} ORDER BY x") == [(1,), (2,), (None,)]
    assert one(cur, f"SELECT x FROM {values} ORDER BY x DESC") == [(2,), (1,), (None,)]
    assert info[pb.SQL_NULL_PLUS_NULL_IS_NULL] is True
    assert one(cur, "SELECT NULL + NULL AS n") == [(None,)]


def test_grammar_claims_hold(cur, info):
    assert info[pb.SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE] is True
    assert one(cur, "SELECT 'a%b' LIKE 'a!%b' ESCAPE '!' AS hit") == [(True,)]
    assert info[pb.SQL_OUTER_JOINS_SUPPORT_LEVEL] == 2  # full outer joins
    full = (
        "SELECT count(*) FROM (SELECT 1 AS k) AS a FULL OUTER JOIN (SELECT 2 AS k) AS b "
        "ON a.k = b.k"
    )
    assert one(cur, full) == [(2,)]
    assert info[pb.SQL_SUPPORTED_SUBQUERIES] == 0b1111
    small = "SELECT order_id FROM sales.orders WHERE order_id <= 3"
    for sql in (
        f"SELECT count(*) FROM sales.orders WHERE order_id = (SELECT max(order_id) FROM ({small}))",
        f"SELECT count(*) FROM sales.orders o WHERE EXISTS ({small} AND order_id = o.order_id)",
        f"SELECT count(*) FROM sales.orders WHERE order_id IN ({small})",
        f"SELECT count(*) FROM sales.orders WHERE order_id <= ALL ({small}) AND order_id >= 1",
    ):
        assert one(cur, sql)[0][0] >= 1, sql
    assert info[pb.SQL_SUPPORTED_GROUP_BY] == 0b11
    assert len(one(cur, "SELECT count(*) FROM sales.orders GROUP BY region")) == 3
    assert info[pb.SQL_SUPPORTS_ORDER_BY_UNRELATED] is True
    assert len(one(cur, "SELECT order_id FROM sales.orders ORDER BY amount LIMIT 2")) == 2
    assert info[pb.SQL_SUPPORTED_UNIONS] == 0b11
    assert one(cur, "SELECT 1 AS x UNION SELECT 1 UNION ALL SELECT 1") == [(1,), (1,)]


def test_statements_longer_than_the_announced_maximum_are_refused(cur, info):
    limit = info[pb.SQL_MAX_STATEMENT_LENGTH]
    head = "SELECT 1 AS x -- "
    assert one(cur, head + "y" * (limit - len(head))) == [(1,)]
    with pytest.raises(adbc_driver_manager.Error, match="max_statement_bytes"):
        one(cur, head + "y" * (limit - len(head) + 1))
