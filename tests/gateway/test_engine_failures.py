"""Engine failures told apart by DuckDB's exception type (issue 14): each condition is
reproduced for real on a small DuckDB database, then diagnosed.

What DuckDB raises for each is listed in gateway/engine/failures.py; these tests keep
that list true for the installed DuckDB.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from gateway.config import EngineSettings
from gateway.engine.errors import safe_engine_error
from gateway.engine.failures import Diagnosis, Failure, carries_engine_error, diagnose

ROWS = 200_000


def _raised(call: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


def _drain(connection: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Read ``sql``'s result through the Arrow stream reader, as the gateway does."""
    for _ in connection.sql(sql).to_arrow_reader(1000):
        pass


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Parquet file of ``ROWS`` rows (a hash string each) and a DuckDB file of the same."""
    root = tmp_path_factory.mktemp("failures")
    source = "SELECT range AS i, md5(range::VARCHAR) AS s FROM range(200000)"
    with duckdb.connect() as connection:
        connection.execute(f"COPY ({source}) TO '{root / 't.parquet'}' (ROW_GROUP_SIZE 10000)")
    with duckdb.connect(str(root / "t.duckdb")) as connection:
        connection.execute(f"CREATE TABLE t AS {source}")
    return root


@pytest.fixture
def limited(tmp_path: Path, data: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A database with a 64MB memory limit and an 8MB spill limit over the Parquet file."""
    connection = duckdb.connect(config={"temp_directory": str(tmp_path / "spill")})
    connection.execute(f"CREATE VIEW t AS SELECT * FROM '{data / 't.parquet'}'")
    connection.execute("SET memory_limit = '64MB'; SET max_temp_directory_size = '8MB'")
    connection.execute("SET threads = 2")
    yield connection
    connection.close()


def test_memory_limit_is_a_memory_failure(limited, data: Path) -> None:
    exc = _raised(lambda: _drain(limited, "SELECT list(s) FROM t, range(10)"))
    assert isinstance(exc, duckdb.OutOfMemoryException)
    assert diagnose(exc, {"d.t": (data / "t.parquet",)}) == Diagnosis(Failure.MEMORY)
    text = safe_engine_error(exc, ("d.t",), limits=EngineSettings(memory_limit="64MB"))
    assert "64MB" in str(text) and "add filters" in str(text)
    assert "could not be read" not in str(text)


def test_spill_limit_is_a_spill_failure(limited, data: Path) -> None:
    join = "SELECT a.s, b.i FROM t a JOIN t b ON a.i % 1000 = b.i % 1000 ORDER BY a.s, b.i"
    exc = _raised(lambda: _drain(limited, join))
    assert isinstance(exc, duckdb.OutOfMemoryException)  # the same type as memory ...
    spill_dir = Path(limited.sql("SELECT current_setting('temp_directory')").fetchall()[0][0])
    diagnosis = diagnose(exc, {"d.t": (data / "t.parquet",)}, spill_dir)
    assert diagnosis == Diagnosis(Failure.SPILL)  # ... told apart by the setting it names
    message = str(safe_engine_error(exc, ("d.t",), diagnosis, EngineSettings(max_spill_size="8MB")))
    assert "spill limit of 8MB" in message and "add filters" in message


def test_an_interrupt_is_neither_data_nor_memory(data: Path) -> None:
    with duckdb.connect() as connection:
        connection.execute(f"CREATE VIEW t AS SELECT * FROM '{data / 't.parquet'}'")
        done = threading.Event()

        def interrupt_until_done() -> None:  # as the watchdog does, every 0.1 s
            while not done.wait(0.1):
                connection.interrupt()

        threading.Thread(target=interrupt_until_done, daemon=True).start()
        try:
            exc = _raised(lambda: connection.sql("SELECT count(*) FROM t a, t b, t c").fetchall())
        finally:
            done.set()
    assert isinstance(exc, duckdb.InterruptException)
    assert diagnose(exc, {"d.t": (data / "t.parquet",)}) == Diagnosis(Failure.INTERRUPTED)


@pytest.fixture
def broken(tmp_path: Path, data: Path) -> Path:
    """A copy of the Parquet file, for a test to break."""
    target = tmp_path / "p.parquet"
    target.write_bytes((data / "t.parquet").read_bytes())
    return target


