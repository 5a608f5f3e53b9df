"""Authentication through real clients: passwords, bearer tokens, no user enumeration."""

from __future__ import annotations

import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import adbc_driver_manager
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect
from support.polling import wait_until
from support.servers import start_gateway, start_private, stop_gateway

from benchmarks.launch import REPO
from gateway.security.passwords import hash_password

DEMO_USERS = ("alice", "bob", "carol", "dave", "erin")
SQL = flight.FlightDescriptor.for_command(b"SELECT 1 AS x")


def adbc_error(uri: str, user: str, password: str) -> adbc_driver_manager.Error:
    """The error ADBC raises for these credentials, at connect or at the first call."""
    with pytest.raises(adbc_driver_manager.Error) as info:
        conn = adbc_connect(uri, user, password)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        finally:
            conn.close()
    return info.value


def flight_login_error(uri: str, user: str, password: str) -> flight.FlightUnauthenticatedError:
    client = flight.FlightClient(uri)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError) as info:
            client.authenticate_basic_token(user, password)
    finally:
        client.close()
    return info.value


def _mesh_with(mesh_dir, tmp_path_factory, settings: str):
    """A copy of ``mesh_dir`` with extra ``[gateway]`` settings."""
    import shutil

    copy = tmp_path_factory.mktemp("auth-mesh") / "mesh"
    shutil.copytree(mesh_dir, copy, ignore=shutil.ignore_patterns(".meshgate"))
    config = copy / "mesh.toml"
    config.write_text(config.read_text().replace("[gateway]\n", f"[gateway]\n{settings}\n", 1))
    return copy


@pytest.fixture(scope="module")
def gateway(demo_mesh, tmp_path_factory):
    """This module logs in wrongly on purpose, many times: its own gateway, with a lockout
    threshold high enough not to interfere (the lockout has its own test below)."""
    mesh = _mesh_with(demo_mesh, tmp_path_factory, "max_failed_logins = 10000")
    running = start_gateway(mesh, tmp_path_factory.mktemp("auth-logs") / "gateway.log")
    yield running
    stop_gateway(running)


@pytest.mark.slow
def test_repeated_failed_logins_lock_the_user_out_and_are_audited(demo_mesh, tmp_path_factory):
    mesh = _mesh_with(
        demo_mesh, tmp_path_factory, "max_failed_logins = 3\nfailed_login_lockout_seconds = 30"
    )
    running = start_gateway(mesh, tmp_path_factory.mktemp("lockout-logs") / "gateway.log")
    try:
        for _ in range(3):
            assert (
                core(flight_login_error(running.uri, "carol", "wrong"))
                == "invalid username or password"
            )
        locked = core(flight_login_error(running.uri, "carol", "carol"))  # even the right password
        assert locked.startswith("too many failed logins; retry in")
        during = "tried-during-lockout"
        assert "too many failed logins" in str(adbc_error(running.uri, "carol", during))
        with adbc_connect(running.uri, "erin") as conn, conn.cursor() as cur:  # others unaffected
            cur.execute("SELECT 1 AS x")
            assert cur.fetchall() == [(1,)]
        audit = (mesh / ".meshgate" / "audit" / "audit.jsonl").read_text()
        assert audit.count('"event":"login_failed","user":"carol"') >= 3
        assert "wrong" not in audit and during not in audit  # tried passwords are never recorded
        records = [json.loads(line) for line in audit.splitlines()]
        failed = [r for r in records if r["event"] == "login_failed" and r["user"] == "carol"]
        assert {r["reason"] for r in failed} == {"invalid credentials"}
        # every refusal during the lockout, pyarrow.flight's and ADBC's (which may retry)
        refused = [r for r in records if r["event"] == "login_refused"]
        assert len(refused) >= 2, refused
        for record in refused:
            assert (record["user"], record["reason"]) == ("carol", "locked out")
            assert record["error"].startswith("too many failed logins; retry in")
        listed = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "audit", str(mesh), "--user", "carol"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300", "NO_COLOR": "1"},
            timeout=120,
            check=True,
        )
        assert "login refused" in listed.stdout and "too many failed logins" in listed.stdout
    finally:
        stop_gateway(running)


def core(message: str) -> str:
    """The server's message without transport decorations."""
    return str(message).split(". Detail:")[0].split(" (Unauthenticated")[0]


@pytest.mark.parametrize("user", DEMO_USERS)
def test_every_demo_user_can_log_in(gateway, user):
    with adbc_connect(gateway.uri, user) as conn, conn.cursor() as cur:
        cur.execute("SELECT 41 + 1 AS answer")
        assert cur.fetchall() == [(42,)]


