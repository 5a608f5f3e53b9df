"""The audit log: every query attempt, allowed or denied, durably, before any row leaves.

JSON lines, one record per event, each appended with a single ``write`` on an
``O_APPEND`` descriptor: a crash cannot leave a half-written record behind a complete
one. Durability is a group commit: one flusher thread ``fsync``s whatever has been
written since its last ``fsync``, so concurrent queries share one flush, and a caller
waits only where it must: ``record`` returns once its record is on disk; ``append``
returns at once with a sequence number to ``wait_durable`` on later, and starts its flush
at once. A query's ``begin`` record is on disk before its first batch is sent (the query
computes while the record is flushed); its ``end`` record is appended with
``append_lazily``: it rides on the next flush or is flushed within twice
``LAZY_FLUSH_SECONDS``, so that the end of a stream wakes no thread.

How far "on disk" goes is ``fsync``: ``"always"`` (the above: a record a caller waits for
is ``fsync``ed, so it survives a power loss) or ``"batch"``: every record is still written
to the OS with one synchronous ``write`` before the caller goes on (a query's begin record
before the query runs), so it survives a crash of the gateway process (``kill -9``); the
flusher ``fsync``s what was written every ``fsync_interval`` seconds and on ``close``, so a
power loss (or kernel crash) can lose at most that window. Files rotate at a
size limit (``audit-<time>-<pid>-<n>.jsonl``); with ``keep_files``, the oldest rotated files
past that many are deleted at each rotation, and an ``audit_files_removed`` record opens
the new file. Several processes may append to one
directory (a gateway, and the ``meshgate query`` commands run beside it): their records
never interleave within a line, and rotation is coordinated through a lock file. JSON
lines were chosen over a DuckDB table because appends are atomic and durable line by
line, any tool can read them, and the engine's DuckDB stays read-only.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway.logs import utc_timestamp

if TYPE_CHECKING:
    from gateway.config import AuditSettings

CURRENT_FILE = "audit.jsonl"
#: Rotated files; their names sort in the order they were rotated.
ROTATED_FILES = "audit-*.jsonl"
ROTATION_LOCK = ".rotation.lock"
#: A lazily appended record is flushed within twice this (see ``AuditLog.append_lazily``).
LAZY_FLUSH_SECONDS = 0.2
#: ``fsync = "batch"``: seconds between the flusher's ``fsync``s of what was written.
DEFAULT_FSYNC_INTERVAL = 0.05

FsyncMode = Literal["always", "batch"]

#: One encoder for every record (``json.dumps`` with options builds one per call).
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))
encode_json = _ENCODER.encode


class AuditLog:
    """Append-only, fsynced (group commit, or in batches), rotating JSON-lines audit log
    in ``directory``."""

    @classmethod
    def from_settings(cls, settings: AuditSettings, directory: Path) -> AuditLog:
        """The log in ``directory`` as ``[audit]`` configures it (size, fsync)."""
        return cls(
            directory,
            settings.max_file_bytes,
            fsync=settings.fsync,
            fsync_interval=settings.fsync_interval_ms / 1000,
            keep_files=settings.keep_files,
        )

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 64 * 1024 * 1024,
        fsync: FsyncMode = "always",
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL,
        keep_files: int = 0,
    ) -> None:
        """``fsync``/``fsync_interval``/``keep_files``: see the module docstring."""
        if fsync not in ("always", "batch"):
            raise ValueError(f"fsync must be 'always' or 'batch', not {fsync!r}")
        if fsync_interval <= 0:
            raise ValueError("fsync_interval must be positive")
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.keep_files = keep_files
        self._batch = fsync == "batch"
        directory.mkdir(parents=True, exist_ok=True)
        self._changed = threading.Condition()
        self._rotations = 0
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._written = 0  # sequence number of the last record written
        self._durable = 0  # ... and of the last record known to be on disk
        self._wanted = 0  # ... and of the last record somebody wants on disk now
        self._flushing = 0  # fsyncs in progress (the flusher's, a waiter's)
        self._failure: OSError | None = None
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="audit-flusher", daemon=True)
        self._flusher.start()

    def _open(self) -> int:
        return os.open(self.directory / CURRENT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @staticmethod
    def new_query_id() -> str:
        """A random (version 4) UUID's hex, as ``uuid.uuid4().hex`` without its objects."""
        raw = bytearray(os.urandom(16))
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        return raw.hex()

    def record(self, event: str, **fields: object) -> None:
        """Append one event durably (on disk, or with ``fsync = "batch"`` written to the OS,
        before returning)."""
        self.wait_durable(self.append(event, **fields))

    def append(self, event: str, **fields: object) -> int:
        """Append one event and return its sequence number at once; its ``fsync`` starts
        now, so it is usually on disk by the time the caller ``wait_durable``s on it."""
        return self._write(event, fields, flush_now=True)

    def append_lazily(self, event: str, **fields: object) -> int:
        """Append one event nobody waits for: on disk with the next flush, at the latest
        twice ``LAZY_FLUSH_SECONDS`` later (at once on ``wait_durable``/``close``)."""
        return self._write(event, fields, flush_now=False)

    def append_encoded(self, event: str, members: str, lazily: bool = False) -> int:
        """``append`` (or ``append_lazily``) a record whose fields are given already
        JSON-encoded: ``members`` is the inside of a JSON object (``"a":1,"b":"x"``), as
        ``encode_members`` makes it; the record is the same as ``append``'s."""
        stamp = utc_timestamp()
        comma = "," if members else ""
        line = f'{{"time":"{stamp}","event":{encode_json(event)}{comma}{members}}}\n'
        return self._write_line(line.encode("utf-8"), flush_now=not lazily)

    def _write(self, event: str, fields: dict[str, object], flush_now: bool) -> int:
        entry = {
            "time": utc_timestamp(),
            "event": event,
            **fields,
        }
        return self._write_line((encode_json(entry) + "\n").encode("utf-8"), flush_now)

    def _write_line(self, line: bytes, flush_now: bool) -> int:
        with self._changed:
            if self._closed:
                raise RuntimeError("the audit log is closed")
            os.write(self._fd, line)
            status = os.fstat(self._fd)
            if status.st_nlink == 0:  # a rotated file another process deleted (keep_files)
                self._reopen()
                os.write(self._fd, line)
                status = os.fstat(self._fd)
            self._size = status.st_size  # other processes' records count too
            self._written += 1
            sequence = self._written
            if self._size >= self.max_bytes:
                self._rotate()
            if flush_now and not self._batch:  # a batch is flushed on the flusher's clock
                self._wanted = sequence
                self._changed.notify_all()
        return sequence

    def wait_durable(self, sequence: int) -> None:
        """Block until record ``sequence`` is on disk; raise if it cannot get there. With
        ``fsync = "batch"``: return at once (every record is written to the OS before
        ``append`` returns), unless an earlier ``fsync`` failed."""
        with self._changed:
            if self._batch:
                if self._failure is not None:
                    raise self._failure
                return
            if self._wanted < sequence:
                self._wanted = sequence
                self._changed.notify_all()
            while self._durable < sequence:
                if self._failure is not None:
                    raise self._failure
                if self._flushing:
                    self._changed.wait()
                else:  # nobody is syncing: sync here rather than wake the flusher and wait
                    self._sync()

    def _sync(self) -> None:
        """Under the lock: ``fsync`` what is written so far, the lock released meanwhile
        (writers keep appending), then record how far the log is durable."""
        target, fd = self._written, self._fd
        self._flushing += 1
        self._changed.release()
        failure = None
        try:
            os.fsync(fd)
        except OSError as exc:
            failure = exc
        finally:
            self._changed.acquire()
        self._flushing -= 1
        if failure is None:
            self._durable = max(self._durable, target)
        else:
            self._failure = failure
        self._changed.notify_all()

    def _flush_loop(self) -> None:
        while True:
            with self._changed:
                self._wait_for_work()
                if self._closed and self._durable == self._written:
                    return
                if self._flushing:  # a waiter is syncing: see what it covers first
                    self._changed.wait()
                    continue
                self._sync()
                if self._failure is not None:
                    return

    def _wait_for_work(self) -> None:
        """Under the lock: return once a record is wanted on disk, the log closes, or
        lazily appended records waited a whole ``LAZY_FLUSH_SECONDS`` (lazy appends wake
        nobody, so the wait is timed even when idle); with ``fsync = "batch"``, once
        records were written during a whole ``fsync_interval``, or the log closes."""
        if self._batch:
            while not self._closed:
                pending = self._written > self._durable
                if not self._changed.wait(self.fsync_interval) and pending:
                    return
            return
        while not self._closed and self._wanted <= self._durable:
            pending = self._written > self._durable
            if not self._changed.wait(LAZY_FLUSH_SECONDS) and pending:
                return

    def _rotate(self) -> None:
        """Under the lock: put the full file on disk, then start a new one. Other processes
        may append to the same directory (``meshgate query`` beside a running gateway): the
        rename happens under a lock file, and only when the full file is still the current
        one; a process that finds it renamed by another just opens the new current file."""
        while self._flushing:  # never close the descriptor the flusher is syncing
            self._changed.wait()
        if self._size < self.max_bytes:
            return  # another writer rotated while this one waited
        os.fsync(self._fd)
        self._durable = self._written
        current = self.directory / CURRENT_FILE
        with _directory_lock(self.directory):
            if _same_file(self._fd, current):
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                self._rotations += 1  # never two rotated files with one name, however fast
                name = f"audit-{stamp}-{os.getpid()}-{self._rotations:06d}.jsonl"
                os.replace(current, self.directory / name)
            self._reopen()
            removed = self._remove_oldest() if self.keep_files else []
            if removed:  # the new file says what the log no longer holds
                entry = {"time": utc_timestamp(), "event": "audit_files_removed", "files": removed}
                os.write(self._fd, (encode_json(entry) + "\n").encode("utf-8"))
                self._written += 1  # flushed like any record
        self._size = os.fstat(self._fd).st_size

    def _reopen(self) -> None:
        """Under the lock: append to the current file from now on (this one was rotated or
        deleted)."""
        while self._flushing:  # never close the descriptor the flusher is syncing
            self._changed.wait()
        os.close(self._fd)
        self._fd = self._open()

    def _remove_oldest(self) -> list[str]:
        """Under the rotation lock: delete the rotated files past ``keep_files``, oldest
        first; their names."""
        rotated = sorted(self.directory.glob(ROTATED_FILES))
        doomed = rotated[: max(0, len(rotated) - self.keep_files)]
        for path in doomed:
            path.unlink(missing_ok=True)
        return [path.name for path in doomed]

    def close(self) -> None:
        """Flush every record written so far, then close."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        self._flusher.join()
        with self._changed:
            os.close(self._fd)


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock, between processes, on rotating the log of ``directory``."""
    fd = os.open(directory / ROTATION_LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    """Whether descriptor ``fd`` is open on the file now at ``path``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def read_audit(directory: Path) -> Iterator[dict]:
    """Every complete record, oldest file first; a torn last line (power loss) is skipped."""
    files = [*sorted(directory.glob(ROTATED_FILES)), directory / CURRENT_FILE]
    for path in files:
        try:
            handle = path.open("rb")
        except FileNotFoundError:  # not there yet, or deleted since listed (keep_files)
            continue
        with handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:
                    continue


def encode_members(fields: dict[str, object]) -> str:
    """``fields`` as the inside of a JSON object (for ``AuditLog.append_encoded``)."""
    return encode_json(fields)[1:-1]


def monotonic_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
