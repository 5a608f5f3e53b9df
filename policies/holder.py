"""The policy in force, reloaded when its files change (and have stopped changing); a
broken file never opens access.

Each file is validated on its own. When a file turns invalid or is deleted, its last good
version stays in force and the error (file:line) is logged. A domain file that has never
been valid closes that domain (a domain without any policy file has only the global
rules); a global file that is missing or has never been valid closes every domain.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import structlog

from connectors.file_versions import files_version
from policies.engine import Governor
from policies.errors import PolicyError
from policies.loader import GLOBAL_SCOPE, PolicyFile, policy_paths, read_policy_file
from policies.rules import ProductShape

log = structlog.get_logger("meshgate.policy")


class PolicyHolder:
    """Thread-safe access to the current Governor."""

    def __init__(
        self,
        mesh_dir: Path,
        hash_key: str | None,
        served_domains: frozenset[str] | None = None,
    ) -> None:
        """``served_domains``: a domain node's holder, deciding for those domains only
        (rules naming other domains' products are skipped, see ``read_policy_file``)."""
        self._mesh_dir = mesh_dir
        self._served_domains = served_domains
        self._hash_key = hash_key
        self._lock = threading.Lock()
        self._good: dict[str, PolicyFile] = {}
        self._errors: dict[str, PolicyError] = {}
        self._signature: tuple = ()
        #: changed policy files seen once, taken when the next look finds them unchanged
        self._settling: tuple | None = None
        self._version = 0
        self._governor: Governor | None = None
        #: policy file loads rejected so far (a broken file counts once per change)
        self.rejections = 0

    @property
    def governor(self) -> Governor:
        assert self._governor is not None, "call refresh() first"
        return self._governor

    @property
    def errors(self) -> tuple[PolicyError, ...]:
        return tuple(self._errors.values())

    def refresh(self, products: Mapping[str, ProductShape]) -> bool:
        """Reload when policy files or products changed; True when a new Governor took over.

        A changed policy file is taken on the next look that finds it unchanged: a file
        being written in place (truncated, then filled) is never read half-written."""
        domains = sorted({p.domain for p in products.values()})
        paths = policy_paths(self._mesh_dir, domains)
        files = files_version(paths.values())
        signature = (files, id(products))
        with self._lock:
            if signature == self._signature and self._governor is not None:
                return False
            if (
                self._governor is not None
                and signature[1] == self._signature[1]  # the same products: files changed
                and files != self._settling
            ):
                self._settling = files
                return False
            self._settling = None
            for scope, path in paths.items():
                try:
                    loaded = read_policy_file(
                        path, scope, products, self._hash_key, self._served_domains
                    )
                    if scope == GLOBAL_SCOPE and not loaded.rules:
                        raise PolicyError(
                            path,
                            0,
                            "the global policy holds no rule; it is the floor every "
                            "domain builds on (a truncated file is never taken as valid)",
                        )
                    self._good[scope] = loaded
                    self._errors.pop(scope, None)
                except PolicyError as exc:
                    if scope != GLOBAL_SCOPE and scope not in self._good and not path.exists():
                        # a domain that never had rules of its own: only the global ones apply
                        self._good[scope] = PolicyFile(path, scope, (), ())
                        continue
                    if scope not in self._errors or str(self._errors[scope]) != str(exc):
                        self.rejections += 1
                        log.error(
                            "policy_rejected",
                            file=str(exc.path),
                            line=exc.line,
                            error=str(exc),
                            kept="last good version" if scope in self._good else "domain closed",
                        )
                    self._errors[scope] = exc
            for scope in list(self._good):
                if scope not in paths:
                    del self._good[scope]
            closed = {scope for scope in self._errors if scope not in self._good}
            if GLOBAL_SCOPE in closed:
                closed = set(domains)
            self._version += 1
            self._governor = Governor(
                [f for s, f in self._good.items() if s not in closed or s == GLOBAL_SCOPE],
                products,
                self._hash_key,
                version=self._version,
                closed_domains=frozenset(closed),
            )
            self._signature = signature
            log.info(
                "policy_loaded",
                version=self._version,
                rules=len(self._governor.rules),
                closed_domains=sorted(closed),
            )
            return True
