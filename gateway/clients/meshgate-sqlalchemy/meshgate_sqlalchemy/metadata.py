"""What a Meshgate user may see, from Flight SQL metadata (GetObjects, GetTables) over ADBC.

The gateway answers these calls with the products the logged-in user may read, so the
dialect's inspector shows each user their own catalog. Schemas are Meshgate's domains,
tables its products. Names go to the server as LIKE patterns: they are escaped, so that
``order_items`` never matches ``orderXitems``.
"""

from __future__ import annotations

from typing import Any

import adbc_driver_manager
import pyarrow as pa

TABLE_TYPE = "TABLE"


def like_literal(name: str) -> str:
    """``name`` as a LIKE pattern that matches exactly ``name``."""
    return name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def schema_names(conn: Any) -> list[str]:
    """The domains with at least one product the user may read."""
    catalogs = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
    return sorted(
        {
            schema["db_schema_name"]
            for catalog in catalogs
            for schema in catalog["catalog_db_schemas"] or ()
        }
    )


def check_schema(conn: Any, schema: str) -> None:
    """Refuse a default schema in which the user may read no product (a typo, or a domain
    kept from them): unqualified names there would resolve to nothing they may read."""
    if schema not in schema_names(conn):
        raise adbc_driver_manager.ProgrammingError(
            f"unknown schema {schema} (or you may not read any of its products): "
            "the path of a meshgate URL names a domain you can read",
            status_code=adbc_driver_manager.AdbcStatusCode.NOT_FOUND,
        )


def table_names(conn: Any, schema: str) -> list[str]:
    """The products of domain ``schema`` that the user may read."""
    catalogs = (
        conn.adbc_get_objects(
            depth="tables", db_schema_filter=like_literal(schema), table_types_filter=[TABLE_TYPE]
        )
        .read_all()
        .to_pylist()
    )
    return sorted(
        {
            table["table_name"]
            for catalog in catalogs
            for found in catalog["catalog_db_schemas"] or ()
            if found["db_schema_name"] == schema
            for table in found["db_schema_tables"] or ()
        }
    )


def table_schema(conn: Any, schema: str, table: str) -> pa.Schema | None:
    """The Arrow schema of product ``schema.table``; None when the user may not see it."""
    try:
        return conn.adbc_get_table_schema(
            like_literal(table), db_schema_filter=like_literal(schema)
        )
    except adbc_driver_manager.Error as exc:
        if exc.status_code == adbc_driver_manager.AdbcStatusCode.NOT_FOUND:
            return None
        raise