def test_wrong_password_adbc_is_unauthenticated(gateway):
    exc = adbc_error(gateway.uri, "bob", "not-bob")
    assert exc.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED
    assert "UNAUTHENTICATED" in str(exc)
    assert "invalid username or password" in str(exc)


@pytest.mark.parametrize("password", ["", "BOB", "bob ", "alice"])
def test_wrong_password_variants_pyarrow(gateway, password):
    exc = flight_login_error(gateway.uri, "bob", password)
    assert "invalid username or password" in str(exc)


def test_unknown_user_gets_the_same_message_as_a_wrong_password(gateway):
    wrong_password = flight_login_error(gateway.uri, "bob", "nope")
    unknown_user = flight_login_error(gateway.uri, "mallory", "nope")
    assert core(str(unknown_user)) == core(str(wrong_password)) == "invalid username or password"

    adbc_wrong = adbc_error(gateway.uri, "bob", "nope")
    adbc_unknown = adbc_error(gateway.uri, "mallory", "nope")
    assert (
        adbc_unknown.status_code
        == adbc_wrong.status_code
        == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED
    )
    assert core(str(adbc_unknown)) == core(str(adbc_wrong))
    assert "mallory" not in str(adbc_unknown)


@pytest.mark.slow
def test_unknown_user_is_not_answered_faster_than_a_wrong_password(gateway):
    """A fast 'no such user' answer lets a caller enumerate user names by timing.

    Robust on a loaded machine: many alternating tries on one warm channel, medians compared
    with a generous ratio (the module's gateway has a lockout threshold out of reach, and every
    unknown name is fresh). Without the decoy hash an unknown user skips scrypt entirely and
    answers in a small fraction of a wrong password's time.
    """
    tries = 40
    known: list[float] = []
    unknown: list[float] = []
    client = flight.FlightClient(gateway.uri)
    try:

        def login_seconds(user: str) -> float:
            started = time.perf_counter()
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.authenticate_basic_token(user, "definitely-wrong")
            return time.perf_counter() - started

        login_seconds("bob")  # warm up the channel on both sides
        for _ in range(tries):  # alternating, so load changes hit both samples alike
            known.append(login_seconds("bob"))
            unknown.append(login_seconds("mallory-" + secrets.token_hex(4)))
    finally:
        client.close()
    known_median, unknown_median = statistics.median(known), statistics.median(unknown)
    assert unknown_median >= 0.5 * known_median, (
        f"unknown user answered in {unknown_median * 1000:.1f} ms (median of {tries}), "
        f"wrong password in {known_median * 1000:.1f} ms"
    )


def test_no_token_is_refused_with_a_clear_message(gateway):
    client = flight.FlightClient(gateway.uri)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError) as info:
            client.get_flight_info(SQL)
        assert "authentication required" in str(info.value)
        assert "username and password" in str(info.value)
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(flight.Ticket(b"SELECT 1")).read_all()
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.do_action(flight.Action("CreatePreparedStatement", b"")))
    finally:
        client.close()


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer forged",
        b"Bearer " + secrets.token_urlsafe(32).encode(),
        b"Bearer ",
        b"bearer " + secrets.token_urlsafe(32).encode(),
    ],
    ids=["short", "token-shaped", "empty", "lowercase-scheme"],
)
def test_forged_bearer_token_is_refused(gateway, header):
    client = flight.FlightClient(gateway.uri)
    options = flight.FlightCallOptions(headers=[(b"authorization", header)])
    try:
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.get_flight_info(SQL, options)
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(flight.Ticket(b"SELECT 1"), options).read_all()
    finally:
        client.close()


def test_basic_credentials_only_open_a_session_on_handshake(gateway):
    """Basic credentials on a data call are not accepted in place of a token."""
    client = flight.FlightClient(gateway.uri)
    basic = b"Basic " + base64.b64encode(b"bob:bob")
    try:
        with pytest.raises(flight.FlightUnauthenticatedError) as info:
            client.get_flight_info(
                SQL, flight.FlightCallOptions(headers=[(b"authorization", basic)])
            )
        assert "Bearer" in str(info.value)
    finally:
        client.close()


def test_issued_token_works_on_its_own_and_is_not_the_password(gateway):
    client = flight.FlightClient(gateway.uri)
    try:
        name, value = client.authenticate_basic_token("erin", "erin")
        assert name.lower() == b"authorization"
        assert value.startswith(b"Bearer ")
        token = value.removeprefix(b"Bearer ")
        assert len(token) >= 32 and b"erin" not in token
        other = flight.FlightClient(gateway.uri)  # a fresh channel, only the header
        try:
            options = flight.FlightCallOptions(headers=[(b"authorization", value)])
            assert other.do_get(
                flight.Ticket(b"SELECT 7 AS x"), options
            ).read_all().to_pylist() == [{"x": 7}]
        finally:
            other.close()
    finally:
        client.close()


