"""Key rotation and a provider that is down, with a real provider restarted on new keys:
an unknown key id refetches the JWKS at most once per interval, a rotated key is accepted
after one refetch, and while the provider is down the cached keys keep accepting tokens
until those expire."""

from __future__ import annotations

import time

import jwt
import pytest
from pyarrow import flight
from support.oidc import add_identity, flight_query, rsa_key, start_provider, token_parts
from support.polling import wait_through_errors, wait_until
from support.servers import copy_mesh, start_private

pytestmark = pytest.mark.slow  # a gateway and an OpenID provider of their own

SQL = "SELECT DISTINCT region FROM sales.orders"
REFRESH_SECONDS = 2


def _regions(uri: str, token: str) -> list[str]:
    return flight_query(uri, token, SQL).column(0).to_pylist()


def _unknown_kid_token(good: str) -> str:
    _, claims, _ = token_parts(good)
    key = jwt.PyJWK(rsa_key("rsa-unpublished")).key
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "rsa-unpublished"})


def test_rotation_and_a_provider_down(demo_mesh, tmp_path):
    provider = start_provider(tmp_path)
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    add_identity(mesh, provider.issuer, jwks_refresh_seconds=REFRESH_SECONDS)
    gateway = start_private(mesh, tmp_path / "gateway.log")
    try:
        first = provider.token("alice-eu")
        assert _regions(gateway.uri, first) == ["EU"]

        # A burst of tokens naming an unknown key: refused, the JWKS fetched at most once
        # per interval however many arrive.
        forged = _unknown_kid_token(first)
        fetched, started = provider.jwks_requests(), time.monotonic()
        for _ in range(40):
            with pytest.raises(flight.FlightUnauthenticatedError):
                _regions(gateway.uri, forged)
        elapsed = time.monotonic() - started
        assert provider.jwks_requests() - fetched <= 1 + elapsed / REFRESH_SECONDS

        # Rotation: the provider restarts signing with a new key (the old one still
        # published); a token under the new kid is accepted after one refetch.
        provider.stop()
        provider.keys = [rsa_key("rsa-2"), *provider.keys]
        provider.start()
        rotated = provider.token("alice-us")
        assert token_parts(rotated)[0]["kid"] == "rsa-2"
        wait_through_errors(
            lambda: _regions(gateway.uri, rotated) == ["US"], timeout=20, what="the new key"
        )
        assert 1 <= provider.jwks_requests() <= 2
        assert _regions(gateway.uri, first) == ["EU"]  # the old key still verifies

        # The provider goes down: tokens of cached keys are still accepted, over several
        # refresh intervals and failed refetches, until they expire.
        short = provider.token("alice-eu", "urn:meshgate:short")
        provider.stop()
        assert _regions(gateway.uri, short) == ["EU"]
        deadline = time.monotonic() + 2.5 * REFRESH_SECONDS
        while time.monotonic() < deadline:
            with pytest.raises(flight.FlightUnauthenticatedError):
                _regions(gateway.uri, forged)  # makes the gateway try the provider again
            assert _regions(gateway.uri, rotated) == ["US"]
            assert _regions(gateway.uri, first) == ["EU"]
            time.sleep(0.25)
        assert gateway.events("jwks_fetch_failed"), "the gateway never tried the provider"

        def expired() -> bool:
            try:
                _regions(gateway.uri, short)
            except flight.FlightUnauthenticatedError as exc:
                return "expired" in str(exc)
            return False

        wait_until(expired, timeout=30, interval=0.5, what="the short token to expire")
        assert _regions(gateway.uri, rotated) == ["US"]
    finally:
        gateway.kill()
        provider.stop()
