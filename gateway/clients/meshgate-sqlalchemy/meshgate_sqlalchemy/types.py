"""Arrow types (what Meshgate's metadata describes) as SQLAlchemy types."""

from __future__ import annotations

import pyarrow as pa
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql

# Exact Arrow types first, then families checked by predicate (order matters: a
# dictionary or extension type is unwrapped before it is looked at).
_EXACT: dict[pa.DataType, sqltypes.TypeEngine] = {
    pa.bool_(): sqltypes.Boolean(),
    pa.int8(): sqltypes.SmallInteger(),
    pa.int16(): sqltypes.SmallInteger(),
    pa.int32(): sqltypes.Integer(),
    pa.int64(): sqltypes.BigInteger(),
    pa.uint8(): sqltypes.SmallInteger(),
    pa.uint16(): sqltypes.Integer(),
    pa.uint32(): sqltypes.BigInteger(),
    pa.uint64(): sqltypes.Numeric(20, 0),
    pa.float16(): sqltypes.REAL(),
    pa.float32(): sqltypes.REAL(),
    pa.float64(): postgresql.DOUBLE_PRECISION(),
    pa.date32(): sqltypes.Date(),
    pa.date64(): sqltypes.Date(),
    pa.null(): sqltypes.NullType(),
}


def sqlalchemy_type(data_type: pa.DataType) -> sqltypes.TypeEngine:
    """The SQLAlchemy type of a column of Arrow type ``data_type`` (NullType when unknown)."""
    if pa.types.is_dictionary(data_type):
        return sqlalchemy_type(data_type.value_type)
    if isinstance(data_type, pa.ExtensionType):
        return sqlalchemy_type(data_type.storage_type)
    exact = _EXACT.get(data_type)
    if exact is not None:
        return exact
    if pa.types.is_decimal(data_type):
        return sqltypes.Numeric(data_type.precision, data_type.scale)
    if (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or _is(data_type, "is_string_view")
    ):
        return sqltypes.String()
    if (
        pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_fixed_size_binary(data_type)
        or _is(data_type, "is_binary_view")
    ):
        return sqltypes.LargeBinary()
    if pa.types.is_timestamp(data_type):
        return sqltypes.DateTime(timezone=data_type.tz is not None)
    if pa.types.is_time(data_type):
        return sqltypes.Time()
    if pa.types.is_duration(data_type) or pa.types.is_interval(data_type):
        return sqltypes.Interval()
    if (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    ):
        item = sqlalchemy_type(data_type.value_type)
        if isinstance(item, sqltypes.NullType):
            return sqltypes.NullType()
        return postgresql.ARRAY(item)
    if pa.types.is_struct(data_type) or pa.types.is_map(data_type):
        return sqltypes.JSON()
    return sqltypes.NullType()


def _is(data_type: pa.DataType, predicate: str) -> bool:
    """``pa.types.<predicate>(data_type)``, False on a pyarrow too old to have it."""
    check = getattr(pa.types, predicate, None)
    return bool(check(data_type)) if check is not None else False
