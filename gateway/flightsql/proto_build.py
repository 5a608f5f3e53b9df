"""Compile ``gateway/flightsql/flightsql.proto`` into Python protobuf modules.

The generated ``gateway/flightsql/flightsql_pb2.py`` (and its ``.pyi`` stub) are committed;
this module regenerates them with the ``protoc`` bundled in ``grpcio-tools``
(a test/dev dependency, imported lazily so the gateway itself never needs it).

Regenerate in place after editing the ``.proto``::

    python -m gateway.flightsql.proto_build

protoc is invoked with the repository root as the only import path and the
proto named by its repo-relative path, so the output embeds nothing
machine-specific: the descriptor's file name is ``gateway/flightsql/flightsql.proto`` and
the message classes' module is ``gateway.flightsql.flightsql_pb2``. The output therefore
depends only on the ``.proto`` text and the grpcio-tools (protoc) version.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["compile_proto"]

_PACKAGE_DIR = Path(__file__).resolve().parent
_IMPORT_ROOT = _PACKAGE_DIR.parents[1]
_PACKAGE_PATH = _PACKAGE_DIR.relative_to(_IMPORT_ROOT).as_posix()  # gateway/flightsql
_PROTO_NAME = f"{_PACKAGE_PATH}/flightsql.proto"


def compile_proto(out_dir: Path) -> Path:
    """Run protoc on ``gateway/flightsql/flightsql.proto``, writing into ``out_dir``.

    protoc mirrors the proto's package-relative path, so the module is written
    to ``out_dir / "gateway" / "flightsql" / "flightsql_pb2.py"`` (with a ``flightsql_pb2.pyi``
    stub beside it); passing the repository root as ``out_dir`` regenerates
    the committed files in place.

    Args:
        out_dir: Existing or new directory to write the generated code under.

    Returns:
        Path of the generated ``flightsql_pb2.py``.

    Raises:
        RuntimeError: if protoc reports an error (its diagnostics go to stderr).
    """
    from grpc_tools import protoc  # dev dependency; keep out of import time

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",  # argv[0], ignored by protoc
        f"--proto_path={_IMPORT_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        _PROTO_NAME,
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status} on {_PROTO_NAME}")
    return out_dir / _PACKAGE_PATH / "flightsql_pb2.py"


def main() -> int:
    """Regenerate the committed ``gateway/flightsql/flightsql_pb2.py`` in place."""
    generated = compile_proto(_IMPORT_ROOT)
    print(f"wrote {generated} and {generated.with_suffix('.pyi')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
