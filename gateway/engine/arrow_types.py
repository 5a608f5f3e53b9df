"""Arrow schemas of bound DuckDB relations, without running them.

Running ``relation.limit(0)`` to learn a result's Arrow schema optimizes, plans and opens
every scan of the query: on TPC-H it costs more than parsing, authorizing and rewriting
the query together. Binding alone (``cursor.sql(sql)``) already gives the result's column
names and DuckDB types; this module turns those into Arrow types the way DuckDB itself
does, by asking DuckDB once per distinct type (a typed NULL, zero rows) and caching the
answer. DuckDB stays the only authority on its own Arrow conversion: nothing here maps
types by hand.
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa


class ArrowTypeCache:
    """DuckDB type -> Arrow type, learned from DuckDB and kept for the engine's lifetime
    (an engine's settings, such as its time zone, are locked, so the answers never change)."""

    def __init__(self) -> None:
        self._types: dict[str, pa.DataType] = {}
        self._lock = threading.Lock()

    def schema(
        self, cursor: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation
    ) -> pa.Schema:
        """The Arrow schema ``relation`` would stream (ENUMs as dictionaries, as DuckDB
        sends them), learning unseen types on ``cursor``."""
        names = relation.columns
        if len({name.lower() for name in names}) < len(names):
            # DuckDB renames repeated result names (``a``, ``a_1``, ...): let it, exactly.
            return relation.limit(0).to_arrow_table().schema
        types = relation.types
        keys = [str(duck_type) for duck_type in types]
        missing = {
            key: duck_type
            for key, duck_type in zip(keys, types, strict=True)
            if key not in self._types
        }
        if missing:
            self._learn(cursor, missing)
        return pa.schema(
            [pa.field(name, self._types[key]) for name, key in zip(names, keys, strict=True)]
        )

    def types(
        self, cursor: duckdb.DuckDBPyConnection, names: list[str | None]
    ) -> list[pa.DataType]:
        """The Arrow type DuckDB streams for each DuckDB type named (SQL type text); null
        for None or a name DuckDB does not read as a type."""
        duck_types: list[duckdb.sqltypes.DuckDBPyType | None] = []
        for name in names:
            try:
                duck_types.append(None if name is None else cursor.sqltype(name))
            except duckdb.Error:
                duck_types.append(None)
        missing = {
            str(duck_type): duck_type
            for duck_type in duck_types
            if duck_type is not None and str(duck_type) not in self._types
        }
        if missing:
            self._learn(cursor, missing)
        return [
            pa.null() if duck_type is None else self._types[str(duck_type)]
            for duck_type in duck_types
        ]

    def _learn(
        self, cursor: duckdb.DuckDBPyConnection, missing: dict[str, duckdb.sqltypes.DuckDBPyType]
    ) -> None:
        nulls = [
            duckdb.ConstantExpression(None).cast(duck_type).alias(f"c{index}")
            for index, duck_type in enumerate(missing.values())
        ]
        learned = cursor.sql("SELECT 1").select(*nulls).limit(0).to_arrow_table().schema
        with self._lock:
            self._types.update(zip(missing, learned.types, strict=True))


def plain_type(data_type: pa.DataType) -> pa.DataType:
    """``data_type`` with every dictionary (a DuckDB ENUM), however deeply nested in lists,
    structs and maps, replaced by its value type: Flight generator streams send no
    dictionary messages, so an ENUM travels as its values."""
    if pa.types.is_dictionary(data_type):
        return plain_type(data_type.value_type)
    if pa.types.is_map(data_type):
        key, item = data_type.key_field, data_type.item_field
        return pa.map_(
            key.with_type(plain_type(key.type)),
            item.with_type(plain_type(item.type)),
            keys_sorted=data_type.keys_sorted,
        )
    if pa.types.is_struct(data_type):
        return pa.struct([field.with_type(plain_type(field.type)) for field in data_type])
    if (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or (pa.types.is_list_view(data_type))
    ):
        value = data_type.value_field
        return _list_like(data_type, value.with_type(plain_type(value.type)))
    if pa.types.is_fixed_size_list(data_type):
        value = data_type.value_field
        return pa.list_(value.with_type(plain_type(value.type)), data_type.list_size)
    return data_type


def _list_like(data_type: pa.DataType, value: pa.Field) -> pa.DataType:
    if pa.types.is_large_list(data_type):
        return pa.large_list(value)
    if pa.types.is_list_view(data_type):
        return pa.list_view(value)
    return pa.list_(value)
