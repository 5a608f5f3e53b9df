"""A real OpenID provider for the identity tests: ``oidc-provider`` (Node.js) on 127.0.0.1.

``start_provider`` runs tests/identity/provider/provider.mjs (installed by ``.ci/run``:
``npm ci`` in that folder) with the keys, clients and resource servers given, and waits
for its discovery document. Tokens are real: each ``Provider.token(client, resource)`` is
a client-credentials grant at the provider's token endpoint, signed with its current key.

``PERSONAS``: the clients the tests sign in as (a client stands for a user: its tokens
carry that user's claims); ``identity_toml`` writes the matching ``[identity]`` section
into a mesh.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pyarrow import flight

from benchmarks.launch import REPO, free_port, stop_process, wait_until_ready

PROVIDER_DIR = REPO / "tests" / "identity" / "provider"
SECRET = "a-test-client-secret-of-forty-characters"
AUDIENCE = "urn:meshgate"

#: client id -> the claims of its tokens (the user it stands for)
PERSONAS: dict[str, dict] = {
    "alice-eu": {"preferred_username": "alice", "groups": ["eu-analysts"], "region": "EU"},
    "alice-us": {"preferred_username": "alice", "groups": ["eu-analysts"], "region": "US"},
    "carol": {"preferred_username": "carol", "groups": ["marketing", "unmapped"]},
    "mallory": {"preferred_username": "mallory", "groups": ["unmapped", "admins-elsewhere"]},
    "nameless": {"groups": ["eu-analysts"], "region": "EU"},
    "stranger-app": {"preferred_username": "alice", "groups": ["eu-analysts"], "region": "EU"},
    "reporting-bot": {"preferred_username": "bob", "groups": ["eu-analysts"]},  # ignored
}
#: clients whose tokens are not valid yet (nbf an hour ahead)
NOT_YET_VALID = {"alice-later": PERSONAS["alice-eu"]}
#: resource indicator -> resource server (audience, lifetime, algorithm, scope)
RESOURCES: dict[str, dict] = {
    AUDIENCE: {"audience": AUDIENCE, "ttl": 600},
    "urn:meshgate:short": {"audience": AUDIENCE, "ttl": 6},
    "urn:meshgate:ec": {"audience": AUDIENCE, "ttl": 600, "alg": "ES256"},
    "urn:meshgate:metrics-only": {"audience": AUDIENCE, "ttl": 600, "scope": "metrics"},
    "urn:other": {"audience": "urn:other", "ttl": 600},
}


def rsa_key(kid: str) -> dict:
    """A fresh private RSA signing JWK."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {**json.loads(RSAAlgorithm.to_jwk(key)), "kid": kid, "alg": "RS256", "use": "sig"}


def ec_key(kid: str) -> dict:
    """A fresh private P-256 signing JWK."""
    key = ec.generate_private_key(ec.SECP256R1())
    return {**json.loads(ECAlgorithm.to_jwk(key)), "kid": kid, "alg": "ES256", "use": "sig"}


def public_part(jwk: dict) -> dict:
    """The public members of a private JWK."""
    private = {"d", "p", "q", "dp", "dq", "qi"}
    return {k: v for k, v in jwk.items() if k not in private}


