"""The model layer's tests run against a real loopback OpenAI server (tests/openai_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.openai_server import OpenAIServer

KEY = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture(autouse=True)
def _fresh_llm_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Endpoints (limits, modes, reachability) and stores are process-wide on purpose; not
    between tests."""
    from starfish.llm import endpoint, structured

    monkeypatch.setattr(structured, "RETRY_BASE_DELAY", 0.02)
    endpoint.reset_endpoints()
    yield
    endpoint.reset_endpoints()


@pytest.fixture
def make_server() -> Iterator[Any]:
    started: list[OpenAIServer] = []

    def make(**kwargs: Any) -> OpenAIServer:
        server = OpenAIServer(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Any) -> OpenAIServer:
    return make_server()
