"""Test-wide guards: every test gets its own app data dir, and nothing leaves loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from tests.posthog_receiver import PostHogReceiver

DEAD_LOOPBACK = "http://127.0.0.1:9"
# A syntactically real project key: with it, telemetry may send (to the loopback receiver).
TEST_API_KEY = "phc_loopbackReceiverTestKey"


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple):
        address = address[0]
    if not isinstance(address, str):
        return True  # AF_UNIX paths and the like
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise AssertionError(f"test tried to reach {address!r}: only loopback is allowed")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise AssertionError(f"test tried to reach {address!r}: only loopback is allowed")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
    if host is not None and not _is_loopback(host if isinstance(host, str) else str(host)):
        raise AssertionError(f"test tried to resolve {host!r}: only loopback is allowed")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A fresh app data dir and config dir, telemetry off and aimed at a dead loopback port.

    The variables are set in os.environ, so subprocesses inherit them too. A test that wants
    telemetry uses the `receiver` fixture, which turns it on and aims it at a live receiver.
    """
    monkeypatch.setenv("STARFISH_LOCAL_STORAGE_DIR", str(tmp_path_factory.mktemp("appdata")))
    # The saved telemetry choice lives in the user config dir: never the real one in tests.
    monkeypatch.setenv("STARFISH_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.setenv("TELEMETRY_ENABLED", "false")
    monkeypatch.setenv("POSTHOG_HOST", DEAD_LOOPBACK)
    for name in ("DO_NOT_TRACK", "TELEMETRY_DEBUG", "STARFISH_TELEMETRY_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def _no_in_memory_jobs_between_tests() -> Iterator[None]:
    """In-memory jobs live as long as the process: without this, one test's jobs show up in
    the next test's `starfish.jobs.list_jobs()`."""
    yield
    from starfish.data_factory.storage.memory import MEMORY

    MEMORY._jobs.clear()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[PostHogReceiver]:
    """A live loopback PostHog receiver with telemetry turned on (with a key) and pointed at it."""
    rec = PostHogReceiver("ok").start()
    monkeypatch.setenv("TELEMETRY_ENABLED", "true")
    monkeypatch.setenv("STARFISH_TELEMETRY_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("POSTHOG_HOST", rec.url)
    yield rec
    rec.stop()


@pytest.fixture
def make_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Factory for a receiver in a given mode (`ok`, `500`, `refuse`, `hang`, `blackhole`)."""
    started: list[PostHogReceiver] = []

    def make(mode: str = "ok") -> PostHogReceiver:
        rec = PostHogReceiver(mode).start()
        started.append(rec)
        monkeypatch.setenv("TELEMETRY_ENABLED", "true")
        monkeypatch.setenv("STARFISH_TELEMETRY_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("POSTHOG_HOST", rec.url)
        return rec

    yield make
    for rec in started:
        rec.stop()
