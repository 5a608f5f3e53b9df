"""Structured logs (structlog): readable lines for a person, or JSON lines for machines."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO, cast

import structlog

_TRACEBACK_LIMIT = 64


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def utc_timestamp(zone: str = "+00:00") -> str:
    """Now as ``datetime.now(UTC).isoformat(timespec="microseconds")`` writes it (``zone``:
    how UTC is written), the date and time of day formatted once per second."""
    global _second
    second, nanos = divmod(time.time_ns(), 1_000_000_000)
    formatted = _second
    if formatted[0] != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        formatted = _second = (second, text)
    return f"{formatted[1]}.{nanos // 1000:06d}{zone}"


def _timestamp(logger: object, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``, formatted as ``utc_timestamp``."""
    event["timestamp"] = utc_timestamp("Z")
    return event


def _json_fallback(value: object) -> object:
    """What structlog's JSONRenderer writes of a value JSON cannot encode."""
    try:
        return value.__structlog__()  # type: ignore[attr-defined]
    except AttributeError:
        return repr(value)


_JSON = json.JSONEncoder(default=_json_fallback)


def _json_line(event: Mapping[str, Any], **_: object) -> str:
    """A log line as structlog's JSONRenderer writes it, with one encoder for all."""
    return _JSON.encode(event)


def _format_exception(exc_info) -> str:
    # An explicit limit: the server process sets sys.tracebacklimit = 0 (see below).
    return "".join(traceback.format_exception(*exc_info, limit=_TRACEBACK_LIMIT))


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing: a caller that swaps it
    for a while (typer's CliRunner, pytest) never leaves the logs bound to a closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(json_lines: bool = False, level: str = "info") -> None:
    """Log to stderr, as JSON lines when ``json_lines`` else as aligned key=value text."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.ExceptionRenderer(_format_exception),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # PrintLogger only writes and flushes: all that _CurrentStderr offers of a TextIO
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )


def configure_server_process() -> None:
    """Keep Python tracebacks out of error messages sent to Flight clients.

    pyarrow.flight appends the formatted traceback of any non-Flight exception to the
    status message a client receives; with ``sys.tracebacklimit = 0`` only the exception's
    own message is appended. The gateway's logs format tracebacks with an explicit limit.
    """
    sys.tracebacklimit = 0
