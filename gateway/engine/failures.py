"""What kind of failure a DuckDB error is, told by DuckDB's exception type, not its words.

What DuckDB 2.0 raises, each reproduced for real (issue 14):

- ``memory_limit`` reached: ``OutOfMemoryException`` ("failed to allocate data of size ...",
  "could not allocate block of size ...").
- ``max_temp_directory_size`` (the spill limit) reached: ``OutOfMemoryException`` as well;
  the one thing that tells it apart is the setting it names ("This limit was set by the
  'max_temp_directory_size' setting").
- an interrupt (time limit, cancel, shutdown, memory ceiling; the watchdog knows which):
  ``InterruptException``.
- Parquet file or partition directory gone: ``IOException`` ("No files found that match
  the pattern <path>"); in the hardened engine (``enable_external_access`` off) a gone file
  is a ``PermissionException`` instead: DuckDB then looks for ``<path>/**/*.parquet``,
  which is not an allowed path. A truncated ``.duckdb`` file, or one overwritten:
  ``IOException``.
- Parquet file truncated or not Parquet: ``InvalidInputException`` naming the file ("No
  magic bytes found at end of file <path>"); corrupt pages: ``InvalidInputException``
  naming the file ("Failed to read file <path>: ... decompression failure", or "Invalid
  string encoding found in Parquet file <path>: value ...", which quotes data).
- Errors DuckDB raises with no type at all (the base ``duckdb.Error``): a ``.duckdb`` block
  whose checksum fails ("Corrupt database file: ..."), Parquet metadata the Thrift decoder
  cannot read ("TProtocolException: Invalid data").
- While the Arrow stream of a result is read, any of these arrives as an ``OSError`` (or
  another ``ArrowException``) carrying DuckDB's message, which starts with the type's name
  ("Out of Memory Error: ", "IO Error: ", "Invalid Input Error: ", "INTERRUPT Error: "; an
  untyped one: "Invalid Error: ").

``InvalidInputException`` is also what bad arguments of the query's own functions raise
(an invalid regex, malformed JSON), and ``PermissionException`` what the sandbox answers
to any path outside the products, so either is a data failure only when it names a file
of one of the query's products.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import duckdb
import pyarrow as pa


class Failure(StrEnum):
    """The kinds of engine failure the gateway tells apart."""

    MEMORY = "memory"  # the engine's memory_limit
    SPILL = "spill"  # the engine's spill limit (max_temp_directory_size), or its spill disk
    INTERRUPTED = "interrupted"  # time limit, cancel, shutdown: the watchdog says which
    DATA = "data"  # a product's files missing, truncated or corrupt
    OTHER = "other"  # anything else: names, values, guards (see ``errors.safe_engine_error``)


@dataclass(frozen=True)
class Diagnosis:
    """A failure's kind and, for a data failure, the products whose data failed."""

    kind: Failure
    products: tuple[str, ...] = ()


#: DuckDB's message prefix of an exception type -> the type (see ``engine_type``)
_PREFIXES: dict[str, type[duckdb.Error]] = {
    "Out of Memory Error: ": duckdb.OutOfMemoryException,
    "INTERRUPT Error: ": duckdb.InterruptException,
    "IO Error: ": duckdb.IOException,
    "Invalid Input Error: ": duckdb.InvalidInputException,
    "Conversion Error: ": duckdb.ConversionException,
    "Out of Range Error: ": duckdb.OutOfRangeException,
    "Binder Error: ": duckdb.BinderException,
    "Catalog Error: ": duckdb.CatalogException,
    "Parser Error: ": duckdb.ParserException,
    "Permission Error: ": duckdb.PermissionException,
    "Invalid Error: ": duckdb.Error,  # DuckDB's untyped errors, as the stream reader words them
}
#: the setting an OutOfMemoryException names when the spill limit, not memory, ran out
_SPILL_SETTING = "'max_temp_directory_size'"


def engine_type(exc: BaseException) -> type[BaseException]:
    """DuckDB's exception type of ``exc``: its class, or for an error that came through the
    Arrow stream reader the type its message starts with (the base ``duckdb.Error`` for a
    message without one). Anything else is returned as its own class."""
    if isinstance(exc, duckdb.Error):
        return type(exc)
    if isinstance(exc, (OSError, pa.ArrowException)):
        text = str(exc)
        for prefix, kind in _PREFIXES.items():
            if text.startswith(prefix):
                return kind
    return type(exc)


def carries_engine_error(exc: BaseException) -> bool:
    """True when ``exc`` (raised by the Arrow stream reader) is a DuckDB error in disguise."""
    return not isinstance(exc, duckdb.Error) and issubclass(engine_type(exc), duckdb.Error)


def diagnose(
    exc: BaseException,
    data_paths: Mapping[str, Sequence[Path]],
    spill_dir: Path | None = None,
) -> Diagnosis:
    """The kind of ``exc``; ``data_paths``: the data files or directories of each product
    the query reads (a data failure that names none of them blames them all)."""
    kind = engine_type(exc)
    text = str(exc)
    if issubclass(kind, duckdb.OutOfMemoryException):
        return Diagnosis(Failure.SPILL if _SPILL_SETTING in text else Failure.MEMORY)
    if issubclass(kind, duckdb.InterruptException):
        return Diagnosis(Failure.INTERRUPTED)
    named = tuple(
        key for key, paths in data_paths.items() if any(str(path) in text for path in paths)
    )
    if issubclass(kind, duckdb.IOException):
        if spill_dir is not None and str(spill_dir) in text and not named:
            return Diagnosis(Failure.SPILL)  # writing or reading back the spill files
        return Diagnosis(Failure.DATA, named or tuple(data_paths))
    if issubclass(kind, (duckdb.InvalidInputException, duckdb.PermissionException)):
        return Diagnosis(Failure.DATA, named) if named else Diagnosis(Failure.OTHER)
    if kind is duckdb.Error:  # untyped: storage checksums, the Parquet metadata decoder
        return Diagnosis(Failure.DATA, named or tuple(data_paths))
    return Diagnosis(Failure.OTHER)
