"""How DuckDB types read to JDBC/ODBC-minded clients: XDBC type codes, sizes, type names.

Flight SQL carries the JDBC/ODBC view of a type in two places: the rows of
GetXdbcTypeInfo (one per type the server serves) and the field metadata of the schemas
GetTables returns with ``include_schema``, which the ADBC driver turns into the
``xdbc_*`` columns of GetObjects (``XDBC_*`` keys; the type name from
``ARROW:FLIGHT:SQL:TYPE_NAME``) and the Arrow Flight SQL JDBC driver into
``DatabaseMetaData.getColumns`` (``ARROW:FLIGHT:SQL:*`` keys).

Codes are FlightSql.proto's ``XdbcDataType`` (the JDBC/ODBC values). Where DuckDB has no
exact counterpart the choice follows the ADBC driver's own mapping of the Arrow type, so
both ``xdbc_data_type`` and ``xdbc_sql_data_type`` agree: unsigned integers keep their
width's code (ODBC's ``UNSIGNED_ATTRIBUTE`` says unsigned), nested types are VARBINARY.
An ENUM is served as its values' VARCHAR, and so named: its type would list values a
row filter may hide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import ParseError

from gateway.flightsql import flightsql_pb2 as pb

T = exp.DType

_NULLABLE = str(pb.NULLABILITY_NULLABLE)


@dataclass(frozen=True)
class XdbcType:
    """One DuckDB type as JDBC/ODBC describe it (a GetXdbcTypeInfo row, or a column's
    type once sized)."""

    name: str
    data_type: int
    #: precision of numbers (in ``radix`` digits), characters of dates and times
    column_size: int | None = None
    decimal_digits: int | None = None
    radix: int | None = None
    #: the verbose SQL type: DATETIME / INTERVAL for dates and intervals, else ``data_type``
    sql_data_type: int | None = None
    datetime_subcode: int | None = None
    literal_prefix: str | None = None
    literal_suffix: str | None = None
    create_params: tuple[str, ...] | None = None
    case_sensitive: bool = False
    searchable: int = pb.SEARCHABLE_BASIC
    unsigned: bool | None = None
    fixed_prec_scale: bool = False
    minimum_scale: int | None = None
    maximum_scale: int | None = None

    @property
    def verbose_type(self) -> int:
        return self.data_type if self.sql_data_type is None else self.sql_data_type


def _integer(name: str, code: int, digits: int, unsigned: bool = False) -> XdbcType:
    return XdbcType(
        name, code, digits, 0, 10, unsigned=unsigned, fixed_prec_scale=True, minimum_scale=0
    )


def _moment(name: str, code: int, size: int, digits: int, subcode: int, prefix: str) -> XdbcType:
    return XdbcType(
        name,
        code,
        size,
        digits,
        sql_data_type=pb.XDBC_DATETIME,
        datetime_subcode=subcode,
        literal_prefix=f"{prefix} '",
        literal_suffix="'",
        minimum_scale=digits,
        maximum_scale=digits,
    )


def _text(name: str, size: int | None = None, searchable: int = pb.SEARCHABLE_FULL) -> XdbcType:
    return XdbcType(
        name,
        pb.XDBC_VARCHAR,
        size,
        literal_prefix="'",
        literal_suffix="'",
        case_sensitive=True,
        searchable=searchable,
    )


#: The types the gateway serves, by sqlglot's type, in GetXdbcTypeInfo order (within one
#: XDBC code, the closest match first).
BASE_TYPES: dict[T, XdbcType] = {
    T.BOOLEAN: XdbcType("BOOLEAN", pb.XDBC_BIT, 1),
    T.TINYINT: _integer("TINYINT", pb.XDBC_TINYINT, 3),
    T.UTINYINT: _integer("UTINYINT", pb.XDBC_TINYINT, 3, unsigned=True),
    T.SMALLINT: _integer("SMALLINT", pb.XDBC_SMALLINT, 5),
    T.USMALLINT: _integer("USMALLINT", pb.XDBC_SMALLINT, 5, unsigned=True),
    T.INT: _integer("INTEGER", pb.XDBC_INTEGER, 10),
    T.UINT: _integer("UINTEGER", pb.XDBC_INTEGER, 10, unsigned=True),
    T.BIGINT: _integer("BIGINT", pb.XDBC_BIGINT, 19),
    T.UBIGINT: _integer("UBIGINT", pb.XDBC_BIGINT, 20, unsigned=True),
    # Arrow carries (U)HUGEINT as decimal128(38, 0)
    T.INT128: _integer("HUGEINT", pb.XDBC_DECIMAL, 38),
    T.UINT128: _integer("UHUGEINT", pb.XDBC_DECIMAL, 38, unsigned=True),
    T.DECIMAL: XdbcType(
        "DECIMAL",
        pb.XDBC_DECIMAL,
        38,
        radix=10,
        create_params=("precision", "scale"),
        unsigned=False,
        fixed_prec_scale=True,
        minimum_scale=0,
        maximum_scale=38,
    ),
    T.FLOAT: XdbcType("FLOAT", pb.XDBC_REAL, 24, radix=2, unsigned=False),
    T.DOUBLE: XdbcType("DOUBLE", pb.XDBC_DOUBLE, 53, radix=2, unsigned=False),
    T.TEXT: _text("VARCHAR"),
    T.UUID: _text("UUID", 36, pb.SEARCHABLE_BASIC),
    T.JSON: _text("JSON"),
    T.VARBINARY: XdbcType("BLOB", pb.XDBC_VARBINARY),
    T.BIT: XdbcType("BIT", pb.XDBC_VARBINARY),
    T.BIGNUM: XdbcType("BIGNUM", pb.XDBC_VARBINARY),
    T.ARRAY: XdbcType("LIST", pb.XDBC_VARBINARY, searchable=pb.SEARCHABLE_NONE),
    T.STRUCT: XdbcType("STRUCT", pb.XDBC_VARBINARY, searchable=pb.SEARCHABLE_NONE),
    T.MAP: XdbcType("MAP", pb.XDBC_VARBINARY, searchable=pb.SEARCHABLE_NONE),
    T.UNION: XdbcType("UNION", pb.XDBC_VARBINARY, searchable=pb.SEARCHABLE_NONE),
    T.DATE: _moment("DATE", pb.XDBC_DATE, 10, 0, pb.XDBC_SUBCODE_DATE, "DATE"),
    T.TIME: _moment("TIME", pb.XDBC_TIME, 15, 6, pb.XDBC_SUBCODE_TIME, "TIME"),
    T.TIMETZ: _moment(
        "TIME WITH TIME ZONE", pb.XDBC_TIME, 21, 6, pb.XDBC_SUBCODE_TIME_WITH_TIMEZONE, "TIMETZ"
    ),
    T.TIMESTAMPNTZ: _moment(
        "TIMESTAMP", pb.XDBC_TIMESTAMP, 26, 6, pb.XDBC_SUBCODE_TIMESTAMP, "TIMESTAMP"
    ),
    T.TIMESTAMP_S: _moment(
        "TIMESTAMP_S", pb.XDBC_TIMESTAMP, 19, 0, pb.XDBC_SUBCODE_TIMESTAMP, "TIMESTAMP_S"
    ),
    T.TIMESTAMP_MS: _moment(
        "TIMESTAMP_MS", pb.XDBC_TIMESTAMP, 23, 3, pb.XDBC_SUBCODE_TIMESTAMP, "TIMESTAMP_MS"
    ),
    T.TIMESTAMP_NS: _moment(
        "TIMESTAMP_NS", pb.XDBC_TIMESTAMP, 29, 9, pb.XDBC_SUBCODE_TIMESTAMP, "TIMESTAMP_NS"
    ),
    T.TIMESTAMPTZ: _moment(
        "TIMESTAMP WITH TIME ZONE",
        pb.XDBC_TIMESTAMP,
        32,
        6,
        pb.XDBC_SUBCODE_TIMESTAMP_WITH_TIMEZONE,
        "TIMESTAMPTZ",
    ),
    T.INTERVAL: XdbcType(
        "INTERVAL",
        pb.XDBC_INTERVAL,
        sql_data_type=pb.XDBC_INTERVAL,
        literal_prefix="INTERVAL '",
        literal_suffix="'",
    ),
}
#: DuckDB's spellings that sqlglot reads as another type of the table above
_ALIASES = {T.TIMESTAMP: T.TIMESTAMPNTZ, T.ENUM: T.TEXT}
_UNKNOWN = XdbcType("UNKNOWN", pb.XDBC_UNKNOWN_TYPE, searchable=pb.SEARCHABLE_NONE)


def column_type(duckdb_type: str) -> XdbcType:
    """The XDBC description of a column of DuckDB type ``duckdb_type`` (as DuckDB spells
    it, e.g. ``DECIMAL(12,2)``): sized, and named as DuckDB names it, an ENUM as VARCHAR."""
    try:
        parsed = exp.DataType.build(duckdb_type, dialect="duckdb")
    except (ParseError, ValueError):
        return replace(_UNKNOWN, name=duckdb_type)
    kind = _ALIASES.get(parsed.this, parsed.this)
    base = BASE_TYPES.get(kind, _UNKNOWN)
    if kind is T.DECIMAL:
        precision, scale = (int(p.this.this) for p in parsed.expressions)
        return replace(base, name=duckdb_type, column_size=precision, decimal_digits=scale)
    return replace(base, name=_served_name(parsed, duckdb_type))


def _served_name(parsed: exp.DataType, duckdb_type: str) -> str:
    """``duckdb_type``, with every ENUM (also nested) named as the VARCHAR it is served as."""
    if not any(node.this is T.ENUM for node in parsed.find_all(exp.DataType)):
        return duckdb_type
    plain = parsed.transform(
        lambda node: (
            exp.DataType.build("VARCHAR")
            if isinstance(node, exp.DataType) and node.this is T.ENUM
            else node
        )
    )
    return "VARCHAR" if parsed.this is T.ENUM else plain.sql("duckdb")


def field_metadata(
    duckdb_type: str,
    catalog: str,
    schema: str,
    table: str,
    remarks: str = "",
) -> dict[str, str]:
    """The metadata of one GetTables ``table_schema`` field: Flight SQL's column keys (read
    by the JDBC driver and ADBC) and ADBC's ``XDBC_*`` keys (GetObjects' ``xdbc_*``)."""
    described = column_type(duckdb_type)
    entries: dict[str, object] = {
        "ARROW:FLIGHT:SQL:TYPE_NAME": described.name,
        "ARROW:FLIGHT:SQL:CATALOG_NAME": catalog,
        "ARROW:FLIGHT:SQL:SCHEMA_NAME": schema,
        "ARROW:FLIGHT:SQL:TABLE_NAME": table,
        "ARROW:FLIGHT:SQL:PRECISION": described.column_size,
        "ARROW:FLIGHT:SQL:SCALE": described.decimal_digits,
        "ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT": "0",
        "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE": "1" if described.case_sensitive else "0",
        "ARROW:FLIGHT:SQL:IS_READ_ONLY": "1",
        "ARROW:FLIGHT:SQL:IS_SEARCHABLE": "0" if described.searchable == 0 else "1",
        "XDBC_DATA_TYPE": described.data_type,
        "XDBC_TYPE_NAME": described.name,
        "XDBC_COLUMN_SIZE": described.column_size,
        "XDBC_DECIMAL_DIGITS": described.decimal_digits,
        "XDBC_NUM_PREC_RADIX": described.radix,
        # the engine cannot promise no NULLs: a contract's `required` is not checked
        # against the data, and a mask may be NULL
        "XDBC_NULLABLE": _NULLABLE,
        "XDBC_IS_NULLABLE": "YES",
        "XDBC_SQL_DATA_TYPE": described.verbose_type,
        "XDBC_DATETIME_SUB": described.datetime_subcode,
        "XDBC_IS_AUTOINCREMENT": "false",
        "XDBC_IS_AUTOGENERATEDCOLUMN": "false",
        "REMARKS": remarks or None,
    }
    return {key: str(value) for key, value in entries.items() if value is not None}


def described_schema(
    schema: pa.Schema,
    duckdb_types: dict[str, str],
    catalog: str,
    db_schema: str,
    table: str,
    remarks: dict[str, str],
) -> pa.Schema:
    """``schema`` with :func:`field_metadata` on every field (by column name)."""
    return pa.schema(
        [
            f.with_metadata(
                field_metadata(
                    duckdb_types[f.name], catalog, db_schema, table, remarks.get(f.name, "")
                )
            )
            for f in schema
        ],
        metadata=schema.metadata,
    )


def type_info_rows(data_type: int | None = None) -> Iterable[dict[str, object]]:
    """GetXdbcTypeInfo rows (every type, or those of XDBC code ``data_type``), ordered by
    code, then by closeness of the match, as JDBC's ``getTypeInfo``."""
    types = sorted(BASE_TYPES.values(), key=lambda t: t.data_type)  # stable: table order
    for described in types:
        if data_type is not None and described.data_type != data_type:
            continue
        numeric = described.unsigned is not None
        yield {
            "type_name": described.name,
            "data_type": described.data_type,
            "column_size": described.column_size,
            "literal_prefix": described.literal_prefix,
            "literal_suffix": described.literal_suffix,
            "create_params": list(described.create_params) if described.create_params else None,
            "nullable": pb.NULLABILITY_NULLABLE,
            "case_sensitive": described.case_sensitive,
            "searchable": described.searchable,
            "unsigned_attribute": described.unsigned,
            "fixed_prec_scale": described.fixed_prec_scale,
            "auto_increment": False if numeric else None,
            "local_type_name": described.name,
            "minimum_scale": described.minimum_scale,
            "maximum_scale": described.maximum_scale,
            "sql_data_type": described.verbose_type,
            "datetime_subcode": described.datetime_subcode,
            "num_prec_radix": described.radix,
            "interval_precision": None,
        }
