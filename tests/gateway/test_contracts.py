"""Contract validation: every broken contract is reported with its file, field and fix,
and every other product of the mesh is still served.

Each test breaks one contract (or its data) in a private copy of the demo mesh, loads the
catalog and checks three things: the broken product is missing and appears in
``catalog.problems`` under its contract file; the message names that file, the offending
field and a fix; every other product is still served and readable.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
import yaml

from gateway.catalog.catalog import load_catalog
from gateway.config import EngineSettings

CONTRACTS = {
    "sales.orders": Path("sales/orders.odcs.yaml"),
    "crm.customers": Path("crm/customers.odcs.yaml"),
    "logistics.shipments": Path("logistics/shipments.odcs.yaml"),
}
ROW_COUNTS = {"sales.orders": 200_000, "crm.customers": 20_000, "logistics.shipments": 150_000}
ALL_PRODUCTS = frozenset(CONTRACTS)


# --------------------------------------------------------------------------- helpers


def edit_contract(mesh: Path, product: str, change: Callable[[dict], None]) -> Path:
    """Apply ``change`` to the parsed contract of ``product`` and write it back."""
    path = mesh / CONTRACTS[product]
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def properties(document: dict) -> list[dict]:
    return document["schema"][0]["properties"]


def rejected(mesh: Path, broken: str, *, served: frozenset[str] | None = None) -> tuple[Path, str]:
    """Load the mesh; check ``broken`` is reported and the rest served; return the message."""
    expected_served = (ALL_PRODUCTS - {broken}) if served is None else served
    catalog = load_catalog(mesh, EngineSettings())
    try:
        assert {p.key for p in catalog} == expected_served
        for product in catalog:
            assert catalog.engine.row_count(product.domain, product.name) == ROW_COUNTS[product.key]
        assert len(catalog.problems) == 1, [p.message for p in catalog.problems]
        problem = catalog.problems[0]
        return problem.path, problem.message
    finally:
        catalog.engine.close()


def check_message(message: str, path: Path, field: str | None, *fix: str) -> None:
    """The message names the contract file, the field (in backquotes) and the fix."""
    assert str(path) in message, message
    if field is not None:
        assert f"`{field}`" in message, f"field `{field}` not named in: {message}"
    for words in fix:
        if words.startswith("re:"):
            assert re.search(words[3:], message), f"no fix matching {words[3:]!r} in: {message}"
        else:
            assert words in message, f"fix {words!r} not in: {message}"


# --------------------------------------------------------------------------- baseline


def test_the_pristine_demo_mesh_has_no_problems(mesh_copy: Path) -> None:
    catalog = load_catalog(mesh_copy, EngineSettings())
    try:
        assert {p.key for p in catalog} == ALL_PRODUCTS
        assert catalog.problems == ()
    finally:
        catalog.engine.close()


# --------------------------------------------------------------------------- servers


def test_unknown_server_type(mesh_copy: Path) -> None:
    path = edit_contract(mesh_copy, "sales.orders", lambda d: d["servers"][0].update(type="ftp"))
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(message, path, "servers[0].type", "'ftp'", "use one of: duckdb, local")


@pytest.mark.parametrize(
    ("product", "data"),
    [("crm.customers", "crm/data/customers.parquet"), ("sales.orders", "sales/data/orders.duckdb")],
)
def test_missing_data_file(mesh_copy: Path, product: str, data: str) -> None:
    (mesh_copy / data).unlink()
    where, message = rejected(mesh_copy, product)
    path = mesh_copy / CONTRACTS[product]
    assert where == path
    check_message(
        message, path, "servers[0].path", "data not found", "publish the data or fix the path"
    )
    # Binding a missing DuckDB file must not create an empty database in its place.
    assert not (mesh_copy / data).exists()


def test_missing_data_directory(mesh_copy: Path) -> None:
    shutil.rmtree(mesh_copy / "logistics/data/shipments")
    where, message = rejected(mesh_copy, "logistics.shipments")
    check_message(message, where, "servers[0].path", "data not found", "publish the data")


def test_unsupported_format(mesh_copy: Path) -> None:
    path = edit_contract(mesh_copy, "crm.customers", lambda d: d["servers"][0].update(format="csv"))
    where, message = rejected(mesh_copy, "crm.customers")
    assert where == path
    check_message(message, path, "servers[0].format", "'csv'", "use one of: parquet")


@pytest.mark.parametrize(
    "data_path",
    [
        "../crm/data/customers.parquet",
        "../crm/data/*.parquet",
        "data/../../crm/data/customers.parquet",
        "/etc/passwd",
    ],
)
def test_path_escaping_the_domain_folder(mesh_copy: Path, data_path: str) -> None:
    path = edit_contract(
        mesh_copy, "logistics.shipments", lambda d: d["servers"][0].update(path=data_path)
    )
    where, message = rejected(mesh_copy, "logistics.shipments")
    assert where == path
    check_message(
        message,
        path,
        "servers[0].path",
        repr(data_path),
        "a domain publishes only data inside its own folder",
    )


def test_path_escaping_through_a_symlink(mesh_copy: Path) -> None:
    os.symlink(mesh_copy / "crm/data/customers.parquet", mesh_copy / "sales/data/customers.parquet")
    path = edit_contract(
        mesh_copy, "sales.orders", lambda d: d["servers"][0].update(path="data/customers.parquet")
    )
    _, message = rejected(mesh_copy, "sales.orders")
    check_message(
        message,
        path,
        "servers[0].path",
        "outside the domain folder",
        "a domain publishes only data inside its own folder",
    )


def test_path_escaping_through_dotdot_after_a_wildcard(mesh_copy: Path) -> None:
    """`data/*/../../../crm/...`: the glob root (`data`) is inside the domain, the files are not.

    The logistics domain must not be able to republish crm's customers (with its own
    classification and tags) by pointing a glob through `..` after a wildcard segment.
    """
    (mesh_copy / "logistics/data/any").mkdir()

    def republish_crm(document: dict) -> None:
        document["servers"][0]["path"] = "data/*/../../../crm/data/customers.parquet"
        document["schema"][0]["properties"] = [
            {"name": "ssn", "physicalType": "VARCHAR", "classification": "public"}
        ]

    path = edit_contract(mesh_copy, "logistics.shipments", republish_crm)
    catalog = load_catalog(mesh_copy, EngineSettings())
    try:
        assert catalog.product("logistics", "shipments") is None, (
            "logistics.shipments republishes crm/data/customers.parquet: "
            f"{catalog.engine.row_count('logistics', 'shipments')} rows of crm's ssn column"
        )
        messages = [p.message for p in catalog.problems]
        assert len(messages) == 1
        check_message(
            messages[0],
            path,
            "servers[0].path",
            "a domain publishes only data inside its own folder",
        )
    finally:
        catalog.engine.close()


@pytest.mark.parametrize("servers", [None, []], ids=["absent", "empty"])
def test_no_servers(mesh_copy: Path, servers: list | None) -> None:
    def drop(document: dict) -> None:
        if servers is None:
            del document["servers"]
        else:
            document["servers"] = servers

    path = edit_contract(mesh_copy, "sales.orders", drop)
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(message, path, "servers", "add one server")


# --------------------------------------------------------------------------- columns vs data


def test_declared_column_missing_in_source(mesh_copy: Path) -> None:
    path = edit_contract(
        mesh_copy, "sales.orders", lambda d: properties(d)[2].update(name="territory")
    )
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(
        message,
        path,
        "schema[0].properties[2].name",
        "'territory'",
        "source lacks it",
        "fix the name or publish the column",
    )


def test_physical_type_mismatch(mesh_copy: Path) -> None:
    # crm.customers.name is VARCHAR in the Parquet file; declare it BIGINT.
    path = edit_contract(
        mesh_copy, "crm.customers", lambda d: properties(d)[1].update(physicalType="BIGINT")
    )
    where, message = rejected(mesh_copy, "crm.customers")
    assert where == path
    check_message(
        message,
        path,
        "schema[0].properties[1].physicalType",
        "BIGINT",
        "VARCHAR",
        "fix the contract or the data",
    )


def test_physical_type_that_is_not_a_duckdb_type(mesh_copy: Path) -> None:
    path = edit_contract(
        mesh_copy, "sales.orders", lambda d: properties(d)[0].update(physicalType="NOT A TYPE((")
    )
    _, message = rejected(mesh_copy, "sales.orders")
    check_message(
        message,
        path,
        "schema[0].properties[0].physicalType",
        "not a DuckDB type",
        "use e.g. BIGINT",
    )


def test_logical_type_mismatch(mesh_copy: Path) -> None:
    def declare_region_integer(document: dict) -> None:
        region = properties(document)[2]
        del region["physicalType"]
        region["logicalType"] = "integer"

    path = edit_contract(mesh_copy, "sales.orders", declare_region_integer)
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(
        message,
        path,
        "schema[0].properties[2].logicalType",
        "integer",
        "VARCHAR",
        "fix the contract or the data",
    )


def test_unknown_logical_type(mesh_copy: Path) -> None:
    def weird(document: dict) -> None:
        del properties(document)[2]["physicalType"]
        properties(document)[2]["logicalType"] = "colour"

    path = edit_contract(mesh_copy, "sales.orders", weird)
    _, message = rejected(mesh_copy, "sales.orders")
    check_message(message, path, "schema[0].properties[2].logicalType", "'colour'", "use one of")


def test_column_without_any_type(mesh_copy: Path) -> None:
    def untyped(document: dict) -> None:
        del properties(document)[3]["physicalType"]
        del properties(document)[3]["logicalType"]

    path = edit_contract(mesh_copy, "sales.orders", untyped)
    _, message = rejected(mesh_copy, "sales.orders")
    check_message(message, path, "schema[0].properties[3]", "physicalType: BIGINT")


def test_duplicate_column(mesh_copy: Path) -> None:
    def duplicate(document: dict) -> None:
        properties(document).append(dict(properties(document)[1], name="Customer_ID"))

    path = edit_contract(mesh_copy, "sales.orders", duplicate)
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(
        message,
        path,
        "schema[0].properties[5].name",
        "declared twice",
        "re:(?i)\\b(remove|rename|drop|delete)\\b",
    )


# --------------------------------------------------------------------------- YAML and ODCS


def test_bad_yaml_syntax_names_the_line(mesh_copy: Path) -> None:
    path = mesh_copy / CONTRACTS["crm.customers"]
    lines = path.read_text(encoding="utf-8").splitlines()
    index = lines.index("status: active")
    lines[index] = "status: active: yes"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    where, message = rejected(mesh_copy, "crm.customers")
    assert where == path
    check_message(message, path, None, f"line {index + 1}", "fix the YAML syntax")


@pytest.mark.parametrize(
    "text", ["- a\n- b\n", "just a string\n", ""], ids=["list", "scalar", "empty"]
)
def test_yaml_that_is_not_a_mapping(mesh_copy: Path, text: str) -> None:
    path = mesh_copy / CONTRACTS["crm.customers"]
    path.write_text(text, encoding="utf-8")
    where, message = rejected(mesh_copy, "crm.customers")
    assert where == path
    check_message(message, path, None, "YAML mapping", "ODCS v3")


def test_unknown_top_level_key(mesh_copy: Path) -> None:
    path = edit_contract(mesh_copy, "sales.orders", lambda d: d.update(ownr="sales-data"))
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(
        message, path, "ownr", "Extra inputs are not permitted", "open-data-contract-standard"
    )


def test_wrongly_typed_odcs_field(mesh_copy: Path) -> None:
    path = edit_contract(mesh_copy, "sales.orders", lambda d: d.update(apiVersion=["v3"]))
    _, message = rejected(mesh_copy, "sales.orders")
    check_message(message, path, "apiVersion", "not a valid ODCS v3 contract")


def test_invalid_nested_odcs_field_uses_the_bracket_field_path(mesh_copy: Path) -> None:
    """Nested pydantic errors should name the field like every other message does."""
    path = edit_contract(
        mesh_copy, "sales.orders", lambda d: properties(d)[1].update(required={"not": "a bool"})
    )
    _, message = rejected(mesh_copy, "sales.orders")
    check_message(message, path, "schema[0].properties[1].required", "not a valid ODCS v3 contract")


def test_misspelled_column_key_is_not_silently_ignored(mesh_copy: Path) -> None:
    """`tag: [pii]` instead of `tags: [pii]` must not silently drop the pii tag."""

    def misspell_tags(document: dict) -> None:
        email = properties(document)[2]
        email["tag"] = email.pop("tags")

    path = edit_contract(mesh_copy, "crm.customers", misspell_tags)
    catalog = load_catalog(mesh_copy, EngineSettings())
    try:
        product = catalog.product("crm", "customers")
        if product is not None:
            email = next(c for c in product.columns if c.name == "email")
            pytest.fail(
                f"crm.customers served with email tags {email.tags!r}: the misspelled "
                "`tag` key was ignored and the column lost its pii tag"
            )
        check_message(catalog.problems[0].message, path, "schema[0].properties[2].tag")
    finally:
        catalog.engine.close()


# --------------------------------------------------------------------------- domain and names


def test_missing_domain(mesh_copy: Path) -> None:
    path = edit_contract(mesh_copy, "sales.orders", lambda d: d.pop("domain"))
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(message, path, "domain", "missing", "name the owning domain")


def test_domain_differing_from_folder(mesh_copy: Path) -> None:
    path = edit_contract(mesh_copy, "sales.orders", lambda d: d.update(domain="crm"))
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(
        message,
        path,
        "domain",
        "'crm'",
        "'sales'",
        "a domain publishes contracts only in its own folder",
    )


@pytest.mark.parametrize("schema", [None, []], ids=["absent", "empty"])
def test_no_schema(mesh_copy: Path, schema: list | None) -> None:
    def drop(document: dict) -> None:
        if schema is None:
            del document["schema"]
        else:
            document["schema"] = schema

    path = edit_contract(mesh_copy, "sales.orders", drop)
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(message, path, "schema", "declare the product's columns")


def test_schema_without_columns(mesh_copy: Path) -> None:
    path = edit_contract(mesh_copy, "sales.orders", lambda d: d["schema"][0].update(properties=[]))
    _, message = rejected(mesh_copy, "sales.orders")
    check_message(message, path, "schema[0].properties", "list them")


@pytest.mark.parametrize("name", ["Orders", "orders-2", "2orders", "or ders", "orders;drop"])
def test_invalid_product_name(mesh_copy: Path, name: str) -> None:
    path = edit_contract(mesh_copy, "sales.orders", lambda d: d["schema"][0].update(name=name))
    where, message = rejected(mesh_copy, "sales.orders")
    assert where == path
    check_message(
        message,
        path,
        "schema[0].name",
        repr(name),
        "use lower-case letters, digits and underscores",
    )


def test_two_contracts_publishing_the_same_product(mesh_copy: Path) -> None:
    first = mesh_copy / CONTRACTS["sales.orders"]
    second = first.with_name("orders_copy.odcs.yaml")
    shutil.copyfile(first, second)
    where, message = rejected(mesh_copy, "sales.orders", served=ALL_PRODUCTS)
    assert where == second
    check_message(message, second, None, str(first), "rename one of them")
    # The field that collides is the product name of the second contract.
    check_message(message, second, "schema[0].name")


# --------------------------------------------------------------------------- unreadable data


def test_corrupt_parquet_file(mesh_copy: Path) -> None:
    (mesh_copy / "crm/data/customers.parquet").write_bytes(b"this is not parquet\x00\xff" * 64)
    where, message = rejected(mesh_copy, "crm.customers")
    path = mesh_copy / CONTRACTS["crm.customers"]
    assert where == path
    check_message(message, path, None, "cannot be read", "fix the data")
    check_message(message, path, "servers[0].path")


def test_corrupt_duckdb_file(mesh_copy: Path) -> None:
    (mesh_copy / "sales/data/orders.duckdb").write_bytes(b"garbage" * 2048)
    _, message = rejected(mesh_copy, "sales.orders")
    path = mesh_copy / CONTRACTS["sales.orders"]
    check_message(message, path, None, "cannot be read", "fix the data")
    check_message(message, path, "servers[0].path")


def test_physical_name_missing_from_the_duckdb_file(mesh_copy: Path) -> None:
    path = edit_contract(
        mesh_copy, "sales.orders", lambda d: d["schema"][0].update(physicalName="orders_v2")
    )
    _, message = rejected(mesh_copy, "sales.orders")
    check_message(message, path, None, "orders_v2")
    check_message(message, path, "schema[0].physicalName")


def test_extra_source_columns_are_fine(mesh_copy: Path) -> None:
    """A source may have more columns than the contract declares; only declared ones are served."""
    data = mesh_copy / "crm/data/customers.parquet"
    widened = data.with_name("wide.parquet")
    duckdb.sql(
        f"COPY (SELECT *, 'x' AS internal_note FROM read_parquet('{data}')) "
        f"TO '{widened}' (FORMAT parquet)"
    )
    widened.replace(data)
    catalog = load_catalog(mesh_copy, EngineSettings())
    try:
        assert catalog.problems == ()
        assert "internal_note" not in catalog.product("crm", "customers").schema.names
    finally:
        catalog.engine.close()


@pytest.mark.parametrize(
    "body",
    [
        "SELECT * FROM orders_raw",  # harmless, but a view runs with the gateway's rights
        # another domain's file, read past its policy
        "SELECT o.* FROM orders_raw o JOIN read_parquet('{crm}') c USING (customer_id)",
    ],
)
def test_a_view_in_the_duckdb_file_is_refused(mesh_copy: Path, body: str) -> None:
    """A product is a table: a view's SQL would run with the gateway's rights (any
    product's files, the gateway's catalog of ungoverned product views, the clock)."""
    with duckdb.connect(str(mesh_copy / "sales/data/orders.duckdb")) as con:
        con.execute("ALTER TABLE orders RENAME TO orders_raw")
        crm = mesh_copy / "crm/data/customers.parquet"
        con.execute(f"CREATE VIEW orders AS {body.format(crm=crm)}")
    _, message = rejected(mesh_copy, "sales.orders")
    path = mesh_copy / CONTRACTS["sales.orders"]
    check_message(
        message, path, "schema[0].physicalName", "is a view", "publish the rows as a table"
    )


def test_a_table_with_generated_columns_is_refused(mesh_copy: Path) -> None:
    """A generated column is computed on every read: random() or now() there would make
    the product's rows change with no file changing (the result cache could not tell)."""
    with duckdb.connect(str(mesh_copy / "sales/data/orders.duckdb")) as con:
        con.execute("ALTER TABLE orders RENAME TO orders_raw")
        con.execute(
            "CREATE TABLE orders (order_id BIGINT, customer_id BIGINT, region VARCHAR, "
            "amount DECIMAL(12, 2), order_date DATE, drawn DOUBLE GENERATED ALWAYS AS (random()))"
        )
        con.execute("INSERT INTO orders SELECT * FROM orders_raw")
    _, message = rejected(mesh_copy, "sales.orders")
    path = mesh_copy / CONTRACTS["sales.orders"]
    check_message(message, path, "schema[0].physicalName", "generated columns", "plain columns")


