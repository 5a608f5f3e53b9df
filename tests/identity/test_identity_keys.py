"""The provider's key cache (``ProviderKeys``) on an injected clock and key documents:
discovery, refetch at most once per interval for unknown key ids, cached keys kept while
the provider is down, refetch when old, and which published keys are trusted at all."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from support.oidc import ec_key, public_part, rsa_key

from gateway.security.provider_keys import KeysUnavailable, ProviderKeys

ISSUER = "https://idp.example/realms/data"
DISCOVERY = f"{ISSUER}/.well-known/openid-configuration"
JWKS = "https://idp.example/realms/data/certs"


class Documents:
    """What the provider answers, switchable to down; counts the fetches."""

    def __init__(self, keys: list[dict]) -> None:
        self.keys = keys
        self.down = False
        self.fetched: list[str] = []
        self.discovery = {"issuer": ISSUER, "jwks_uri": JWKS}

    def __call__(self, url: str, timeout: float) -> dict:
        self.fetched.append(url)
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return self.discovery if url == DISCOVERY else {"keys": self.keys}

    def jwks_fetches(self) -> int:
        return self.fetched.count(JWKS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keys(documents: Documents, clock: Clock) -> ProviderKeys:
    return ProviderKeys(ISSUER, 30.0, 3600.0, fetch=documents, clock=clock)


def test_an_unknown_kid_refetches_at_most_once_per_interval():
    documents, clock = Documents([public_part(rsa_key("k1"))]), Clock()
    keys = _keys(documents, clock)
    assert keys.key("k1") is not None and documents.jwks_fetches() == 1
    assert documents.fetched[0] == DISCOVERY
    for _ in range(100):
        assert keys.key("k2") is None
    assert documents.jwks_fetches() == 1  # the first fetch was just now: no refetch
    clock.now += 30
    documents.keys = [public_part(rsa_key("k2")), *documents.keys]
    for _ in range(100):
        assert keys.key("k2") is not None
    assert documents.jwks_fetches() == 2
    assert keys.key("k1") is not None and documents.jwks_fetches() == 2


def test_cached_keys_work_while_the_provider_is_down():
    documents, clock = Documents([public_part(rsa_key("k1"))]), Clock()
    keys = _keys(documents, clock)
    assert keys.key("k1") is not None
    documents.down = True
    clock.now += 7200  # past the max age: a refetch is due, and fails
    assert keys.key("k1") is not None
    assert keys.key("k-new") is None
    assert documents.jwks_fetches() == 2  # one failed attempt, not one per call


def test_old_keys_are_refetched_and_a_withdrawn_key_goes():
    documents, clock = Documents([public_part(rsa_key("k1"))]), Clock()
    keys = _keys(documents, clock)
    assert keys.key("k1") is not None
    documents.keys = [public_part(rsa_key("k2"))]
    clock.now += 3600
    assert keys.key("k1") is None  # refetched: k1 was withdrawn
    assert keys.key("k2") is not None


def test_a_provider_never_reached_has_no_keys():
    documents, clock = Documents([public_part(rsa_key("k1"))]), Clock()
    documents.down = True
    keys = _keys(documents, clock)
    with pytest.raises(KeysUnavailable):
        keys.key("k1")


def test_discovery_must_name_the_issuer_and_a_trusted_jwks_uri():
    for discovery in (
        {"issuer": "https://evil.example", "jwks_uri": JWKS},
        {"issuer": ISSUER, "jwks_uri": "http://evil.example/certs"},
    ):
        documents, clock = Documents([public_part(rsa_key("k1"))]), Clock()
        documents.discovery = discovery
        with pytest.raises(KeysUnavailable):
            _keys(documents, clock).key("k1")
        assert documents.jwks_fetches() == 0


def test_only_public_signature_keys_are_trusted():
    published_private = rsa_key("private")  # a private key published by mistake
    keys_published = [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
        {**public_part(rsa_key("enc")), "use": "enc"},
        {**public_part(rsa_key("wrong-alg")), "alg": "ES256"},
        published_private,
        public_part(ec_key("ec")),
    ]
    keys = _keys(Documents(keys_published), Clock())
    assert keys.key("hmac") is None
    assert keys.key("enc") is None
    assert keys.key("wrong-alg") is None
    private = keys.key("private")
    assert private is not None and not hasattr(private.key, "private_bytes")
    assert private.algorithms == ("RS256",)
    assert keys.key("ec").algorithms == ("ES256",)


def test_a_token_without_kid_uses_the_only_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))  # no kid, no alg
    keys = _keys(Documents([jwk]), Clock())
    only = keys.key(None)
    assert only is not None and "PS256" in only.algorithms
