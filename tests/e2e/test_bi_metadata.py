"""The Flight SQL metadata BI tools read, through real clients: XDBC type codes and type
names of every column (ADBC GetObjects, GetTables' ``table_schema``), and GetXdbcTypeInfo.

A private gateway serves the demo mesh plus ``lab.alltypes``, one column per DuckDB type
family the gateway serves; bob (admin) reads it whole, carol (marketing) with ``bi``
hashed (a mask that changes the type) and without ``v``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import yaml
from support.clients import adbc_connect, flight_client
from support.servers import private_gateway

from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql import schemas
from gateway.flightsql.protocol import pack

#: column -> (DuckDB type in the contract, type name clients see, XDBC code)
COLUMNS: dict[str, tuple[str, str, int]] = {
    "b": ("BOOLEAN", "BOOLEAN", -7),
    "ti": ("TINYINT", "TINYINT", -6),
    "si": ("SMALLINT", "SMALLINT", 5),
    "i": ("INTEGER", "INTEGER", 4),
    "bi": ("BIGINT", "BIGINT", -5),
    "ut": ("UTINYINT", "UTINYINT", -6),
    "ub": ("UBIGINT", "UBIGINT", -5),
    "hi": ("HUGEINT", "HUGEINT", 3),
    "f": ("FLOAT", "FLOAT", 7),
    "d": ("DOUBLE", "DOUBLE", 8),
    "dec": ("DECIMAL(9,3)", "DECIMAL(9,3)", 3),
    "v": ("VARCHAR", "VARCHAR", 12),
    "u": ("UUID", "UUID", 12),
    "bl": ("BLOB", "BLOB", -3),
    "dt": ("DATE", "DATE", 91),
    "tm": ("TIME", "TIME", 92),
    "ts": ("TIMESTAMP", "TIMESTAMP", 93),
    "tsn": ("TIMESTAMP_NS", "TIMESTAMP_NS", 93),
    "tsz": ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE", 93),
    "iv": ("INTERVAL", "INTERVAL", 10),
    "l": ("INTEGER[]", "INTEGER[]", -3),
    "st": ("STRUCT(a INTEGER)", "STRUCT(a INTEGER)", -3),
    # an ENUM is served as VARCHAR: its type would list values a row filter may hide
    "e": ("ENUM('secret_red', 'secret_green')", "VARCHAR", 12),
}
#: (column size, decimal digits, radix) the server reports where they apply
SIZES = {
    "i": ("10", "0", "10"),
    "bi": ("19", "0", "10"),
    "dec": ("9", "3", "10"),
    "d": ("53", None, "2"),
    "dt": ("10", "0", None),
    "ts": ("26", "6", None),
    "tsn": ("29", "9", None),
}
#: where the ADBC driver (1.13) differs: it computes ``xdbc_data_type`` from the Arrow type
#: itself (float and double are FLOAT, binary BINARY, an interval unknown) and reads only
#: the type name, scope and auto-increment of a column from the server's metadata
ADBC_CODES = {"f": 6, "d": 6, "bl": -2, "iv": 0}


def add_alltypes(mesh: Path) -> None:
    """``lab.alltypes``: one row, a contract, and carol's rules on it."""
    data = mesh / "lab" / "data"
    data.mkdir(parents=True)
    con = duckdb.connect(str(data / "alltypes.duckdb"))
    try:
        columns = ", ".join(f"{name} {declared}" for name, (declared, _, _) in COLUMNS.items())
        con.execute(f"CREATE TABLE alltypes ({columns})")
        con.execute(
            "INSERT INTO alltypes VALUES (true, 1, 2, 3, 4, 5, 6, 7, 1.5, 2.5, 3.25, 'x', "
            "'00000000-0000-0000-0000-000000000001', 'ab'::BLOB, DATE '2024-01-02', "
            "TIME '10:11:12', TIMESTAMP '2024-01-02 10:11:12', TIMESTAMP_NS '2024-01-02 10:11:12', "
            "TIMESTAMPTZ '2024-01-02 10:11:12+00', INTERVAL 3 DAY, [1, 2], {'a': 1}, 'secret_red')"
        )
    finally:
        con.close()
    contract = {
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": "urn:meshgate:lab:alltypes",
        "version": "1.0.0",
        "status": "active",
        "name": "alltypes",
        "domain": "lab",
        "dataProduct": "alltypes",
        "description": {"purpose": "One column per DuckDB type."},
        "servers": [{"server": "local", "type": "duckdb", "path": "data/alltypes.duckdb"}],
        "schema": [
            {
                "name": "alltypes",
                "physicalName": "alltypes",
                "physicalType": "table",
                "properties": [
                    {
                        "name": name,
                        "physicalType": declared,
                        "description": f"The {name} column.",
                        **({"tags": ["pii"]} if name == "bi" else {}),
                    }
                    for name, (declared, _, _) in COLUMNS.items()
                ],
            }
        ],
    }
    (mesh / "lab" / "alltypes.odcs.yaml").write_text(yaml.safe_dump(contract), encoding="utf-8")
    (mesh / "lab" / "policy.csv").write_text(
        "p, marketing, lab.alltypes, read, allow\np, marketing, lab.alltypes.v, read, deny\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def lab(demo_mesh, tmp_path_factory):
    with private_gateway(
        demo_mesh, tmp_path_factory.mktemp("bi_metadata"), prepare=add_alltypes
    ) as running:
        yield running


def _metadata(uri: str, user: str, message) -> pa.Table:
    client, options = flight_client(uri, user)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(message)), options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()
    assert table.schema.equals(info.schema)
    return table


