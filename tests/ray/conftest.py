"""Ray tests: one Ray instance per session, inside a network namespace with only loopback.

`make test-ray` (run by `make test`) starts pytest inside `unshare -n`. Anywhere else these
tests are skipped with that reason: Ray would probe outside addresses and bind every interface.
Inside the namespace nothing but loopback exists, so the socket guard of tests/conftest.py is
replaced here by a check of the namespace itself (Ray resolves the host name, which the guard
would refuse).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from starfish.data_factory.storage.memory import MEMORY


def _only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("STARFISH_IN_LOOPBACK_NAMESPACE") == "1" and _only_loopback():
        return
    skip = pytest.mark.skip(
        reason="Ray tests run only inside a loopback-only network namespace: `make test-ray` "
        "(called by `make test`) starts them under `unshare -n`"
    )
    for item in items:
        if "tests/ray/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """As in tests/conftest.py, minus the socket guard: the namespace has only loopback."""
    assert _only_loopback(), "the Ray tests must run in a namespace with only loopback"
    monkeypatch.setenv("STARFISH_LOCAL_STORAGE_DIR", str(tmp_path_factory.mktemp("appdata")))
    monkeypatch.setenv("STARFISH_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.setenv("TELEMETRY_ENABLED", "false")
    monkeypatch.setenv("POSTHOG_HOST", "http://127.0.0.1:9")


@pytest.fixture(autouse=True)
def _no_in_memory_jobs_between_tests() -> Iterator[None]:
    yield
    MEMORY._jobs.clear()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray instance for the session; yields its address for subprocess drivers."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
