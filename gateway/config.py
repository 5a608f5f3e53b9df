"""The mesh configuration: ``<mesh>/mesh.toml``, validated once at load.

Example::

    [gateway]
    name = "demo-mesh"
    host = "127.0.0.1"
    port = 8815

    [engine]
    memory_limit = "2GB"
    threads = 2

    [users.alice]
    password_hash = "scrypt$16384$8$1$..."
    roles = ["analyst_eu"]
    attributes = { region = "EU" }

    [identity]                      # bearer JWTs of an OpenID Connect provider
    issuer = "https://login.example.com/realms/data"
    audience = "meshgate"
    user_claim = "preferred_username"
    roles_claim = "groups"
    [identity.roles]
    "eu-analysts" = "analyst_eu"
    [identity.attributes]
    region = "region"
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import ConfigError
from gateway.security.passwords import is_password_hash

CONFIG_FILE_NAME = "mesh.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(_Strict):
    """Where the gateway listens and how long its tokens live."""

    name: str = "meshgate"
    host: str = "127.0.0.1"
    port: int = Field(default=8815, ge=0, le=65535)
    token_ttl_seconds: int = Field(default=3600, gt=0)
    max_tokens_per_user: int = Field(
        default=100_000, gt=0, description="live bearer tokens; past it a user's oldest goes"
    )
    ticket_ttl_seconds: int = Field(default=600, gt=0)
    max_prepared_statements_per_user: int = Field(default=256, gt=0, description="open at once")
    max_statement_bytes: int = Field(
        default=256 * 1024, gt=0, description="larger SQL texts are refused before parsing"
    )
    max_concurrent_queries_per_user: int = Field(default=8, gt=0)
    max_queries_per_minute_per_user: int = Field(default=6000, gt=0)
    max_failed_logins: int = Field(default=5, gt=0, description="per user, before a lockout")
    failed_login_lockout_seconds: int = Field(default=60, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    tls_cert_file: str | None = Field(
        default=None, description="PEM certificate (relative: to the mesh)"
    )
    tls_key_file: str | None = Field(
        default=None, description="PEM private key (relative: to the mesh)"
    )
    admin_roles: tuple[str, ...] = Field(
        default=("admin",),
        description="users with one of these roles may list and cancel everyone's queries",
    )


class EngineSettings(_Strict):
    """Limits of the DuckDB engine that executes governed queries."""

    memory_limit: str = "2GB"
    threads: int = Field(default=2, gt=0)
    batch_rows: int = Field(default=65536, gt=0)
    batch_bytes: int = Field(default=12 * 1024 * 1024, gt=0, le=12 * 1024 * 1024)
    query_timeout_seconds: float = Field(default=300.0, gt=0)
    max_result_rows: int = Field(default=200_000_000, gt=0)
    max_result_bytes: int = Field(default=16 * 1024**3, gt=0)
    max_spill_size: str = "10GB"
    process_memory_ceiling_bytes: int = Field(
        default=8 * 1024**3,
        gt=0,
        description="RSS of the gateway past which running queries are stopped (a safety net "
        "for values DuckDB's memory_limit does not bound)",
    )
    accelerate_below_bytes: int = Field(
        default=0,
        ge=0,
        description="products whose files total less than this are held in memory "
        "(accelerated) unless their contract says `accelerate: false`; 0: only products "
        "whose contract says `accelerate: true`",
    )
    accelerate_memory_bytes: int = Field(
        default=512 * 1024**2,
        ge=0,
        description="memory all accelerated copies may take together; a product that "
        "would exceed it is served from its files",
    )


class UserSettings(_Strict):
    """One user: a scrypt password hash, roles and attributes (governance gives them meaning)."""

    password_hash: str
    roles: tuple[str, ...] = ()
    attributes: dict[str, str | int | float | bool] = {}

    @field_validator("password_hash")
    @classmethod
    def _must_be_hash(cls, value: str) -> str:
        if not is_password_hash(value):
            raise ValueError(
                "must be a scrypt hash (scrypt$n$r$p$salt$hash), never a plaintext password; "
                "create one with `meshgate hash-password`"
            )
        return value


class GovernanceSettings(_Strict):
    """Keys and switches of governance."""

    hash_key: str | None = Field(
        default=None,
        min_length=16,
        description="Secret key of the `hash` mask; deterministic, so masked keys still join.",
    )


class AuditSettings(_Strict):
    """Where the audit log lives (relative paths are inside the mesh directory), and how
    durably each record is kept (``gateway.audit.log``)."""

    directory: str = ".meshgate/audit"
    max_file_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    fsync: Literal["always", "batch"] = Field(
        default="batch",
        description=(
            "`batch` (default): every record is written to the OS before its query runs "
            "(it survives a crash of the gateway process) and fsynced every "
            "`fsync_interval_ms` (a power loss may lose that window); `always`: a query "
            "runs only once its begin record is fsynced (survives a power loss; slower)."
        ),
    )
    fsync_interval_ms: int = Field(default=50, gt=0, le=60_000)
    keep_files: int = Field(
        default=0,
        ge=0,
        description="rotated files kept: at each rotation the oldest beyond this many are "
        "deleted, and the deletion is recorded in the new file; 0 (default) keeps every "
        "file (archive them elsewhere)",
    )

    def path(self, mesh_dir: Path) -> Path:
        return mesh_dir / self.directory


class NodesSettings(_Strict):
    """Mesh mode: domains served by their own node processes.

    ``domains`` maps a domain to its node locations (replicas, tried in order), e.g.
    ``sales = ["grpc://10.0.0.5:8821"]``. ``ticket_key`` is the 32-byte hex key the gateway
    seals tickets with (AES-256-GCM: authenticated and encrypted, because a ticket carries
    governed SQL) and every node opens them with.
    """

    ticket_key: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    ticket_ttl_seconds: int = Field(default=60, gt=0)
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    domains: dict[str, tuple[str, ...]] = {}
    fragment_pushdown: bool = Field(
        default=True,
        description="push columns, single-product filters and partial aggregates into cross-domain "
        "fragments; false moves whole governed products (kept for comparison)",
    )
    dynamic_filters: bool = Field(
        default=True,
        description="fetch a small join side first and send its keys with the big side's fragment, "
        "so the node returns only rows that can join (Trino's dynamic filtering)",
    )
    join_groups: bool = Field(
        default=True,
        description="run the joins between one domain's products inside a cross-domain query on "
        "that domain's node, as one fragment",
    )
    split_endpoints: int = Field(
        default=1,
        ge=1,
        le=16,
        description="split a single-product scan into up to this many endpoints (by file or row range) "
        "that the client fetches in parallel",
    )


class SparkSettings(_Strict):
    """``[engines.spark]``: an Apache Spark cluster, through Spark Connect, for the queries
    too big for one gateway (see the README's "Past one machine").

    ``remote`` is the Spark Connect address as Spark takes it, e.g.
    ``sc://spark-head:15002/;token=...;use_ssl=true`` (the token travels in clear text only
    to ``localhost``). ``route``: ``never``; ``large`` (a query goes to Spark when its
    products' estimated bytes exceed ``large_bytes``, or a contract hints
    ``engine: spark``); ``always``.
    """

    remote: str = Field(pattern=r"^sc://")
    route: Literal["never", "large", "always"] = "large"
    large_bytes: int = Field(default=1024**3, gt=0)
    fallback: bool = Field(
        default=False,
        description="run a `large` query on DuckDB when Spark is unreachable or cannot run it "
        "exactly (the log says so)",
    )
    max_fragment_bytes: int = Field(
        default=64 * 1024**2,
        gt=0,
        le=96 * 1024**2,
        description="a DuckDB-file product a Spark query reads is sent to Spark as a governed "
        "Arrow fragment of at most this size",
    )
    connect_timeout_seconds: float = Field(default=10.0, gt=0)


class EnginesSettings(_Strict):
    """``[engines]``: engines beside the gateway's own DuckDB."""

    spark: SparkSettings | None = None


