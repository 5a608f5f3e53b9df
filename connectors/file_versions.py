"""Which version of a set of files is on disk: the fingerprint that says when an accelerated
copy, a cached result or a bound plan is stale, and when contracts or policy files changed."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from stat import S_ISDIR

#: (path, size, mtime_ns, ctime_ns, inode) of every file, sorted
FileVersion = tuple[tuple[str, int, int, int, int], ...]


def files_version(paths: Iterable[Path]) -> FileVersion:
    """Path, size, mtime, ctime and inode of every file under ``paths`` (files or
    directories; a DuckDB file's write-ahead log too); a file that vanishes is simply
    absent. Any rewrite changes it, even one that keeps the size and puts the old mtime
    back (``cp -p``, ``touch -r``): no tool sets the ctime."""
    entries: list[tuple[str, int, int, int, int]] = []

    def add(path: str, stat: os.stat_result | None = None) -> None:
        if stat is None:
            try:
                stat = os.stat(path)
            except OSError:
                return
        entries.append((path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))

    for path in paths:
        name = str(path)
        try:
            found = os.stat(name)
        except OSError:
            found = None
        if found is not None and S_ISDIR(found.st_mode):
            for root, _dirs, names in os.walk(path):
                for file in names:
                    add(os.path.join(root, file))
        else:
            if found is not None:
                add(name, found)
            add(f"{name}.wal")
    return tuple(sorted(entries))


def total_bytes(version: FileVersion) -> int:
    """The size of all the files of ``version``."""
    return sum(entry[1] for entry in version)
