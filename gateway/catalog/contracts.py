"""Data product contracts: ODCS v3 YAML files (``<domain>/<product>.odcs.yaml``).

``read_contract`` validates a file with the ``open-data-contract-standard`` model and
returns one ``ProductContract`` per schema object. Every error names the file, the field
and what to do. Whether the declared columns exist in the source is checked later, by the
engine, against the real data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from open_data_contract_standard.model import (
    OpenDataContractStandard,
    SchemaObject,
    SchemaProperty,
    Server,
)
from pydantic import ValidationError

from connectors.base import SourceSpec
from gateway.errors import ContractError

CONTRACT_SUFFIX = ".odcs.yaml"
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class ColumnContract:
    """One declared column of a product."""

    name: str
    physical_type: str | None
    logical_type: str | None
    description: str
    tags: tuple[str, ...]
    classification: str | None
    primary_key_position: int | None
    required: bool
    field: str


@dataclass(frozen=True)
class ProductContract:
    """One product as its contract declares it."""

    domain: str
    name: str
    description: str
    owner: str
    version: str
    status: str
    contract_path: Path
    columns: tuple[ColumnContract, ...]
    source: SourceSpec
    schema_field: str = "schema[0]"
    #: the engine its owner asks queries on it to run on (``customProperties``:
    #: ``engine: spark`` for a product too big for the gateway), or None
    engine_hint: str | None = None
    #: ``customProperties: accelerate: true|false``: hold the product in memory (or never);
    #: None: the operator's ``accelerate_below_bytes`` decides
    accelerate: bool | None = None
    #: ``customProperties: resultCache: false``: its data must be read live, never from
    #: the result cache (``gateway.query.result_cache``)
    result_cache: bool = True

    @property
    def key(self) -> str:
        return f"{self.domain}.{self.name}"


def find_contracts(mesh_dir: Path, domains: frozenset[str] | None = None) -> list[Path]:
    """Every ``*.odcs.yaml`` directly inside a domain folder of ``mesh_dir`` (of ``domains``)."""
    return sorted(
        path
        for domain_dir in mesh_dir.iterdir()
        if domain_dir.is_dir()
        and not domain_dir.name.startswith(".")
        and (domains is None or domain_dir.name in domains)
        for path in domain_dir.glob(f"*{CONTRACT_SUFFIX}")
    )


def read_contract(path: Path) -> list[ProductContract]:
    """Parse and validate one contract file; raise ContractError naming file and field."""
    domain_dir = path.parent
    contract = _load_model(path)
    domain = _require(path, "domain", contract.domain, "name the owning domain")
    if domain != domain_dir.name:
        raise ContractError(
            f"{path}: field `domain`: {domain!r} differs from the domain folder "
            f"{domain_dir.name!r}; a domain publishes contracts only in its own folder"
        )
    _check_name(path, "domain", domain)
    if not contract.servers:
        raise ContractError(
            f"{path}: field `servers`: missing; add one server (type duckdb, or type local "
            "with format parquet) saying where the data lives"
        )
    if not contract.schema_:
        raise ContractError(f"{path}: field `schema`: missing; declare the product's columns")
    server = contract.servers[0]
    return [
        _product(path, contract, domain, server, schema_object, index)
        for index, schema_object in enumerate(contract.schema_)
    ]


def _load_model(path: Path) -> OpenDataContractStandard:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise ContractError(
            f"{path}: invalid YAML at {where}: {exc.problem}; fix the YAML syntax"
        ) from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read contract: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(
            f"{path}: a contract must be a YAML mapping (ODCS v3), got {type(raw).__name__}"
        )
    _check_unknown_keys(path, raw)
    try:
        return OpenDataContractStandard.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field `{_loc(err['loc'])}`: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ContractError(
            f"{path}: not a valid ODCS v3 contract: {problems}; see "
            "https://bitol-io.github.io/open-data-contract-standard/"
        ) from exc


def _product(
    path: Path,
    contract: OpenDataContractStandard,
    domain: str,
    server: Server,
    schema_object: SchemaObject,
    index: int,
) -> ProductContract:
    """Schema object ``index`` of ``contract``, whose ``domain`` and ``server`` (its first)
    were checked already."""
    field = f"schema[{index}]"
    name = _require(path, f"{field}.name", schema_object.name, "name the product")
    _check_name(path, f"{field}.name", name)
    properties = schema_object.properties or []
    if not properties:
        raise ContractError(f"{path}: field `{field}.properties`: no columns declared; list them")
    columns = tuple(
        _column(path, prop, f"{field}.properties[{i}]") for i, prop in enumerate(properties)
    )
    seen: set[str] = set()
    for column in columns:
        if column.name.lower() in seen:
            raise ContractError(
                f"{path}: field `{column.field}.name`: column {column.name!r} declared twice "
                "(names are case-insensitive); remove or rename one of them"
            )
        seen.add(column.name.lower())
    source = SourceSpec(
        product=f"{domain}.{name}",
        contract_path=path,
        domain_dir=path.parent,
        server=server,
        server_index=0,
        physical_name=schema_object.physicalName or name,
        schema_field=field,
    )
    return ProductContract(
        domain=domain,
        name=name,
        description=_text(schema_object.description) or _describe(contract),
        owner=_owner(contract),
        version=contract.version or "",
        status=contract.status or "",
        contract_path=path,
        columns=columns,
        source=source,
        schema_field=field,
        engine_hint=_engine_hint(path, field, schema_object, contract),
        accelerate=_boolean_property(path, field, schema_object, contract, "accelerate"),
        result_cache=_boolean_property(path, field, schema_object, contract, "resultCache")
        is not False,
    )


_ENGINES = ("duckdb", "spark")


def _engine_hint(
    path: Path, field: str, schema_object: SchemaObject, contract: OpenDataContractStandard
) -> str | None:
    """The ``engine`` custom property of the schema object, else of the contract."""
    for where, properties in (
        (f"{field}.customProperties", schema_object.customProperties),
        ("customProperties", contract.customProperties),
    ):
        for prop in properties or []:
            if prop.property == "engine":
                value = str(prop.value).strip().lower()
                if value not in _ENGINES:
                    raise ContractError(
                        f"{path}: field `{where}` (engine): {prop.value!r} is not an engine; "
                        f"use one of: {', '.join(_ENGINES)}"
                    )
                return value
    return None


def _boolean_property(
    path: Path,
    field: str,
    schema_object: SchemaObject,
    contract: OpenDataContractStandard,
    name: str,
) -> bool | None:
    """The boolean custom property ``name`` of the schema object, else of the contract."""
    for where, properties in (
        (f"{field}.customProperties", schema_object.customProperties),
        ("customProperties", contract.customProperties),
    ):
        for prop in properties or []:
            if prop.property == name:
                value = str(prop.value).strip().lower()
                if value not in ("true", "false"):
                    raise ContractError(
                        f"{path}: field `{where}` ({name}): {prop.value!r} is not a "
                        "boolean; use true or false"
                    )
                return value == "true"
    return None


def _column(path: Path, prop: SchemaProperty, field: str) -> ColumnContract:
    name = _require(path, f"{field}.name", prop.name, "name the column")
    if not (prop.physicalType or prop.logicalType):
        raise ContractError(
            f"{path}: field `{field}` (column {name!r}): no physicalType or logicalType; "
            "declare the column's type, e.g. physicalType: BIGINT"
        )
    return ColumnContract(
        name=name,
        physical_type=prop.physicalType,
        logical_type=prop.logicalType,
        description=prop.description or "",
        tags=tuple(prop.tags or ()),
        classification=prop.classification,
        primary_key_position=(prop.primaryKeyPosition or 1) if prop.primaryKey else None,
        required=bool(prop.required),
        field=field,
    )


def _require(path: Path, field: str, value: str | None, fix: str) -> str:
    if not value:
        raise ContractError(f"{path}: field `{field}`: missing; {fix}")
    return value


def _check_name(path: Path, field: str, value: str) -> None:
    if not _NAME.match(value):
        raise ContractError(
            f"{path}: field `{field}`: {value!r} is not a valid name; use lower-case letters, "
            "digits and underscores, starting with a letter"
        )


def _owner(contract: OpenDataContractStandard) -> str:
    team = contract.team
    if team is None:
        return ""
    members = team if isinstance(team, list) else (team.members or [])
    owners = [m.username or m.name or "" for m in members if (m.role or "").lower() == "owner"]
    if owners:
        return owners[0]
    return "" if isinstance(team, list) else (team.name or "")


def _describe(contract: OpenDataContractStandard) -> str:
    description = contract.description
    if description is None:
        return ""
    return description.purpose or description.usage or ""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _loc(loc: tuple) -> str:
    """A pydantic error location as a contract field path: ``schema[0].properties[1].required``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part).replace("schema_", "schema")
    return text


#: Keys ODCS allows on each nested object (pydantic ignores unknown ones there).
_NESTED_KEYS = {
    "servers": set(Server.model_fields) | {"schema"},
    "schema": set(SchemaObject.model_fields),
    "properties": set(SchemaProperty.model_fields),
}


def _check_unknown_keys(path: Path, raw: dict) -> None:
    """Refuse misspelled keys in servers, schema objects and properties: a typo such as
    ``tag:`` for ``tags:`` would otherwise silently drop a column's pii tag."""

    def check(items: object, kind: str, field: str) -> None:
        if not isinstance(items, list):
            return
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            unknown = sorted(set(item) - _NESTED_KEYS[kind])
            if unknown:
                raise ContractError(
                    f"{path}: field `{field}[{index}].{unknown[0]}`: unknown key {unknown[0]!r} "
                    f"(ODCS v3 {kind} keys: {', '.join(sorted(_NESTED_KEYS[kind]))}); fix the spelling"
                )
            if kind == "schema":
                check(item.get("properties"), "properties", f"{field}[{index}].properties")

    check(raw.get("servers"), "servers", "servers")
    check(raw.get("schema"), "schema", "schema")