class MetricsSettings(_Strict):
    """``[metrics]``: the Prometheus ``/metrics`` endpoint (none without the section).
    ``port = 0`` picks a free port; the start-up log and banner say which."""

    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class ResourceGroupSettings(_Strict):
    """One resource group (``[workload.groups.<name>]``): whose queries run in it, how many
    at once, how long they may queue and run, and the largest estimated cost admitted.

    A query joins the first group, in file order, that names its user or one of its roles
    (any user when it names neither) and, when it lists ``sources``, whose client's source
    matches one of them. Users in no group run in ``default``
    (``[workload.groups.default]`` if present, else these defaults).
    """

    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    sources: tuple[str, ...] = Field(
        default=(),
        description="regular expressions, one of which the client's source (header "
        "x-meshgate-source, else its user agent) must match in full",
    )
    max_running: int = Field(default=32, gt=0, description="the group's queries running at once")
    max_running_per_user: int | None = Field(
        default=None,
        gt=0,
        description="one user's queries running at once (default: [gateway] "
        "max_concurrent_queries_per_user)",
    )
    max_queued: int = Field(default=256, ge=0, description="queries waiting for a slot, at most")
    max_queue_wait_seconds: float = Field(
        default=300.0, ge=0, description="a queued query waiting longer is refused"
    )
    query_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="the group's time limit (never above [engine] query_timeout_seconds)",
    )
    max_spill_bytes: int | None = Field(
        default=None,
        gt=0,
        description="a query of the group is stopped when the engine's spill files exceed "
        "this while it runs (DuckDB cannot attribute spill to one query: with the heavy lane "
        "the spilling query is usually the one heavy query running)",
    )
    max_estimated_rows: float = Field(
        default=1e11,
        gt=0,
        description="the largest cost admitted: rows the governed plan's operators are "
        "estimated to produce, summed (DuckDB's cardinality estimates)",
    )
    result_cache: bool = Field(
        default=True,
        description="the group's queries may be answered from the result cache ([cache]); "
        "false where freshness must be live",
    )

    @field_validator("sources")
    @classmethod
    def _must_be_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value


