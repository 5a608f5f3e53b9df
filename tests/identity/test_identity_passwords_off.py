"""``[identity] password_logins = false``: the mesh.toml users can no longer sign in with a
password (ADBC or pyarrow.flight), the refusal is audited, tokens still work, and the
refusal does not tell which users exist."""

from __future__ import annotations

import secrets
import statistics
import time

import adbc_driver_manager
import pytest
from pyarrow import flight
from support.clients import adbc_connect
from support.oidc import add_identity, flight_query
from support.polling import wait_until
from support.servers import copy_mesh, start_private

pytestmark = pytest.mark.slow  # a gateway and an OpenID provider of their own


@pytest.fixture(scope="module")
def tokens_only(demo_mesh, provider, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("passwords-off")
    mesh = copy_mesh(demo_mesh, tmp / "mesh")
    add_identity(mesh, provider.issuer, password_logins=False)
    token = provider.token("alice-eu")
    running = start_private(
        mesh, tmp / "gateway.log", ready=lambda uri: flight_query(uri, token, "SELECT 1")
    )
    yield running
    running.stop()


def test_password_logins_are_refused_and_audited(tokens_only, provider):
    client = flight.FlightClient(tokens_only.uri)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError) as refused:
            client.authenticate_basic_token("alice", "alice")  # the right password
    finally:
        client.close()
    assert "password logins are switched off" in str(refused.value)
    with pytest.raises(adbc_driver_manager.Error) as adbc_refused:
        connection = adbc_connect(tokens_only.uri, "bob")
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchall()
        finally:
            connection.close()
    assert adbc_refused.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED
    records = wait_until(
        lambda: [r for r in tokens_only.audit() if r.get("event") == "login_refused"],
        what="the refused logins' audit records",
    )
    assert {(r["user"], r["reason"]) for r in records} >= {
        ("alice", "password logins off"),
        ("bob", "password logins off"),
    }
    assert "alice" not in " ".join(str(r.get("error")) for r in records)  # no password echo
    table = flight_query(tokens_only.uri, provider.token("alice-us"), "SELECT 1 AS one")
    assert table.column(0).to_pylist() == [1]


def test_no_token_is_refused_naming_the_token_way_only(tokens_only):
    client = flight.FlightClient(tokens_only.uri)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError) as refused:
            client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1"))
    finally:
        client.close()
    assert "Bearer" in str(refused.value)
    assert "username and password" not in str(refused.value)


def test_the_refusal_does_not_tell_which_users_exist(tokens_only):
    """Medians over many alternating tries on one warm channel (robust on a loaded
    machine): a known user's refusal and an unknown one's take alike."""
    tries = 40
    known: list[float] = []
    unknown: list[float] = []
    client = flight.FlightClient(tokens_only.uri)
    try:

        def login_seconds(user: str) -> float:
            started = time.perf_counter()
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.authenticate_basic_token(user, user)
            return time.perf_counter() - started

        login_seconds("bob")  # warm up the channel on both sides
        for _ in range(tries):
            known.append(login_seconds("bob"))
            unknown.append(login_seconds("mallory-" + secrets.token_hex(4)))
    finally:
        client.close()
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 <= ratio <= 2.0, f"unknown/known median refusal time: {ratio:.2f}"
