"""Checking a bearer JWT of the identity provider: PyJWT does the cryptography.

In order, each failure a ``TokenRejected`` with its ``reason``:
1. the header's ``alg`` is on the allow-list (asymmetric only: never ``none``, never an
   HMAC whose secret could be the provider's public key), no unknown ``crit`` header;
2. the (still unverified) ``iss`` is the configured issuer, so that foreign tokens never
   make the gateway fetch keys;
3. the ``kid`` names a key of the provider (``ProviderKeys``: may refetch once per
   interval) that may verify that algorithm;
4. the signature, then ``exp``, ``nbf``, ``iat`` (with the leeway), ``iss`` and ``aud``;
5. where configured, ``azp`` (else ``client_id``) is an authorized party and the token
   grants every required scope (``scope`` string or ``scp`` list).

A rejection's ``detail`` is for the audit log and never holds the token; the client is
told only ``expired`` or ``invalid`` (``TokenRejected.client_message``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from gateway.config import IdentitySettings
from gateway.errors import AuthenticationError, first_line
from gateway.security.provider_keys import KeysUnavailable, ProviderKeys

# Why a token was rejected (the audit's ``reason``).
EXPIRED = "expired"
NOT_YET_VALID = "not yet valid"
BAD_SIGNATURE = "bad signature"
WRONG_AUDIENCE = "wrong audience"
UNKNOWN_ISSUER = "unknown issuer"
UNKNOWN_KEY = "unknown key"
ALGORITHM_REFUSED = "algorithm refused"
MALFORMED = "malformed"
MISSING_CLAIM = "missing claim"
UNAUTHORIZED_PARTY = "unauthorized party"
MISSING_SCOPE = "missing scope"
NO_USER = "no user"
KEYS_UNAVAILABLE = "provider keys unavailable"

#: a bearer value longer than this is not parsed at all
MAX_TOKEN_BYTES = 16 * 1024
_EXPIRED_MESSAGE = "token expired: obtain a new one from the identity provider"
_INVALID_MESSAGE = "invalid token: sign in again with the identity provider"


class TokenRejected(AuthenticationError):
    """A bearer JWT the gateway does not accept; ``reason`` and ``detail`` are for the
    audit, the message for the client (expired, or invalid: nothing more)."""

    def __init__(self, reason: str, detail: str = "", **facts: object) -> None:
        super().__init__(_EXPIRED_MESSAGE if reason == EXPIRED else _INVALID_MESSAGE)
        self.reason = reason
        self.detail = detail or reason
        #: what the audit may say about the token besides the reason (never the token)
        self.facts = facts


class TokenVerifier:
    """Checks tokens against one provider's keys and the ``[identity]`` settings."""

    def __init__(self, settings: IdentitySettings, keys: ProviderKeys) -> None:
        self._settings = settings
        self._keys = keys

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; TokenRejected otherwise."""
        settings = self._settings
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected(MALFORMED, f"token longer than {MAX_TOKEN_BYTES} bytes")
        try:
            parsed = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
            header, unverified = parsed["header"], parsed["payload"]
        except jwt.PyJWTError as exc:
            raise TokenRejected(MALFORMED, f"not a JWT: {_short(exc)}") from None
        alg = header.get("alg")
        if alg not in settings.algorithms:
            raise TokenRejected(ALGORITHM_REFUSED, f"algorithm {str(alg)[:20]!r} is not allowed")
        if "crit" in header:
            raise TokenRejected(MALFORMED, "critical header extensions are not supported")
        issuer = unverified.get("iss")
        if issuer != settings.issuer:
            raise TokenRejected(
                UNKNOWN_ISSUER, "the token's issuer is not the configured one", issuer=_clip(issuer)
            )
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        try:
            key = self._keys.key(kid)
        except KeysUnavailable as exc:
            raise TokenRejected(KEYS_UNAVAILABLE, str(exc)) from None
        if key is None:
            raise TokenRejected(
                UNKNOWN_KEY, "no key of the provider has this key id", kid=_clip(kid)
            )
        if alg not in key.algorithms:
            raise TokenRejected(
                ALGORITHM_REFUSED, f"key {kid!r} does not verify {alg}", kid=_clip(kid)
            )
        claims = self._decode(token, key.key, alg, unverified)
        self._check_party_and_scopes(claims)
        return claims

    def _decode(
        self, token: str, key: Any, alg: str, unverified: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Signature, then the claims (PyJWT checks in that order: a token refused for a
        claim was signed by the provider, so its subject may be audited)."""
        settings = self._settings
        subject = _clip(unverified.get("sub"))
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(settings.audience),
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected(EXPIRED, "the token has expired", subject=subject) from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected(
                NOT_YET_VALID, "the token is not valid yet (nbf or iat)", subject=subject
            ) from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(
                WRONG_AUDIENCE, "the token is for another audience", subject=subject
            ) from None
        except jwt.InvalidIssuerError:
            raise TokenRejected(
                UNKNOWN_ISSUER, "the token's issuer is not the configured one"
            ) from None
        except jwt.InvalidSignatureError:
            raise TokenRejected(BAD_SIGNATURE, "the signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(MISSING_CLAIM, f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(ALGORITHM_REFUSED, f"algorithm {alg} is not allowed") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(MALFORMED, _short(exc)) from None

    def _check_party_and_scopes(self, claims: Mapping[str, Any]) -> None:
        settings = self._settings
        if settings.authorized_parties:
            party = claims.get("azp") or claims.get("client_id")
            if party not in settings.authorized_parties:
                raise TokenRejected(
                    UNAUTHORIZED_PARTY, "the token was issued to a client not authorized here",
                    party=_clip(party),
                )  # fmt: skip
        if settings.required_scopes:
            granted = token_scopes(claims)
            missing = [s for s in settings.required_scopes if s not in granted]
            if missing:
                raise TokenRejected(MISSING_SCOPE, f"the token lacks scope {', '.join(missing)}")


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes a token grants: ``scope`` (space-separated) or ``scp`` (string or list)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found)


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (three dot-separated parts), not one of the gateway's own tokens."""
    return token.count(".") == 2


def _clip(value: object, size: int = 200) -> str | None:
    """A claim or header value fit for the audit (it may come from anyone): bounded."""
    return None if value is None else str(value)[:size]


def _short(exc: BaseException) -> str:
    return first_line(exc)[:200]
