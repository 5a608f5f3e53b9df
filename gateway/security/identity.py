"""Sign-in with the identity provider's bearer JWTs (``[identity]`` in mesh.toml).

``IdentityProvider.principal(token)`` checks the token (``token_check``: PyJWT against the
provider's keys, ``provider_keys``) and maps its claims to a principal (``claims``). Every
rejection is reported to ``on_rejected`` (the gateway audits it with its reason, never
the token) before the client gets UNAUTHENTICATED saying only "expired" or "invalid".
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from gateway.config import IdentitySettings
from gateway.security.claims import principal_from_claims
from gateway.security.principal import Principal
from gateway.security.provider_keys import ProviderKeys
from gateway.security.token_check import TokenRejected, TokenVerifier

Rejected = Callable[[TokenRejected], None]


class IdentityProvider:
    """The configured OpenID provider: checks its tokens, names their principals."""

    def __init__(
        self,
        settings: IdentitySettings,
        keys: ProviderKeys | None = None,
        on_rejected: Rejected | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys or ProviderKeys(
            settings.issuer,
            settings.jwks_refresh_seconds,
            settings.jwks_max_age_seconds,
            settings.http_timeout_seconds,
        )
        self._verifier = TokenVerifier(settings, self.keys)
        self.on_rejected = on_rejected

    def principal(self, token: str) -> Principal:
        """Whom ``token`` signs in; TokenRejected (reported) when it is not accepted."""
        try:
            return principal_from_claims(self._verifier.claims(token), self.settings)
        except TokenRejected as exc:
            if self.on_rejected is not None:
                self.on_rejected(exc)
            raise

    def prefetch(self) -> None:
        """Fetch the provider's keys in the background (the first token need not wait; a
        provider down at start only logs)."""
        threading.Thread(target=self.keys.refresh, name="meshgate-jwks", daemon=True).start()