class CacheSettings(_Strict):
    """``[cache]``: the governed result cache (``gateway.query.result_cache``): results of
    deterministic statements by governed SQL, parameters and data versions."""

    enabled: bool = Field(default=False, description="serve repeated results from memory")
    max_bytes: int = Field(
        default=256 * 1024**2, gt=0, description="memory all cached results may take (LRU)"
    )
    max_entry_bytes: int | None = Field(
        default=None,
        gt=0,
        description="the largest result kept (default: a quarter of max_bytes)",
    )
    uncached_products: tuple[str, ...] = Field(
        default=(),
        description="products (domain.name) always read live: a query reading one is never cached",
    )


class WorkloadSettings(_Strict):
    """``[workload]``: resource groups, and the bound on recursive queries."""

    max_recursion_depth: int = Field(
        default=1000, gt=0, description="iterations of a recursive CTE before it fails"
    )
    heavy_rows: float = Field(
        default=1e7,
        gt=0,
        description="a query estimated to produce at least this many rows (see "
        "max_estimated_rows) is heavy",
    )
    max_heavy_running: int | None = Field(
        default=None,
        gt=0,
        description="heavy queries running at once, gateway-wide, whatever their group "
        "(default: the machine's cores divided by [engine] threads, at least 1); more wait "
        "in their group's queue, while light queries pass them",
    )
    groups: dict[str, ResourceGroupSettings] = {}


#: signature algorithms a token may use: asymmetric only (never ``none``, never an HMAC
#: whose "secret" could be the provider's public key)
ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


class ServiceAccountSettings(_Strict):
    """``[identity.service_accounts."<client id>"]``: a machine client. Every token issued to
    this client (client credentials) signs in as this service principal, with these roles
    and attributes, whatever its claims say."""

    user: str | None = Field(
        default=None, description="the principal's name (default: the client id)"
    )
    roles: tuple[str, ...] = ()
    attributes: dict[str, str | int | float | bool] = {}


class IdentitySettings(_Strict):
    """``[identity]``: sign-in with bearer JWTs from an OpenID Connect provider
    (``gateway.security.identity``). Keys are found by OIDC discovery from ``issuer``."""

    issuer: str = Field(description="the provider's issuer URL, exactly as tokens carry it")
    audience: tuple[str, ...] = Field(min_length=1, description="a token's aud must name one")
    user_claim: str = Field(
        default="sub", min_length=1, description="e.g. preferred_username, email, sub"
    )
    roles_claim: str | None = Field(
        default=None, description="e.g. groups; dotted for nested claims"
    )
    roles: dict[str, tuple[str, ...]] = Field(
        default={}, description="claim value -> role or roles; unmapped values grant nothing"
    )
    attributes: dict[str, str] = Field(default={}, description="user attribute -> claim")
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    jwks_refresh_seconds: float = Field(
        default=60.0, gt=0, description="an unknown key id refetches the keys at most this often"
    )
    jwks_max_age_seconds: float = Field(
        default=3600.0, gt=0, description="keys are refetched when older (a revoked key goes)"
    )
    http_timeout_seconds: float = Field(default=5.0, gt=0)
    authorized_parties: tuple[str, ...] = Field(
        default=(), description="if set, a token's azp (else client_id) must be one of these"
    )
    required_scopes: tuple[str, ...] = Field(default=(), description="a token must grant all")
    password_logins: bool = Field(
        default=True, description="false: the [users] of mesh.toml can no longer sign in"
    )
    service_accounts: dict[str, ServiceAccountSettings] = {}

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("roles", mode="before")
    @classmethod
    def _role_or_roles(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: (v,) if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("issuer")
    @classmethod
    def _must_be_https(cls, value: str) -> str:
        if not is_trusted_url(value):
            raise ValueError(
                "must be an https:// URL (plain http only on this machine: 127.0.0.1, localhost)"
            )
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unsafe = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if unsafe or not value:
            raise ValueError(
                f"{unsafe or 'none'}: only asymmetric algorithms ({', '.join(ASYMMETRIC_ALGORITHMS)})"
            )
        return value


def is_trusted_url(url: str) -> bool:
    """An https URL, or plain http to this machine (a provider run for tests or a demo)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


class MeshConfig(_Strict):
    """The whole ``mesh.toml``."""

    gateway: GatewaySettings = GatewaySettings()
    engine: EngineSettings = EngineSettings()
    governance: GovernanceSettings = GovernanceSettings()
    audit: AuditSettings = AuditSettings()
    nodes: NodesSettings = NodesSettings()
    engines: EnginesSettings = EnginesSettings()
    metrics: MetricsSettings | None = None
    workload: WorkloadSettings = WorkloadSettings()
    cache: CacheSettings = CacheSettings()
    identity: IdentitySettings | None = None
    users: dict[str, UserSettings] = {}


def load_config(mesh_dir: Path) -> MeshConfig:
    """Read and validate ``mesh_dir/mesh.toml``; raise ConfigError naming file and field."""
    path = mesh_dir / CONFIG_FILE_NAME
    if not path.is_file():
        raise ConfigError(
            f"{path}: mesh config not found; create it or run `meshgate demo {mesh_dir}`"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return MeshConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field `{'.'.join(str(p) for p in err['loc'])}`: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
