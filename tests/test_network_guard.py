"""The suite itself refuses any host but loopback."""

import socket

import pytest


def test_connecting_to_a_public_address_fails_the_test() -> None:
    with socket.socket() as s, pytest.raises(AssertionError, match="only loopback"):
        s.connect(("93.184.216.34", 443))


def test_telemetry_defaults_point_at_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    assert os.environ["TELEMETRY_ENABLED"] == "false"
    assert os.environ["POSTHOG_HOST"].startswith("http://127.0.0.1")


def test_resolving_posthog_cloud_fails_the_test() -> None:
    with pytest.raises(AssertionError, match="only loopback"):
        socket.getaddrinfo("us.i.posthog.com", 443)
