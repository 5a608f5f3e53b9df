"""Tokens the gateway must refuse, each with UNAUTHENTICATED and an audit record of why
(expired, not yet valid, wrong audience, unknown issuer, bad signature, alg none,
HS256 keyed with the provider's public key, unknown key, missing scope, another client,
no user) — and the client told only "expired" or "invalid"; no token ever in a log."""

from __future__ import annotations

import hashlib
import hmac
import json

import adbc_driver_manager
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pyarrow import flight
from support.oidc import (
    adbc_rows,
    b64url,
    compact,
    flight_query,
    rsa_key,
    start_provider,
    token_parts,
)
from support.polling import wait_until

pytestmark = pytest.mark.slow  # a gateway and an OpenID provider of their own

SQL = "SELECT count(*) AS n FROM sales.orders"
#: words of the audit's reasons that the client must never be told
REASON_WORDS = ("audience", "issuer", "signature", "algorithm", "kid", "scope", "party", "claim")


def _public_pem(provider) -> bytes:
    jwk = next(k for k in provider.public_jwks()["keys"] if k["kid"] == "rsa-1")
    key = jwt.PyJWK(jwk).key
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hs256_with_public_key(provider, good: str) -> str:
    """The classic confusion: HS256 'signed' with the provider's public key as secret."""
    header, claims, _ = token_parts(good)
    header = {**header, "alg": "HS256", "typ": "JWT"}
    encode = lambda part: b64url(json.dumps(part, separators=(",", ":")).encode())  # noqa: E731
    signing_input = f"{encode(header)}.{encode(claims)}".encode()
    mac = hmac.new(_public_pem(provider), signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64url(mac)}"


def _signed_elsewhere(good: str, kid: str) -> str:
    """The good token's claims signed by a key the provider never had, under ``kid``."""
    _, claims, _ = token_parts(good)
    key = jwt.PyJWK(rsa_key(kid)).key
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})


@pytest.fixture(scope="module")
def foreign_issuer(provider, tmp_path_factory):
    """Another provider on another address with the same signing keys: its tokens verify
    against our keys, but their issuer is not ours."""
    other = start_provider(tmp_path_factory.mktemp("oidc-foreign"), keys=provider.keys)
    yield other
    other.stop()


def _cases(provider, foreign_issuer) -> dict[str, tuple[str, str]]:
    """name -> (token, the audit's reason)."""
    good = provider.token("alice-eu")
    header, claims, signature = token_parts(good)
    return {
        "not yet valid": (provider.token("alice-later"), "not yet valid"),
        "wrong audience": (provider.token("alice-eu", "urn:other"), "wrong audience"),
        "unknown issuer": (foreign_issuer.token("alice-eu"), "unknown issuer"),
        "tampered claims": (
            compact(header, {**claims, "region": "US", "groups": ["admins"]}, signature),
            "bad signature",
        ),
        "another key, known kid": (_signed_elsewhere(good, "rsa-1"), "bad signature"),
        "unknown kid": (_signed_elsewhere(good, "rsa-never-published"), "unknown key"),
        "alg none": (compact({**header, "alg": "none"}, claims, ""), "algorithm refused"),
        "HS256 with the public key": (_hs256_with_public_key(provider, good), "algorithm refused"),
        "missing scope": (
            provider.token("alice-eu", "urn:meshgate:metrics-only"),
            "missing scope",
        ),
        "another client": (provider.token("stranger-app"), "unauthorized party"),
        "no user claim": (provider.token("nameless"), "no user"),
        "not a JWT": ("a.b.c", "malformed"),
    }


def _refusals(gateway) -> list[dict]:
    return [r for r in gateway.audit() if r.get("event") == "token_refused"]


def test_bad_tokens_are_refused_audited_and_never_logged(
    identity_gateway, provider, foreign_issuer
):
    cases = _cases(provider, foreign_issuer)
    for name, (token, reason) in cases.items():
        before = len(_refusals(identity_gateway))
        with pytest.raises(flight.FlightUnauthenticatedError) as refused:
            flight_query(identity_gateway.uri, token, SQL)
        text = str(refused.value).lower()
        assert "invalid token" in text, name
        assert not any(word in text for word in REASON_WORDS), (name, text)
        new = wait_until(lambda b=before: _refusals(identity_gateway)[b:], what=name)
        assert new[0]["reason"] == reason, (name, new[0])
    everything = identity_gateway.log() + json.dumps(identity_gateway.audit())
    for name, (token, _) in cases.items():
        for part in (token, token.rsplit(".", 1)[-1]):
            if len(part) > 20:
                assert part not in everything, f"the {name} token reached a log"


def test_adbc_gets_unauthenticated_for_a_bad_token(identity_gateway, provider):
    token = provider.token("alice-eu", "urn:other")
    with pytest.raises(adbc_driver_manager.Error) as refused:
        adbc_rows(identity_gateway.uri, token, SQL)
    assert refused.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED
    assert "audience" not in str(refused.value)


def test_an_expired_token_is_refused_as_expired(identity_gateway, provider):
    """A short-lived token (6 s, leeway 0) works, then is refused as expired: the client
    is told it expired (so it fetches a new one), the audit says so."""
    token = provider.token("alice-eu", "urn:meshgate:short")
    assert flight_query(identity_gateway.uri, token, SQL).column(0)[0].as_py() > 0

    def refused() -> str | None:
        try:
            flight_query(identity_gateway.uri, token, SQL)
        except flight.FlightUnauthenticatedError as exc:
            return str(exc)
        return None

    message = wait_until(refused, timeout=30, interval=0.5, what="the token to expire")
    assert "expired" in message
    records = wait_until(
        lambda: [r for r in _refusals(identity_gateway) if r["reason"] == "expired"],
        what="the expired token's audit record",
    )
    assert records[-1]["subject"] == "alice-eu"  # signed by the provider: its subject is known
    assert token not in identity_gateway.log() + json.dumps(identity_gateway.audit())