def _served_schema(uri: str, user: str, domain: str, name: str) -> pa.Schema:
    rows = _metadata(
        uri,
        user,
        pb.CommandGetTables(
            db_schema_filter_pattern=domain, table_name_filter_pattern=name, include_schema=True
        ),
    ).to_pylist()
    assert len(rows) == 1
    return pa.ipc.read_schema(pa.py_buffer(rows[0]["table_schema"]))


def _adbc_columns(uri: str, user: str, domain: str, name: str) -> dict[str, dict]:
    conn = adbc_connect(uri, user)
    try:
        objects = conn.adbc_get_objects(
            depth="all", db_schema_filter=domain, table_name_filter=name
        ).read_all()
    finally:
        conn.close()
    tables = objects.to_pylist()[0]["catalog_db_schemas"][0]["db_schema_tables"]
    assert [t["table_name"] for t in tables] == [name]
    return {c["column_name"]: c for c in tables[0]["table_columns"]}


def test_get_objects_gives_every_column_its_type_name_and_code(lab):
    columns = _adbc_columns(lab.uri, "bob", "lab", "alltypes")
    assert list(columns) == list(COLUMNS)
    for name, (_, type_name, code) in COLUMNS.items():
        column = columns[name]
        assert column["xdbc_type_name"] == type_name, name
        expected = ADBC_CODES.get(name, code)
        assert column["xdbc_data_type"] == expected, name
        assert column["xdbc_sql_data_type"] == expected, name
        assert (
            column["xdbc_scope_catalog"],
            column["xdbc_scope_schema"],
            column["xdbc_scope_table"],
        ) == ("mesh", "lab", "alltypes")
        assert column["xdbc_is_autoincrement"] is False


def test_demo_products_name_their_types(gateway):
    columns = _adbc_columns(gateway.uri, "bob", "sales", "orders")
    assert {n: (c["xdbc_type_name"], c["xdbc_data_type"]) for n, c in columns.items()} == {
        "order_id": ("BIGINT", -5),
        "customer_id": ("BIGINT", -5),
        "region": ("VARCHAR", 12),
        "amount": ("DECIMAL(12,2)", 3),
        "order_date": ("DATE", 91),
    }


def test_table_schema_carries_xdbc_and_flight_sql_column_metadata(lab):
    schema = _served_schema(lab.uri, "bob", "lab", "alltypes")
    assert schema.names == list(COLUMNS)
    for name, (_, type_name, code) in COLUMNS.items():
        meta = {k.decode(): v.decode() for k, v in (schema.field(name).metadata or {}).items()}
        assert meta["ARROW:FLIGHT:SQL:TYPE_NAME"] == type_name, name
        assert meta["XDBC_TYPE_NAME"] == type_name, name
        assert int(meta["XDBC_DATA_TYPE"]) == code, name
        assert meta["ARROW:FLIGHT:SQL:SCHEMA_NAME"] == "lab"
        assert meta["ARROW:FLIGHT:SQL:TABLE_NAME"] == "alltypes"
        assert meta["ARROW:FLIGHT:SQL:IS_READ_ONLY"] == "1"
        assert meta["REMARKS"] == f"The {name} column."
        assert (meta["XDBC_NULLABLE"], meta["XDBC_IS_NULLABLE"]) == ("1", "YES")
        if name in SIZES:
            size, digits, radix = SIZES[name]
            assert meta.get("XDBC_COLUMN_SIZE") == size, name
            assert meta.get("XDBC_DECIMAL_DIGITS") == digits, name
            assert meta.get("XDBC_NUM_PREC_RADIX") == radix, name
    dates = {k.decode(): v.decode() for k, v in schema.field("dt").metadata.items()}
    assert (dates["XDBC_SQL_DATA_TYPE"], dates["XDBC_DATETIME_SUB"]) == ("9", "1")
    precision = {k.decode(): v.decode() for k, v in schema.field("dec").metadata.items()}
    assert (precision["ARROW:FLIGHT:SQL:PRECISION"], precision["ARROW:FLIGHT:SQL:SCALE"]) == (
        "9",
        "3",
    )


