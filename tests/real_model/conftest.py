"""A real model server none of us wrote: llama-cpp-python serving SmolLM2-135M-Instruct.

`make test-real-model` installs both (tests/real_model/provision.py) and runs these tests in a
loopback-only network namespace. The server is started once per session on 127.0.0.1; the
tests reach it through `Recorder`, a pass-through proxy that keeps what the server answered
(every request, every `usage`), so they can compare what Starfish counted with what the
server did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_model.server import MODEL, ModelServer, Recorder

__all__ = ["MODEL", "Recorder"]


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running llama-cpp-python server (no recorder in front)."""
    try:
        server = ModelServer(Path(tmp_path_factory.mktemp("llama")) / "server.log").start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server.url
    server.stop()


@pytest.fixture
def recorder(model_server: str) -> Iterator[Recorder]:
    rec = Recorder(model_server.removesuffix("/v1")).start()
    yield rec
    rec.stop()
