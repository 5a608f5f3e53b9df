"""Who is asking: the authenticated user, their roles and attributes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """An authenticated user as the pipeline and policies see them."""

    user: str
    roles: tuple[str, ...] = ()
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict, hash=False)
    client: str = field(default="", compare=False)
    #: what the client says it is (``x-meshgate-source`` header, else its user agent)
    source: str = field(default="", compare=False)
