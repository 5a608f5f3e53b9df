"""The added cost of signing statements with an identity token (cached key, and the
token verified once) against the gateway's own bearer token after a password login:
medians of many alternating statements on one warm channel. Prints the figure the README
quotes."""

from __future__ import annotations

import statistics
import time

import pytest
from pyarrow import flight
from support.oidc import bearer

pytestmark = [pytest.mark.bench, pytest.mark.slow]

STATEMENTS = 400


def test_token_sign_in_adds_little_per_statement(identity_gateway, provider):
    client = flight.FlightClient(identity_gateway.uri)
    descriptor = flight.FlightDescriptor.for_command(b"SELECT count(*) FROM sales.orders")
    token = bearer(provider.token("alice-eu"))
    password = flight.FlightCallOptions(headers=[client.authenticate_basic_token("alice", "alice")])

    def statement(options: flight.FlightCallOptions) -> float:
        started = time.perf_counter()
        info = client.get_flight_info(descriptor, options)
        client.do_get(info.endpoints[0].ticket, options).read_all()
        return time.perf_counter() - started

    try:
        for _ in range(30):  # warm: plans cached, channel open, token verified once
            statement(token), statement(password)
        with_token, with_password = [], []
        for _ in range(STATEMENTS):  # alternating: load changes hit both alike
            with_token.append(statement(token))
            with_password.append(statement(password))
    finally:
        client.close()
    token_ms = statistics.median(with_token) * 1000
    password_ms = statistics.median(with_password) * 1000
    paired_ms = (
        statistics.median(t - p for t, p in zip(with_token, with_password, strict=True)) * 1000
    )
    print(
        f"\nstatement median: identity token {token_ms:.2f} ms, gateway token "
        f"{password_ms:.2f} ms, paired difference {paired_ms:+.3f} ms ({STATEMENTS} each)"
    )
    assert token_ms < 1.5 * password_ms