def test_enum_values_never_reach_the_metadata(lab):
    client, options = flight_client(lab.uri, "bob")
    try:
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(
                pack(pb.CommandGetTables(table_name_filter_pattern="alltypes", include_schema=True))
            ),
            options,
        )
        raw = client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()
    served = raw.column("table_schema")[0].as_py()
    assert b"secret_green" not in served and b"secret_red" not in served


def test_a_mask_changes_the_type_a_user_sees_and_denied_columns_are_absent(lab):
    carol = _adbc_columns(lab.uri, "carol", "lab", "alltypes")
    assert "v" not in carol
    assert (carol["bi"]["xdbc_type_name"], carol["bi"]["xdbc_data_type"]) == ("VARCHAR", 12)
    bob = _adbc_columns(lab.uri, "bob", "lab", "alltypes")
    assert (bob["bi"]["xdbc_type_name"], bob["bi"]["xdbc_data_type"]) == ("BIGINT", -5)


def test_get_xdbc_type_info_lists_the_served_types(lab):
    table = _metadata(lab.uri, "bob", pb.CommandGetXdbcTypeInfo())
    assert table.schema.equals(schemas.GET_XDBC_TYPE_INFO)
    rows = table.to_pylist()
    codes = [r["data_type"] for r in rows]
    assert codes == sorted(codes)
    by_name = {r["type_name"]: r for r in rows}
    for _, type_name, code in COLUMNS.values():
        base = type_name.split("(")[0].split("[")[0]
        base = {"INTEGER[]": "LIST"}.get(type_name, base)
        assert by_name[base]["data_type"] == code, type_name
    decimal = by_name["DECIMAL"]
    assert decimal["create_params"] == ["precision", "scale"]
    assert (decimal["column_size"], decimal["maximum_scale"], decimal["num_prec_radix"]) == (
        38,
        38,
        10,
    )
    assert by_name["UTINYINT"]["unsigned_attribute"] is True
    assert by_name["TINYINT"]["unsigned_attribute"] is False
    assert (by_name["DATE"]["sql_data_type"], by_name["DATE"]["datetime_subcode"]) == (9, 1)
    assert by_name["VARCHAR"]["searchable"] == pb.SEARCHABLE_FULL
    assert all(r["nullable"] == pb.NULLABILITY_NULLABLE for r in rows)


def test_get_xdbc_type_info_filters_by_code(lab):
    rows = _metadata(lab.uri, "alice", pb.CommandGetXdbcTypeInfo(data_type=93)).to_pylist()
    assert [r["type_name"] for r in rows] == [
        "TIMESTAMP",
        "TIMESTAMP_S",
        "TIMESTAMP_MS",
        "TIMESTAMP_NS",
        "TIMESTAMP WITH TIME ZONE",
    ]
    assert _metadata(lab.uri, "alice", pb.CommandGetXdbcTypeInfo(data_type=1)).num_rows == 0


SAMPLES = {
    "VARCHAR": "x",
    "UUID": "00000000-0000-0000-0000-000000000001",
    "JSON": '{"a": 1}',
    "DATE": "2024-01-02",
    "TIME": "10:11:12",
    "TIME WITH TIME ZONE": "10:11:12+01",
    "TIMESTAMP": "2024-01-02 10:11:12",
    "TIMESTAMP_S": "2024-01-02 10:11:12",
    "TIMESTAMP_MS": "2024-01-02 10:11:12.123",
    "TIMESTAMP_NS": "2024-01-02 10:11:12.123456789",
    "TIMESTAMP WITH TIME ZONE": "2024-01-02 10:11:12+00",
    "INTERVAL": "3 days",
}


def test_literal_prefixes_are_accepted_by_the_gateway(lab):
    rows = _metadata(lab.uri, "bob", pb.CommandGetXdbcTypeInfo()).to_pylist()
    with_prefix = {r["type_name"]: r for r in rows if r["literal_prefix"]}
    assert set(with_prefix) == set(SAMPLES)
    conn = adbc_connect(lab.uri, "bob")
    try:
        cur = conn.cursor()
        for type_name, row in with_prefix.items():
            literal = f"{row['literal_prefix']}{SAMPLES[type_name]}{row['literal_suffix']}"
            cur.execute(f"SELECT {literal} AS v")
            assert cur.fetchall()[0][0] is not None, literal
    finally:
        conn.close()