def _break_then_scan(path: Path, damage: Callable[[bytes], bytes]) -> BaseException:
    with duckdb.connect() as connection:
        connection.execute(f"CREATE VIEW t AS SELECT * FROM '{path}'")
        path.write_bytes(damage(path.read_bytes()))
        return _raised(lambda: connection.sql("SELECT sum(i), sum(length(s)) FROM t").fetchall())


def _flip_bytes(data: bytes) -> bytes:
    flipped = bytearray(data)
    for index in random.Random(0).sample(range(100, len(data) - 20_000), 2_000):
        flipped[index] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize(
    ("damage", "raised"),
    [
        (lambda data: data[: len(data) // 2], duckdb.InvalidInputException),  # no footer
        (_flip_bytes, duckdb.InvalidInputException),  # pages fail to decompress
        (lambda data: data[:4] + data[len(data) // 2 :], duckdb.Error),  # Thrift: untyped
    ],
    ids=["truncated", "corrupt-pages", "corrupt-metadata"],
)
def test_a_broken_parquet_file_is_a_data_failure_of_its_product(
    broken: Path, damage: Callable[[bytes], bytes], raised: type
) -> None:
    exc = _break_then_scan(broken, damage)
    assert isinstance(exc, raised)
    paths = {"d.broken": (broken,), "d.other": (broken.with_name("other.parquet"),)}
    diagnosis = diagnose(exc, paths)
    assert diagnosis.kind is Failure.DATA
    assert "d.broken" in diagnosis.products
    message = str(safe_engine_error(exc, tuple(paths), diagnosis))
    assert "could not be read" in message
    assert not any(word in message for word in ("magic", "Snappy", "UTF8", "Thrift", str(broken)))


def test_a_missing_parquet_file_is_a_data_failure(broken: Path) -> None:
    with duckdb.connect() as connection:
        connection.execute(f"CREATE VIEW t AS SELECT * FROM '{broken}'")
        broken.unlink()
        exc = _raised(lambda: connection.sql("SELECT count(*) FROM t").fetchall())
    assert isinstance(exc, duckdb.IOException)
    assert diagnose(exc, {"d.broken": (broken,), "d.x": (Path("/x"),)}) == Diagnosis(
        Failure.DATA, ("d.broken",)
    )


def test_a_broken_file_found_while_streaming_is_a_data_failure(tmp_path: Path, data: Path) -> None:
    """A late file of a glob fails after rows were streamed: the error arrives as an
    OSError of the Arrow reader, its DuckDB type only in the message."""
    folder = tmp_path / "parts"
    folder.mkdir()
    whole = (data / "t.parquet").read_bytes()
    for index in range(3):
        (folder / f"p{index}.parquet").write_bytes(whole)
    (folder / "p2.parquet").write_bytes(whole[: len(whole) // 3])
    with duckdb.connect() as connection:
        exc = _raised(lambda: _drain(connection, f"SELECT * FROM '{folder}/*.parquet'"))
    assert isinstance(exc, OSError) and not isinstance(exc, duckdb.Error)
    assert carries_engine_error(exc)
    assert diagnose(exc, {"d.parts": (folder,)}) == Diagnosis(Failure.DATA, ("d.parts",))


def test_a_corrupt_duckdb_block_is_a_data_failure(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "t.duckdb"
    path.write_bytes((data / "t.duckdb").read_bytes())
    with duckdb.connect() as connection:
        connection.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
        size = path.stat().st_size
        with path.open("r+b") as handle:  # in place: the attached descriptor sees it
            handle.seek(size // 2)
            handle.write(os.urandom(size - size // 2))
        exc = _raised(lambda: connection.sql("SELECT sum(i), sum(length(s)) FROM src.t").fetchall())
    assert type(exc) is duckdb.Error  # DuckDB gives a failed block checksum no type
    assert diagnose(exc, {"d.t": (path,)}) == Diagnosis(Failure.DATA, ("d.t",))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT regexp_matches('a', '(')",
        "SELECT json_extract('{', '$.a')",
        "SELECT strptime('x', '%Q')",
    ],
)
def test_bad_function_arguments_are_not_data_failures(sql: str, data: Path) -> None:
    """InvalidInputException is the type of corrupt Parquet too: without a product's file
    in its message it is the query's own fault."""
    with duckdb.connect() as connection:
        exc = _raised(lambda: connection.sql(sql).fetchall())
    assert isinstance(exc, duckdb.InvalidInputException)
    assert diagnose(exc, {"d.t": (data / "t.parquet",)}) == Diagnosis(Failure.OTHER)