def test_a_view_product_is_not_served_through_adbc(demo_mesh: Path, tmp_path: Path) -> None:
    from support.clients import CLIENT_ERRORS, adbc_connections, error_text
    from support.servers import private_gateway

    def publish_a_view(mesh: Path) -> None:
        crm = mesh / "crm/data/customers.parquet"
        with duckdb.connect(str(mesh / "sales/data/orders.duckdb")) as con:
            con.execute("ALTER TABLE orders RENAME TO orders_raw")
            con.execute(
                "CREATE VIEW orders AS SELECT o.order_id, o.customer_id, c.email AS region, "
                f"o.amount, o.order_date FROM orders_raw o JOIN read_parquet('{crm}') c "
                "USING (customer_id)"
            )

    with (
        private_gateway(demo_mesh, tmp_path, prepare=publish_a_view) as running,
        adbc_connections() as connect,
        connect(running.uri, "bob").cursor() as cursor,
    ):
        with pytest.raises(CLIENT_ERRORS) as caught:
            cursor.execute("SELECT region FROM sales.orders LIMIT 5")
            cursor.fetch_arrow_table()
        cursor.execute("SELECT count(*) FROM crm.customers")  # the others still serve
        assert cursor.fetchone() == (ROW_COUNTS["crm.customers"],)
    assert "sales.orders" in error_text(caught.value) and "@" not in error_text(caught.value)
