"""The engines' private spill directories, and the removal of those their processes left.

Each directory holds a lock file its process keeps locked (``flock``) for the engine's
life. The directory is removed when the engine is closed or collected, or when its process
exits; a process killed before that (``kill -9``, the OOM killer) leaves it behind, with
whatever DuckDB had spilled into it, and the kernel releases its lock: the next engine
made with the same temp directory removes it. A lock, not a process id, tells: it holds
across PID namespaces (containers sharing ``/tmp``) and never mistakes a reused pid.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import structlog

log = structlog.get_logger("meshgate.engine")

SPILL_PREFIX = "meshgate-spill-"
_LOCK_FILE = ".owner.lock"
_MAKING_PREFIX = ".meshgate-spill-making-"  # not swept: not yet locked


def new_spill_directory(parent: Path | None = None) -> tuple[Path, int]:
    """A new private (0700) spill directory in ``parent`` (the temp directory by default),
    named after this process, and the descriptor holding its lock (``release`` it); the
    directories of processes gone are removed first."""
    root = Path(parent if parent is not None else tempfile.gettempdir())
    remove_orphans(root)
    making = Path(tempfile.mkdtemp(prefix=_MAKING_PREFIX, dir=root))
    made = root / f"{SPILL_PREFIX}{os.getpid()}-{making.name.removeprefix(_MAKING_PREFIX)}"
    lock = -1
    try:
        lock = os.open(making / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        making.rename(made)  # visible to sweepers only once locked
    except OSError:
        shutil.rmtree(making, ignore_errors=True)
        if lock >= 0:
            os.close(lock)
        raise
    return made, lock


def release(directory: Path, lock: int) -> None:
    """Remove ``directory`` and give up its lock (an engine's finalizer)."""
    shutil.rmtree(directory, ignore_errors=True)
    os.close(lock)


#: this process's spill directories not released yet (their removers), under its lock
_REMOVERS: set[weakref.finalize] = set()
_REMOVERS_LOCK = threading.Lock()


def released_with(owner: object, directory: Path, lock: int) -> weakref.finalize:
    """The remover of ``directory``: call it to ``release`` the directory; it runs by
    itself when ``owner`` is collected, at exit, or on ``release_all``."""
    remover = weakref.finalize(owner, release, directory, lock)
    with _REMOVERS_LOCK:
        _REMOVERS.difference_update([r for r in _REMOVERS if not r.alive])
        _REMOVERS.add(remover)
    return remover


def release_all() -> None:
    """Release every spill directory of this process now: before it exits without the
    interpreter's exit handlers (``gateway.signals.exit_abandoning_calls``)."""
    with _REMOVERS_LOCK:
        removers = list(_REMOVERS)
        _REMOVERS.clear()
    for remover in removers:
        remover()


def remove_orphans(root: Path) -> list[Path]:
    """Remove this user's spill directories in ``root`` whose lock nobody holds (their
    process is gone); returns them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    own = os.getuid()
    for entry in entries:
        if not entry.name.startswith(SPILL_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != own:
                continue
            lock = os.open(Path(entry.path) / _LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # no lock file (made before locks, or removed meanwhile): left alone
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its process runs
        else:
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.lexists(entry.path):
                removed.append(Path(entry.path))
        finally:
            os.close(lock)
    if removed:
        log.info("spill_directories_removed", count=len(removed), directory=str(root))
    return removed