@dataclass
class Provider:
    """A running oidc-provider process."""

    issuer: str
    keys: list[dict]
    log_path: Path
    settings_path: Path
    process: subprocess.Popen | None = None
    discovery: dict = field(default_factory=dict)

    def token(self, client: str, resource: str = AUDIENCE, scope: str | None = None) -> str:
        """A real access token (JWT) issued to ``client`` for ``resource``."""
        resource_scope = RESOURCES[resource].get("scope", "sql")
        body = {
            "grant_type": "client_credentials",
            "client_id": client,
            "client_secret": SECRET,
            "resource": resource,
            "scope": scope or resource_scope,
        }
        request = urllib.request.Request(
            self.discovery["token_endpoint"], urllib.parse.urlencode(body).encode()
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.load(answer)["access_token"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"the provider refused a token: {exc.read()!r}") from exc

    def jwks_requests(self) -> int:
        """How often the provider's JWKS was fetched since it (re)started."""
        with urllib.request.urlopen(f"{self.issuer}/test/stats", timeout=10) as answer:
            return json.load(answer)["jwks_requests"]

    def public_jwks(self) -> dict:
        with urllib.request.urlopen(self.discovery["jwks_uri"], timeout=10) as answer:
            return json.load(answer)

    def start(self) -> Provider:
        """Start (or restart, with the current ``keys``) on the issuer's port."""
        settings = {
            "issuer": self.issuer,
            "keys": self.keys,
            "clients": {
                **{c: {"secret": SECRET, "claims": claims} for c, claims in PERSONAS.items()},
                **{
                    c: {"secret": SECRET, "claims": claims, "not_before_in": 3600}
                    for c, claims in NOT_YET_VALID.items()
                },
            },
            "resources": RESOURCES,
            "default_resource": AUDIENCE,
        }
        self.settings_path.write_text(json.dumps(settings), encoding="utf-8")
        node = shutil.which("node")
        assert node, "Node.js is needed for the identity tests (.ci/run checks it)"
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            _install_provider()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [node, str(PROVIDER_DIR / "provider.mjs"), str(self.settings_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROVIDER_DIR,
            )

        def discovered() -> None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=5) as answer:
                self.discovery = json.load(answer)

        wait_until_ready(self.process, discovered, self.log_path, "oidc-provider", 60, 0.1)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def start_provider(tmp: Path, keys: list[dict] | None = None, name: str = "provider") -> Provider:
    """An oidc-provider on a free port of 127.0.0.1 signing with ``keys`` (default: one
    RSA and one EC key)."""
    port = free_port()
    provider = Provider(
        f"http://127.0.0.1:{port}",
        keys or [rsa_key("rsa-1"), ec_key("ec-1")],
        tmp / f"{name}.log",
        tmp / f"{name}.json",
    )
    return provider.start()


def identity_toml(issuer: str, **settings: object) -> str:
    """The ``[identity]`` section the tests' gateways use, ``settings`` overriding keys of
    the main table (TOML values written as JSON, which TOML reads alike for these)."""
    main = {
        "issuer": issuer,
        "audience": AUDIENCE,
        "user_claim": "preferred_username",
        "roles_claim": "groups",
        "leeway_seconds": 0,
        "jwks_refresh_seconds": 2,
        "required_scopes": ["sql"],
        "authorized_parties": [c for c in PERSONAS if c != "stranger-app"] + list(NOT_YET_VALID),
        **settings,
    }
    lines = ["", "[identity]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in main.items()]
    lines += [
        "",
        "[identity.roles]",
        '"eu-analysts" = "analyst_eu"',
        '"marketing" = "marketing"',
        "",
        "[identity.attributes]",
        'region = "region"',
        "",
        '[identity.service_accounts."reporting-bot"]',
        'roles = ["ops"]',
        "",
    ]
    return "\n".join(lines)


def add_identity(mesh: Path, issuer: str, **settings: object) -> None:
    """Append the tests' ``[identity]`` section to ``mesh/mesh.toml``."""
    path = mesh / "mesh.toml"
    path.write_text(path.read_text(encoding="utf-8") + identity_toml(issuer, **settings))


# --------------------------------------------------------------------------- forged tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_parts(token: str) -> tuple[dict, dict, str]:
    """A token's header and claims (unverified) and its signature segment."""
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
        signature,
    )


def compact(header: dict, claims: dict, signature: str) -> str:
    """A compact JWS of these parts (the signature as given: forged or copied)."""
    encode = lambda part: b64url(json.dumps(part, separators=(",", ":")).encode())  # noqa: E731
    return f"{encode(header)}.{encode(claims)}.{signature}"


# --------------------------------------------------------------------------- clients with a token


def bearer(token: str) -> flight.FlightCallOptions:
    """pyarrow.flight call options carrying ``authorization: Bearer <token>``."""
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def flight_query(uri: str, token: str, sql: str, client: flight.FlightClient | None = None):
    """GetFlightInfo + DoGet of ``sql`` (raw SQL command) with ``token``; an Arrow table, or
    the Flight error raised."""
    own = client is None
    connection = client or flight.FlightClient(uri)
    try:
        options = bearer(token)
        info = connection.get_flight_info(
            flight.FlightDescriptor.for_command(sql.encode()), options
        )
        return connection.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        if own:
            connection.close()


def adbc_token_connect(uri: str, token: str):
    """An ADBC DB-API connection sending ``token`` (the driver's
    ``adbc.flight.sql.authorization_header`` option), no username or password."""
    import adbc_driver_flightsql.dbapi as flightsql
    from adbc_driver_flightsql import DatabaseOptions

    return flightsql.connect(
        uri,
        db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
        autocommit=True,
    )


def adbc_rows(uri: str, token: str, sql: str) -> list[tuple]:
    """``sql``'s rows through a fresh ADBC connection with ``token``."""
    connection = adbc_token_connect(uri, token)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        connection.close()


def _install_provider() -> None:
    """``npm ci`` in the provider's folder, from its lock file (first use on a machine;
    ``.ci/run`` does it ahead of the tests)."""
    npm = shutil.which("npm")
    assert npm, "npm is needed for the identity tests' OpenID provider (.ci/run installs it)"
    subprocess.run(
        [npm, "ci", "--prefix", str(PROVIDER_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
        check=True,
        timeout=600,
    )
