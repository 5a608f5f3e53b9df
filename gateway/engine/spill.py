"""The engines' private spill directories, and the removal of those their processes left.

A directory is named after the host and the process that made it
(``meshgate-spill-<host>-<pid>-<random>``). An engine's is removed when the engine is
closed or collected, or when its process exits; a process killed before that (``kill -9``,
the OOM killer) leaves it behind, with whatever DuckDB had spilled into it, and the next
engine made on the same host removes it once its process is gone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger("meshgate.engine")

SPILL_PREFIX = "meshgate-spill-"


def _host_mark() -> str:
    """This host's short mark: a process of another host (or container) sharing the temp
    directory is never judged by this host's process table."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def new_spill_directory(parent: Path | None = None) -> Path:
    """A new private (0700) spill directory in ``parent`` (the temp directory by default),
    after removing those whose processes on this host died without removing theirs."""
    root = Path(parent if parent is not None else tempfile.gettempdir())
    mark = _host_mark()
    remove_orphans(root, mark)
    return Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{mark}-{os.getpid()}-", dir=root))


def remove_orphans(root: Path, mark: str) -> list[Path]:
    """Remove this user's spill directories in ``root`` made on this host (``mark``) by a
    process that no longer runs; returns them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    own = os.getuid()
    for entry in entries:
        pid = _owner_pid(entry.name, mark)
        if pid is None or pid == os.getpid():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != own:
                continue
        except OSError:
            continue  # removed meanwhile
        if _running(pid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    if removed:
        log.info("spill_directories_removed", count=len(removed), directory=str(root))
    return removed


def _owner_pid(name: str, mark: str) -> int | None:
    """The pid in a spill directory's name made on the host ``mark``, else None."""
    head = f"{SPILL_PREFIX}{mark}-"
    if not name.startswith(head):
        return None
    pid, _, rest = name[len(head) :].partition("-")
    return int(pid) if pid.isdigit() and rest else None


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
