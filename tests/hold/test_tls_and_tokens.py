"""TLS from config, bearer token expiry and revocation, failed-login lockout.

A self-signed certificate (CN and SAN ``localhost`` + IP ``127.0.0.1``) is generated with
``cryptography`` into the mesh copy, and ``[gateway] tls_cert_file / tls_key_file`` point
at it (relative to the mesh). Clients trust it through ``tls_root_certs``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pytest
from pyarrow import flight
from support.clients import STATUS_ERRORS, message, run_sql
from support.polling import poll_for, timed
from support.servers import Private, configure, copy_mesh, private_gateway, start_private
from support.tls import self_signed_certificate, tls_private


@pytest.fixture(scope="module")
def tls_gateway(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with tls_private(demo_mesh, tmp_path_factory.mktemp("tls")) as running:
        yield running


def test_adbc_connects_over_tls_and_runs_a_query(tls_gateway: Private) -> None:
    assert tls_gateway.uri.startswith("grpc+tls://127.0.0.1:")
    assert adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value == (
        "adbc.flight.sql.client_option.tls_root_certs"
    )
    conn = flightsql.connect(
        tls_gateway.uri,
        db_kwargs={
            "username": "alice",
            "password": "alice",
            adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: tls_gateway.root_certs.decode(),
        },
        autocommit=True,
    )
    try:
        cur = conn.cursor()
        cur.execute("SELECT region, count(*) AS n FROM sales.orders GROUP BY region")
        table = cur.fetch_arrow_table()
        cur.close()
    finally:
        conn.close()
    assert table.column("region").to_pylist() == ["EU"]
    assert table.column("n").to_pylist() == [89_906]
    started = [e for e in tls_gateway.events("gateway_started")]
    assert started and started[0]["location"].startswith("grpc+tls://")


def test_pyarrow_flight_over_tls(tls_gateway: Private) -> None:
    table = run_sql(tls_gateway, "bob", "SELECT count(*) AS n FROM crm.customers")
    assert table.column(0).to_pylist() == [20_000]


def test_plaintext_client_cannot_talk_to_the_tls_port(tls_gateway: Private) -> None:
    client = flight.FlightClient(f"grpc://127.0.0.1:{tls_gateway.port}")
    _, _, error = timed(
        client.authenticate_basic_token, "bob", "bob", flight.FlightCallOptions(timeout=30)
    )
    client.close()
    assert isinstance(error, STATUS_ERRORS), "a plaintext handshake succeeded on the TLS port"

    # ADBC over plaintext gRPC: the handshake at connect (or the first call) fails
    def adbc_plaintext() -> None:
        conn = flightsql.connect(
            f"grpc://127.0.0.1:{tls_gateway.port}",
            db_kwargs={
                "username": "bob",
                "password": "bob",
                adbc_driver_flightsql.DatabaseOptions.TIMEOUT_QUERY.value: "5",
            },
            autocommit=True,
        )
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetch_arrow_table()
        finally:
            conn.close()

    _, _, error = timed(adbc_plaintext)
    assert error is not None, "ADBC over plaintext gRPC ran a query on the TLS port"


def test_tls_client_that_does_not_trust_the_certificate_is_refused(tls_gateway: Private) -> None:
    client = flight.FlightClient(tls_gateway.uri)  # system roots only
    _, _, error = timed(
        client.authenticate_basic_token, "bob", "bob", flight.FlightCallOptions(timeout=5)
    )
    client.close()
    assert isinstance(error, STATUS_ERRORS), "an untrusted self-signed certificate was accepted"


def test_tls_config_with_only_a_certificate_is_a_clear_startup_error(
    demo_mesh: Path, tmp_path: Path
) -> None:
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    cert, _ = self_signed_certificate()
    (mesh / "cert.pem").write_bytes(cert)
    configure(mesh, "gateway", tls_cert_file="cert.pem")
    with pytest.raises(RuntimeError) as info:
        start_private(mesh, tmp_path / "gateway.log", timeout=30)
    assert "tls_key_file" in str(info.value)


@pytest.mark.slow
def test_a_port_in_use_is_a_clear_startup_error(demo_mesh: Path, tmp_path: Path) -> None:
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError) as info:
            start_private(mesh, tmp_path / "gateway.log", port=port, timeout=30)
    message = str(info.value)
    assert f"cannot listen on grpc://127.0.0.1:{port}: the port is in use" in message
    assert "Traceback" not in message and "Server did not start properly" not in message


# --------------------------------------------------------------------------- tokens


@pytest.fixture(scope="module")
def short_tokens(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_gateway(
        demo_mesh,
        tmp_path_factory.mktemp("tokens"),
        gateway={
            "token_ttl_seconds": 2,
            "max_failed_logins": 3,
            "failed_login_lockout_seconds": 60,
        },
    ) as running:
        yield running


@pytest.mark.slow
def test_token_expires_after_its_ttl(short_tokens: Private) -> None:
    client = short_tokens.client("alice")
    assert run_sql(short_tokens, "alice", "SELECT 1 AS one", client=client).num_rows == 1
    # polled, not slept: the exact expiry is tested on an injected clock (test_auth_clock.py)
    error = poll_for(
        lambda: timed(run_sql, short_tokens, "alice", "SELECT 1 AS one", client=client)[2],
        timeout=30,
        interval=0.2,
    )
    assert isinstance(error, flight.FlightUnauthenticatedError), error
    assert "expired" in message(error)
    # a new login works
    assert run_sql(short_tokens, "alice", "SELECT 1 AS one").num_rows == 1


@pytest.fixture(scope="module")
def plain(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_gateway(demo_mesh, tmp_path_factory.mktemp("plain")) as running:
        yield running


def test_logout_revokes_the_token_and_only_that_token(plain: Private) -> None:
    client, options = plain.client("alice")
    other = plain.client("alice")
    assert run_sql(plain, "alice", "SELECT 1 AS one", client=(client, options)).num_rows == 1
    assert list(client.do_action(flight.Action("Logout", b""), options)) == []
    for call in (
        lambda: run_sql(plain, "alice", "SELECT 1 AS one", client=(client, options)),
        lambda: list(client.do_action(flight.Action("Health", b""), options)),
        lambda: client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1"), options),
    ):
        _, _, error = timed(call)
        assert isinstance(error, flight.FlightUnauthenticatedError), error
    # the same user's other session is untouched
    assert run_sql(plain, "alice", "SELECT 1 AS one", client=other).num_rows == 1


def test_stream_started_before_logout_is_not_extended_to_new_calls(plain: Private) -> None:
    """A ticket obtained before Logout cannot be redeemed with the revoked token."""
    client, options = plain.client("bob")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 42 AS x"), options)
    list(client.do_action(flight.Action("Logout", b""), options))
    _, _, error = timed(lambda: client.do_get(info.endpoints[0].ticket, options).read_all())
    assert isinstance(error, flight.FlightUnauthenticatedError), error


def test_failed_logins_lock_the_user_out_and_are_audited(short_tokens: Private) -> None:
    for _ in range(3):
        _, _, error = timed(short_tokens.client, "erin", "wrong")
        assert isinstance(error, flight.FlightUnauthenticatedError)
    _, _, error = timed(short_tokens.client, "erin", "erin")  # the right password, too late
    assert isinstance(error, flight.FlightUnauthenticatedError)
    assert "too many failed logins" in message(error)
    # another user is unaffected
    assert run_sql(short_tokens, "carol", "SELECT 1 AS one").num_rows == 1
    failures = [
        r for r in short_tokens.audit() if r["event"] == "login_failed" and r.get("user") == "erin"
    ]
    assert len(failures) >= 3
    assert not any("wrong" in str(r) for r in failures), "a tried password reached the audit log"
