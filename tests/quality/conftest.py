"""Quality tests: real SQLite job storage, the loopback OpenAI server (chat and /embeddings)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llm.conftest import _fresh_llm_state, make_server, server

__all__ = ["_fresh_llm_state", "make_server", "server"]


@pytest.fixture(autouse=True)
def _fresh_quality_stores() -> Iterator[None]:
    from starfish.quality import store

    yield
    for s in store._stores.values():
        s.close()
    store._stores.clear()
