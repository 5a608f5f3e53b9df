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

from gateway.memo import held_bytes

#: type names up to this many bytes are kept (a client can write a struct type of any
#: length): at most 4,096 x 16 KiB
_KEPT_NAME_BYTES = 16 * 1024
#: at most this many kept types; past it the cache starts afresh
_KEPT_TYPES = 4096


class ArrowTypeCache:
    """DuckDB type -> Arrow type, learned from DuckDB and kept for the engine's lifetime
    (an engine's settings, such as its time zone, are locked, so the answers never change);
    bounded: long type names are learned each time, and at most ``_KEPT_TYPES`` kept."""

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
        arrow = self._arrow_types(cursor, dict(zip(keys, types, strict=True)))
        return pa.schema(
            [pa.field(name, arrow[key]) for name, key in zip(names, keys, strict=True)]
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
        arrow = self._arrow_types(
            cursor, {str(duck_type): duck_type for duck_type in duck_types if duck_type is not None}
        )
        return [
            pa.null() if duck_type is None else arrow[str(duck_type)] for duck_type in duck_types
        ]

    def _arrow_types(
        self, cursor: duckdb.DuckDBPyConnection, wanted: dict[str, duckdb.sqltypes.DuckDBPyType]
    ) -> dict[str, pa.DataType]:
        """The Arrow type of each of ``wanted`` (by its DuckDB type name), kept or learned."""
        with self._lock:
            known = {key: self._types[key] for key in wanted if key in self._types}
        missing = {key: duck_type for key, duck_type in wanted.items() if key not in known}
        if not missing:
            return known
        nulls = [
            duckdb.ConstantExpression(None).cast(duck_type).alias(f"c{index}")
            for index, duck_type in enumerate(missing.values())
        ]
        learned = cursor.sql("SELECT 1").select(*nulls).limit(0).to_arrow_table().schema
        found = dict(zip(missing, learned.types, strict=True))
        with self._lock:
            for key, arrow in found.items():
                if held_bytes(key) <= _KEPT_NAME_BYTES:
                    if len(self._types) >= _KEPT_TYPES:
                        self._types.clear()
                    self._types[key] = arrow
        return known | found

    def __len__(self) -> int:
        return len(self._types)


#: schemas wider than this are not memoized by identity (a client can ask for thousands of
#: columns: ``SELECT *, *, *, ...``); byte-bounded caches weigh them (``schema_bytes``)
WIDE_SCHEMA_FIELDS = 1024


def schema_bytes(schema: pa.Schema) -> int:
    """The bytes of ``schema`` as Arrow IPC: what a cache holding it weighs it at."""
    return int(schema.serialize().size)


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
