"""The identity provider's signing keys: found by OpenID Connect discovery, cached, rotated.

``issuer + /.well-known/openid-configuration`` names the ``jwks_uri``; its keys are kept
by key id. A key id this cache does not know (the provider rotated its keys) refetches
the set, at most once per ``refresh_seconds`` however many such tokens arrive; a set older
than ``max_age_seconds`` is refetched on the next token (a key the provider withdrew stops
working). A fetch that fails keeps the keys already cached: tokens they signed are still
accepted while the provider is down, until the tokens expire.

Only public signature keys are kept (RSA, EC, OKP; never a symmetric ``oct`` key, never a
key whose ``use`` is not ``sig``); the private half of a key published by mistake is
dropped.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import structlog

from gateway.config import is_trusted_url
from gateway.errors import AuthenticationError

log = structlog.get_logger("meshgate.identity")

DISCOVERY_PATH = "/.well-known/openid-configuration"
_MAX_DOCUMENT_BYTES = 1024 * 1024
#: with no key at all (the provider was never reached), try again at least this often
_RETRY_WITHOUT_KEYS_SECONDS = 5.0
#: which algorithms each key type may verify, when the key names none
_FAMILIES = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}

FetchJson = Callable[[str, float], Mapping[str, Any]]


class KeysUnavailable(AuthenticationError):
    """No key could be had from the identity provider (never reached, or a bad answer)."""


@dataclass(frozen=True)
class SigningKey:
    """One public key of the provider and the algorithms it may verify."""

    kid: str | None
    key: Any  # a cryptography public key object
    algorithms: tuple[str, ...]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A key document is fetched where it was named, never where a redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def fetch_json(url: str, timeout: float) -> Mapping[str, Any]:
    """GET ``url`` (https, or http to this machine) and parse its JSON object."""
    if not is_trusted_url(url):
        raise KeysUnavailable(f"refusing to fetch keys over an untrusted URL: {url}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with _OPENER.open(request, timeout=timeout) as answer:
        body = answer.read(_MAX_DOCUMENT_BYTES + 1)
    if len(body) > _MAX_DOCUMENT_BYTES:
        raise KeysUnavailable(f"{url}: answer larger than {_MAX_DOCUMENT_BYTES} bytes")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise KeysUnavailable(f"{url}: not a JSON object")
    return document


def parse_keys(document: Mapping[str, Any]) -> dict[str | None, SigningKey]:
    """The signature keys of a JWKS document, by key id (unusable entries skipped)."""
    found: dict[str | None, SigningKey] = {}
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise KeysUnavailable("the JWKS has no `keys` list")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        family = _FAMILIES.get(entry.get("kty", ""))
        if family is None:  # "oct" (symmetric) and unknown types: never a signature key here
            continue
        declared = entry.get("alg")
        if declared is not None and declared not in family:
            continue
        try:
            parsed = jwt.PyJWK(entry).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
        if hasattr(parsed, "public_key"):  # a private key published by mistake: keep its half
            parsed = parsed.public_key()
        kid = entry.get("kid")
        kid = kid if isinstance(kid, str) else None
        found[kid] = SigningKey(kid, parsed, (declared,) if declared else family)
    return found


class ProviderKeys:
    """The provider's current signing keys; thread-safe; never blocks a token whose key is
    known on a fetch."""

    def __init__(
        self,
        issuer: str,
        refresh_seconds: float,
        max_age_seconds: float,
        timeout_seconds: float = 5.0,
        fetch: FetchJson = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._interval = refresh_seconds
        self._max_age = max_age_seconds
        self._timeout = timeout_seconds
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str | None, SigningKey] = {}
        self._jwks_uri: str | None = None
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._state = threading.Lock()
        self._fetching = threading.Lock()
        #: fetches attempted so far (successful or not)
        self.fetches = 0

    def key(self, kid: str | None) -> SigningKey | None:
        """The key ``kid`` names (a token without ``kid``: the only key, if there is one);
        refetches the set first when it may (see the module). None: no such key."""
        entry, due = self._lookup(kid)
        if due and self._fetching.acquire(blocking=entry is None):
            try:
                if self._lookup(kid)[1]:  # another thread may have fetched meanwhile
                    self._refresh()
            finally:
                self._fetching.release()
            entry, _ = self._lookup(kid)
        if entry is None and not self._keys and self._fetched_at is None:
            raise KeysUnavailable(f"no signing key could be fetched from {self.issuer}")
        return entry

    def _lookup(self, kid: str | None) -> tuple[SigningKey | None, bool]:
        """The key (if cached) and whether a fetch is due and allowed now."""
        with self._state:
            if kid is None:
                entry = next(iter(self._keys.values())) if len(self._keys) == 1 else None
            else:
                entry = self._keys.get(kid)
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._max_age
            if entry is not None and not stale:
                return entry, False
            interval = (
                self._interval if self._keys else min(self._interval, _RETRY_WITHOUT_KEYS_SECONDS)
            )
            allowed = self._tried_at is None or now - self._tried_at >= interval
            return entry, allowed

    def refresh(self) -> bool:
        """Fetch the key set now (once: a fetch under way is waited for, not repeated)."""
        with self._fetching:
            return self._refresh()

    def _refresh(self) -> bool:
        """Fetch the key set; on failure keep the cached keys (and log why)."""
        with self._state:
            self._tried_at = self._clock()
            self.fetches += 1
        try:
            if self._jwks_uri is None:
                self._jwks_uri = self._discover()
            keys = parse_keys(self._fetch(self._jwks_uri, self._timeout))
            if not keys:
                raise KeysUnavailable("the JWKS holds no usable signature key")
        except (OSError, ValueError, AuthenticationError) as exc:
            log.warning(
                "jwks_fetch_failed", issuer=self.issuer, error=str(exc), kept=len(self._keys)
            )
            return False
        with self._state:
            self._keys = keys
            self._fetched_at = self._clock()
        log.info("jwks_fetched", issuer=self.issuer, kids=sorted(k or "" for k in keys))
        return True

    def _discover(self) -> str:
        """The ``jwks_uri`` of the issuer's discovery document (which must name the issuer)."""
        document = self._fetch(self.issuer.rstrip("/") + DISCOVERY_PATH, self._timeout)
        if document.get("issuer") != self.issuer:
            raise KeysUnavailable(
                f"the discovery document names issuer {document.get('issuer')!r}, "
                f"not the configured {self.issuer!r}"
            )
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not is_trusted_url(uri):
            raise KeysUnavailable(
                f"the discovery document's jwks_uri is not a trusted URL: {uri!r}"
            )
        return uri
