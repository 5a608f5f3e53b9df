"""Structured logs (structlog): readable lines for a person, or JSON lines for machines."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import TextIO, cast

import structlog

_TRACEBACK_LIMIT = 64


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
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
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
