"""Sign-in with the identity provider's bearer JWTs (``[identity]`` in mesh.toml).

``IdentityProvider.principal(token)`` checks the token (``token_check``: PyJWT against the
provider's keys, ``provider_keys``) and maps its claims to a principal (``claims``). A token
verified once is trusted again for a minute at most, never past its expiry (each RPC of a
statement carries it; re-verifying costs about a millisecond in PyJWT). Every
rejection is reported to ``on_rejected`` (the gateway audits it with its reason, never
the token) before the client gets UNAUTHENTICATED saying only "expired" or "invalid".
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from gateway.config import IdentitySettings
from gateway.security.claims import principal_from_claims
from gateway.security.principal import Principal
from gateway.security.provider_keys import ProviderKeys
from gateway.security.token_check import TokenRejected, TokenVerifier

Rejected = Callable[[TokenRejected], None]
#: a verified token is trusted again without checking (every RPC of a statement carries
#: it) for at most this long, and never past its expiry
ACCEPTED_SECONDS = 60.0
_MAX_ACCEPTED = 10_000


class IdentityProvider:
    """The configured OpenID provider: checks its tokens, names their principals."""

    def __init__(
        self,
        settings: IdentitySettings,
        keys: ProviderKeys | None = None,
        on_rejected: Rejected | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: wall-clock seconds, as a token's ``exp``."""
        self.settings = settings
        self.keys = keys or ProviderKeys(
            settings.issuer,
            settings.jwks_refresh_seconds,
            settings.jwks_max_age_seconds,
            settings.http_timeout_seconds,
        )
        self._verifier = TokenVerifier(settings, self.keys)
        self.on_rejected = on_rejected
        self._clock = clock
        #: sha256(token) -> (principal, until): tokens verified a moment ago
        self._accepted: dict[bytes, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def principal(self, token: str) -> Principal:
        """Whom ``token`` signs in; TokenRejected (reported) when it is not accepted."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            known = self._accepted.get(digest)
        if known is not None and now < known[1]:
            return known[0]
        try:
            claims = self._verifier.claims(token)
            principal = principal_from_claims(claims, self.settings)
        except TokenRejected as exc:
            if self.on_rejected is not None:
                self.on_rejected(exc)
            raise
        until = min(float(claims["exp"]) + self.settings.leeway_seconds, now + ACCEPTED_SECONDS)
        with self._lock:
            if len(self._accepted) >= _MAX_ACCEPTED:
                self._accepted = {d: v for d, v in self._accepted.items() if v[1] > now}
                if len(self._accepted) >= _MAX_ACCEPTED:
                    self._accepted.clear()
            self._accepted[digest] = (principal, until)
        return principal

    def prefetch(self) -> None:
        """Fetch the provider's keys in the background (the first token need not wait; a
        provider down at start only logs)."""
        threading.Thread(target=self.keys.refresh, name="meshgate-jwks", daemon=True).start()
