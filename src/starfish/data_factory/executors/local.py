"""The local executor: the function runs on the job's own event loop, in this process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["LocalExecutor"]


class LocalExecutor:
    def __init__(self, func: Callable[..., Awaitable[Any]]) -> None:
        self.func = func

    async def start(self) -> None:
        """Nothing to start: the loop is already running."""

    def call(self, index: int, attempt: int, kwargs: dict[str, Any]) -> Awaitable[Any]:
        return self.func(**kwargs)  # the coroutine itself: no wrapper per call

    async def close(self) -> None:
        """Nothing to stop."""
