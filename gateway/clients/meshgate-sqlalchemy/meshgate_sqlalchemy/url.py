"""A ``meshgate://`` SQLAlchemy URL as the arguments of ``adbc_driver_flightsql.dbapi.connect``.

- ``meshgate://user:password@host:port``: a password login (port 8815 when left out);
- ``meshgate+tls://...`` or ``?tls=true``: gRPC over TLS, with ``tls_root_certs=/path/ca.pem``
  (a CA to trust, read from that file) or ``tls_skip_verify=true`` (tests only);
- ``meshgate://host:port?token=...``: a bearer token the gateway issued, instead of a password;
- ``meshgate://user:password@host:port/sales``: ``sales`` is the connection's default schema
  (ADBC's ``adbc.connection.db_schema``, Flight SQL's SetSessionOptions): unqualified product
  names mean products of the domain ``sales``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adbc_driver_flightsql import DatabaseOptions
from adbc_driver_manager import ConnectionOptions
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError

DEFAULT_PORT = 8815
#: the ADBC connection option that sets the session's default schema
DB_SCHEMA_OPTION = ConnectionOptions.CURRENT_DB_SCHEMA.value
#: the longest schema name the gateway takes
MAX_SCHEMA = 255
#: the query parameters a URL may carry
OPTIONS = ("tls", "tls_root_certs", "tls_skip_verify", "token")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def connect_args(url: URL) -> tuple[list[str], dict[str, Any]]:
    """(args, kwargs) for ``adbc_driver_flightsql.dbapi.connect``."""
    query = {key: _single(url, key) for key in url.query}
    unknown = sorted(set(query) - set(OPTIONS))
    if unknown:
        raise ArgumentError(
            f"unknown option {', '.join(unknown)} in a meshgate URL; known: {', '.join(OPTIONS)}"
        )
    schema = default_schema(url)
    if not url.host:
        raise ArgumentError("a meshgate URL needs a host: meshgate://user:password@host:port")
    tls = url.get_driver_name() == "tls" or _flag(query, "tls")
    db_kwargs: dict[str, str] = {}
    token = query.get("token")
    if token is not None:
        if url.username or url.password:
            raise ArgumentError("a meshgate URL takes a user and password or a token, not both")
        db_kwargs[DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    elif url.username:
        db_kwargs["username"] = url.username
        db_kwargs["password"] = url.password or ""
    else:
        raise ArgumentError(
            "a meshgate URL needs credentials: meshgate://user:password@host:port "
            "or meshgate://host:port?token=..."
        )
    if "tls_root_certs" in query:
        tls = True
        path = Path(query["tls_root_certs"]).expanduser()
        try:
            db_kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = path.read_text(encoding="ascii")
        except OSError as exc:
            raise ArgumentError(f"cannot read tls_root_certs {path}: {exc.strerror}") from None
    if _flag(query, "tls_skip_verify"):
        tls = True
        db_kwargs[DatabaseOptions.TLS_SKIP_VERIFY.value] = "true"
    scheme = "grpc+tls" if tls else "grpc"
    uri = f"{scheme}://{_host(url.host)}:{url.port or DEFAULT_PORT}"
    kwargs: dict[str, Any] = {"db_kwargs": db_kwargs, "autocommit": True}
    if schema is not None:
        kwargs["conn_kwargs"] = {DB_SCHEMA_OPTION: schema}
    return [uri], kwargs


def default_schema(url: URL) -> str | None:
    """The domain the URL's path names (folded to lower case, as the gateway folds it), or
    None without a path."""
    if not url.database:
        return None
    schema = url.database.strip("/")
    if not schema or "/" in schema or len(schema) > MAX_SCHEMA:
        raise ArgumentError(
            f"a meshgate URL's path is one domain, the default schema (got /{url.database})"
        )
    return schema.lower()


def _single(url: URL, key: str) -> str:
    value = url.query[key]
    if isinstance(value, tuple):
        raise ArgumentError(f"option {key} is given more than once in a meshgate URL")
    return value


def _flag(query: dict[str, str], key: str) -> bool:
    value = query.get(key, "false").lower()
    if value not in _TRUE + _FALSE:
        raise ArgumentError(f"option {key} of a meshgate URL is true or false, not {value!r}")
    return value in _TRUE


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
