"""A Spark Connect client for governed SQL: one statement per Spark session, Arrow out.

It speaks the Spark Connect protocol with the messages and channel rules that ship in
``pyspark[connect]`` (the ``spark`` extra): the ``sc://`` address, its token and TLS
options are Spark's own. Each query gets a session of its own (its temporary views, the
governed fragments, die with it), an operation id to interrupt it by, and results as the
Arrow batches Spark sends, never collected whole. Spark's error texts can quote data
values: only Spark's error class reaches the client.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import grpc
import pyarrow as pa
import structlog

from gateway.errors import ConfigError, QueryFailed, Unavailable

log = structlog.get_logger("meshgate.spark")

#: session settings every query runs with: text and timestamps as the gateway renders
#: them, partition values read as text (as DuckDB reads hive partitions)
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    # semantics the generated SQL relies on, whatever the cluster's defaults: errors
    # rather than wrapped overflows and NULLs from bad casts; no ${...} substitution (it
    # reads the server's environment); backslash escapes in string literals; decimal
    # arithmetic that keeps its scale rather than rounding past 38 digits of precision
    "spark.sql.ansi.enabled": "true",
    "spark.sql.variable.substitute": "false",
    "spark.sql.parser.escapedStringLiterals": "false",
    "spark.sql.decimalOperations.allowPrecisionLoss": "false",
}
#: a query's first call creates its Spark session: on a loaded cluster that alone can take
#: several times the connect timeout
_SESSION_CREATION_TIMEOUTS = 6


class SparkUnavailable(Unavailable):
    """Spark Connect cannot be reached, or stopped answering."""


class SparkQueryFailed(QueryFailed):
    """Spark ran the query and failed it."""


def _pyspark() -> tuple[ModuleType, Any, Any]:
    """The Spark Connect protos, service stub and channel builder (imported on first use:
    pyspark is an optional extra)."""
    try:
        with warnings.catch_warnings():  # pyspark warns about the pandas version it finds
            warnings.simplefilter("ignore")
            import pyspark.sql.connect.proto as pb
            from pyspark.sql.connect.client.core import DefaultChannelBuilder
            from pyspark.sql.connect.proto.base_pb2_grpc import SparkConnectServiceStub
    except ImportError as exc:
        raise ConfigError(
            "[engines.spark] needs the Spark Connect client: pip install 'meshgate[spark]'"
        ) from exc
    return pb, SparkConnectServiceStub, DefaultChannelBuilder


class SparkConnect:
    """One Spark Connect endpoint (``sc://host:port/;token=...``)."""

    def __init__(self, remote: str, connect_timeout_seconds: float = 10.0) -> None:
        self._pb, stub, builder_class = _pyspark()
        try:
            builder = builder_class(remote)
        except Exception:  # noqa: BLE001 - pyspark's errors quote the URL and its token
            raise ConfigError(
                "[engines.spark] remote is not a Spark Connect address Spark accepts "
                "(sc://host:port/;token=...; percent-encode characters such as = in the token)"
            ) from None
        self.endpoint = builder.endpoint  # host:port, for messages (never the token)
        self._user = builder.userId or "meshgate"
        self._channel = builder.toChannel()
        self._stub = stub(self._channel)
        self._connect_timeout = connect_timeout_seconds

    def run(
        self,
        sql: str,
        session: str,
        operation_id: str,
        views: Mapping[str, pa.Table] | None = None,
        stopped: threading.Event | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Run ``sql`` in the new session ``session`` (a UUID), in which ``views`` are
        temporary views, and yield its Arrow batches; the session is released when the
        iterator ends. Nothing starts once ``stopped`` is set (an interrupt that came
        before the operation existed)."""
        try:
            self._configure(session)
            for name, table in (views or {}).items():
                self._create_view(session, name, table)
            views = None  # uploaded: the fragments need not stay in memory
            if stopped is not None and stopped.is_set():
                return
            request = self._pb.ExecutePlanRequest(
                session_id=session,
                user_context=self._context(),
                operation_id=operation_id,
                plan=self._pb.Plan(root=self._pb.Relation(sql=self._pb.SQL(query=sql))),
                request_options=[self._not_reattachable()],
                tags=["meshgate"],
            )
            for response in self._stub.ExecutePlan(request):
                if response.HasField("arrow_batch"):
                    yield from pa.ipc.open_stream(response.arrow_batch.data)
        except grpc.RpcError as exc:
            raise spark_error(exc) from None
        except pa.ArrowException:
            raise SparkQueryFailed("Spark sent a result that could not be read") from None
        finally:
            self._release(session)

    def interrupt(self, session: str, operation_id: str) -> None:
        """Ask Spark to stop an operation of ``session`` (a finished one is left alone)."""
        request = self._pb.InterruptRequest(
            session_id=session,
            user_context=self._context(),
            interrupt_type=self._pb.InterruptRequest.InterruptType.INTERRUPT_TYPE_OPERATION_ID,
            operation_id=operation_id,
        )
        try:
            self._stub.Interrupt(request, timeout=self._connect_timeout)
        except grpc.RpcError as exc:
            log.warning("spark_interrupt_failed", operation_id=operation_id, code=str(exc.code()))

    def reachable(self) -> bool:
        """True when Spark answers a configuration read within the connect timeout."""
        session = str(uuid.uuid4())
        get = self._pb.ConfigRequest.Get(keys=["spark.sql.session.timeZone"])
        try:
            self._stub.Config(
                self._pb.ConfigRequest(
                    session_id=session,
                    user_context=self._context(),
                    operation=self._pb.ConfigRequest.Operation(get=get),
                ),
                timeout=self._connect_timeout,
            )
        except grpc.RpcError:
            return False
        self._release(session)
        return True

    def close(self) -> None:
        self._channel.close()

    def _context(self) -> Any:
        return self._pb.UserContext(user_id=self._user)

    def _not_reattachable(self) -> Any:
        return self._pb.ExecutePlanRequest.RequestOption(
            reattach_options=self._pb.ReattachOptions(reattachable=False)
        )

    def _configure(self, session: str) -> None:
        """Create ``session`` with ``SESSION_CONF``: the first call of a query, so it also
        waits for a cold server (a new session takes seconds on a loaded machine)."""
        pairs = [self._pb.KeyValue(key=k, value=v) for k, v in SESSION_CONF.items()]
        self._stub.Config(
            self._pb.ConfigRequest(
                session_id=session,
                user_context=self._context(),
                operation=self._pb.ConfigRequest.Operation(
                    set=self._pb.ConfigRequest.Set(pairs=pairs)
                ),
            ),
            timeout=self._connect_timeout * _SESSION_CREATION_TIMEOUTS,
        )

    def _create_view(self, session: str, name: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        command = self._pb.Command(
            create_dataframe_view=self._pb.CreateDataFrameViewCommand(
                input=self._pb.Relation(
                    local_relation=self._pb.LocalRelation(data=sink.getvalue().to_pybytes())
                ),
                name=name,
                is_global=False,
                replace=True,
            )
        )
        request = self._pb.ExecutePlanRequest(
            session_id=session,
            user_context=self._context(),
            operation_id=str(uuid.uuid4()),
            plan=self._pb.Plan(command=command),
            request_options=[self._not_reattachable()],
        )
        for _ in self._stub.ExecutePlan(request):
            pass

    def _release(self, session: str) -> None:
        try:
            self._stub.ReleaseSession(
                self._pb.ReleaseSessionRequest(session_id=session, user_context=self._context()),
                timeout=self._connect_timeout,
            )
        except grpc.RpcError as exc:  # the server drops idle sessions itself
            log.info("spark_session_not_released", code=str(exc.code()))


_UNREACHABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}


def spark_error(exc: grpc.RpcError) -> QueryFailed | Unavailable:
    """A client-safe error for a failed Spark call: Spark's error class, never its text
    (which can quote data values), nor where Spark runs."""
    code = exc.code() if hasattr(exc, "code") else None
    if code in _UNREACHABLE:
        refused = code in {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
        reason = "refused the gateway's credentials" if refused else "is unreachable"
        return SparkUnavailable(f"Spark {reason}; the query did not run")
    if code == grpc.StatusCode.CANCELLED:
        return SparkQueryFailed("Spark stopped the query")
    return SparkQueryFailed(
        f"Spark failed the query ({_error_class(exc)}); the data values involved are not shown"
    )


def _error_class(exc: grpc.RpcError) -> str:
    """Spark's error class (``DIVIDE_BY_ZERO``) from the call's error details."""
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status
    except ImportError:
        return "unknown error"
    try:
        status = rpc_status.from_call(exc) if isinstance(exc, grpc.Call) else None
        for detail in status.details if status is not None else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info.metadata.get("errorClass") or info.reason.rsplit(".", 1)[-1]
    except Exception:  # noqa: BLE001 - malformed details: the class stays unknown, never the text
        return "unknown error"
    return "unknown error"
