"""Who is asking: the authenticated user, their roles and attributes."""

from __future__ import annotations

from dataclasses import dataclass, field

#: How a principal signed in (audit records say it): a mesh.toml user and password, a
#: token of the identity provider naming a user, or a service account's token.
PASSWORD, TOKEN, SERVICE = "password", "token", "service"


@dataclass(frozen=True)
class Principal:
    """An authenticated user as the pipeline and policies see them."""

    user: str
    roles: tuple[str, ...] = ()
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict, hash=False)
    #: the login a call belongs to (a digest of its bearer token; empty in process):
    #: Flight session options are kept per login
    session: str = field(default="", compare=False, repr=False)
    client: str = field(default="", compare=False)
    #: what the client says it is (``x-meshgate-source`` header, else its user agent)
    source: str = field(default="", compare=False)
    #: ``PASSWORD``, ``TOKEN`` or ``SERVICE``
    auth: str = field(default=PASSWORD, compare=False)