def test_each_login_gets_its_own_token(gateway):
    client = flight.FlightClient(gateway.uri)
    try:
        tokens = {client.authenticate_basic_token("dave", "dave")[1] for _ in range(3)}
    finally:
        client.close()
    assert len(tokens) == 3


def test_password_hashes_in_mesh_toml_are_not_plaintext(demo_mesh):
    text = (demo_mesh / "mesh.toml").read_text(encoding="utf-8")
    config = tomllib.loads(text)
    users = config["users"]
    assert set(users) == set(DEMO_USERS)
    hashes = set()
    for user, settings in users.items():
        assert set(settings) & {"password", "passwd", "pwd"} == set(), user
        value = settings["password_hash"]
        assert value.startswith("scrypt$"), user
        parts = value.split("$")
        assert len(parts) == 6, user
        _, n, r, p, salt, digest = parts
        assert int(n) >= 2**14 and int(r) >= 8 and int(p) >= 1
        assert len(base64.b64decode(salt)) >= 16
        assert len(base64.b64decode(digest)) >= 32
        assert user not in value
        hashes.add(value)
    assert len(hashes) == len(users), "every hash is salted differently"
    for user in DEMO_USERS:
        assert f'"{user}"' not in text.replace(f"[users.{user}]", "")


def test_plaintext_password_in_mesh_toml_is_refused_at_start(mesh_copy, tmp_path):
    config = mesh_copy / "mesh.toml"
    lines = config.read_text(encoding="utf-8").splitlines()
    in_bob = False
    for i, line in enumerate(lines):
        if line.strip().startswith("["):
            in_bob = line.strip() == "[users.bob]"
        elif in_bob and line.startswith("password_hash"):
            lines[i] = 'password_hash = "bob"'
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RuntimeError) as failed:
        start_gateway(mesh_copy, tmp_path / "gateway.log", timeout=30)
    log = (tmp_path / "gateway.log").read_text(errors="replace")
    assert "users.bob.password_hash" in log
    assert "plaintext" in log
    assert "gateway exited early" in str(failed.value)


@pytest.mark.slow
def test_tokens_expire(mesh_copy, tmp_path):
    """The configured TTL reaches the token store (its exact timing is tested on an injected
    clock in tests/gateway/test_auth_clock.py): a token is refused once it is past it."""
    config = mesh_copy / "mesh.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[gateway]\n", "[gateway]\ntoken_ttl_seconds = 2\n", 1
        ),
        encoding="utf-8",
    )
    private = start_gateway(mesh_copy, tmp_path / "gateway.log", timeout=30)
    try:
        client = flight.FlightClient(private.uri)
        try:
            options = flight.FlightCallOptions(
                headers=[client.authenticate_basic_token("bob", "bob")]
            )
            assert client.do_get(flight.Ticket(b"SELECT 1 AS x"), options).read_all().num_rows == 1

            def refused() -> str | None:
                try:
                    client.do_get(flight.Ticket(b"SELECT 1 AS x"), options).read_all()
                except flight.FlightUnauthenticatedError as exc:
                    return str(exc)
                return None

            expired = wait_until(refused, timeout=30, interval=0.2, what="the token to expire")
            assert "token expired: authenticate again" in expired
            fresh = flight.FlightCallOptions(
                headers=[client.authenticate_basic_token("bob", "bob")]
            )
            assert client.do_get(flight.Ticket(b"SELECT 1 AS x"), fresh).read_all().num_rows == 1
        finally:
            client.close()
    finally:
        stop_gateway(private)


def test_a_user_named_with_non_ascii_letters_runs_queries(mesh_copy: Path, tmp_path: Path) -> None:
    """A user name is any string (``[users."zoë"]``, an OpenID subject): the gateway's
    handle checks compare it as bytes (``compare_digest`` refuses non-ASCII ``str``)."""
    with (mesh_copy / "mesh.toml").open("a", encoding="utf-8") as config:
        config.write(
            f'\n[users."zoë"]\npassword_hash = "{hash_password("zoë-secret")}"\nroles = ["admin"]\n'
        )
    running = start_private(mesh_copy, tmp_path / "gateway.log")
    try:
        with adbc_connect(running.uri, "zoë", "zoë-secret") as conn, conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sales.orders")
            assert cursor.fetchall() == [(200_000,)]
            cursor.execute("SELECT count(*) FROM crm.customers WHERE region = ?", ("EU",))
            assert cursor.fetchone()[0] > 0
    finally:
        running.stop()
