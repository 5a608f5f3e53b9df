"""Resource groups: which group a principal's queries run in, with its limits resolved."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from gateway.config import MeshConfig, ResourceGroupSettings
from gateway.security.principal import Principal

DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class ResourceGroup:
    """One group's limits, with the defaults of ``[gateway]`` and ``[engine]`` filled in."""

    name: str
    users: frozenset[str]
    roles: frozenset[str]
    sources: tuple[re.Pattern[str], ...]
    max_running: int
    max_running_per_user: int
    max_queued: int
    max_queue_wait_seconds: float
    query_timeout_seconds: float
    max_spill_bytes: int | None
    max_estimated_rows: float
    #: its queries may be answered from the result cache
    result_cache: bool = True

    def takes(self, principal: Principal) -> bool:
        """True when the group names the principal or one of its roles (or no one), and
        one of its sources matches the client's (or it lists none)."""
        named = (not self.users and not self.roles) or (
            principal.user in self.users or not self.roles.isdisjoint(principal.roles)
        )
        return named and (
            not self.sources or any(p.fullmatch(principal.source) for p in self.sources)
        )


def resource_groups(config: MeshConfig) -> tuple[ResourceGroup, ...]:
    """The configured groups in file order, ``default`` last (configured or not)."""
    settings = dict(config.workload.groups)
    default = settings.pop(DEFAULT_GROUP, ResourceGroupSettings())
    named = [_resolved(name, group, config) for name, group in settings.items()]
    fallback = _resolved(DEFAULT_GROUP, default, config)
    return (*named, replace(fallback, users=frozenset(), roles=frozenset(), sources=()))


def group_of(groups: tuple[ResourceGroup, ...], principal: Principal) -> ResourceGroup:
    """The first group that takes ``principal`` (the last, ``default``, takes everyone)."""
    return next(group for group in groups if group.takes(principal))


def _resolved(name: str, group: ResourceGroupSettings, config: MeshConfig) -> ResourceGroup:
    engine_timeout = config.engine.query_timeout_seconds
    return ResourceGroup(
        name=name,
        users=frozenset(group.users),
        roles=frozenset(group.roles),
        sources=tuple(re.compile(pattern) for pattern in group.sources),
        max_running=group.max_running,
        max_running_per_user=group.max_running_per_user
        or config.gateway.max_concurrent_queries_per_user,
        max_queued=group.max_queued,
        max_queue_wait_seconds=group.max_queue_wait_seconds,
        query_timeout_seconds=min(group.query_timeout_seconds or engine_timeout, engine_timeout),
        max_spill_bytes=group.max_spill_bytes,
        max_estimated_rows=group.max_estimated_rows,
        result_cache=group.result_cache,
    )
