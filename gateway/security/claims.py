"""Who a verified token names: the principal, from claims and ``[identity]``.

- A token issued to a client listed in ``[identity.service_accounts]`` (its ``client_id``,
  else ``azp`` claim) is that service account's: its principal has the account's name,
  roles and attributes, whatever the token's other claims say (``SERVICE``).
- Any other token names a user by ``user_claim``; its roles are the values of
  ``roles_claim`` mapped through ``[identity.roles]`` (a value not mapped grants nothing),
  its attributes are read from the claims ``[identity.attributes]`` names. An attribute
  keeps its JSON type (string, number, boolean), as mesh.toml's do; a claim of another
  type, or absent, gives no attribute (a row filter needing it then shows no row).

Claim names are looked up as written first, then as a dotted path into nested objects
(``realm_access.roles``): providers use both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import IdentitySettings
from gateway.security.principal import SERVICE, TOKEN, Principal
from gateway.security.token_check import NO_USER, TokenRejected


def principal_from_claims(claims: Mapping[str, Any], settings: IdentitySettings) -> Principal:
    """The principal a verified token signs in as; TokenRejected when it names no user."""
    client = claims.get("client_id") or claims.get("azp")
    account = settings.service_accounts.get(client) if isinstance(client, str) else None
    if account is not None:
        assert isinstance(client, str)
        return Principal(
            account.user or client, tuple(account.roles), dict(account.attributes), auth=SERVICE
        )
    user = claim(claims, settings.user_claim)
    if not isinstance(user, str) or not user:
        raise TokenRejected(
            NO_USER, f"the token has no {settings.user_claim!r} claim naming a user"
        )
    return Principal(
        user, mapped_roles(claims, settings), _attributes(claims, settings), auth=TOKEN
    )


def mapped_roles(claims: Mapping[str, Any], settings: IdentitySettings) -> tuple[str, ...]:
    """The roles the token's ``roles_claim`` values map to, in mapping order, once each."""
    if settings.roles_claim is None:
        return ()
    values = claim(claims, settings.roles_claim)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return ()
    roles: dict[str, None] = {}
    for value in values:
        if isinstance(value, str):
            roles.update(dict.fromkeys(settings.roles.get(value, ())))
    return tuple(roles)


def _attributes(
    claims: Mapping[str, Any], settings: IdentitySettings
) -> dict[str, str | int | float | bool]:
    found: dict[str, str | int | float | bool] = {}
    for attribute, name in settings.attributes.items():
        value = claim(claims, name)
        if isinstance(value, (str, int, float, bool)):
            found[attribute] = value
    return found


def claim(claims: Mapping[str, Any], name: str) -> object:
    """The claim ``name``: as written, else a dotted path into nested objects."""
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
