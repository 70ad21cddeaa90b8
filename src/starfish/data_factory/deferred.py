"""A call that ends as "waiting for an answer from outside": the `deferred` outcome.

A call raises `Deferred(dispatcher)` when its answer will come later (a provider's batch, a
human review): its input leaves the worker, is stored `waiting`, is not a failure (no rule
sees it: not the circuit breaker, not `dead_queue_threshold`), and runs again, with the same
attempt number, when the dispatcher says its answers are ready. The same attempt matters: what
the call asked for is keyed by (input, attempt), so the second run finds the answers the
dispatcher collected and replays them.

A dispatcher is any object with two methods (`Dispatcher`); one is shared by every call that
defers to it, and the job waits on it while any of its inputs wait. One that gathers what its
inputs wait for (a batch lane) may also have `flush()`: the job calls it when every input left
is waiting, so that it sends what it gathered instead of waiting for more. An error raised by
`wait_ready` stops the job: with its `stop_status` and message as the reason when it has one
(a budget, a batch the provider rejected), else as `failed`. A job stopped or killed
while inputs wait keeps them `waiting`; a resume runs them again (and they may defer again).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["Deferred", "Dispatcher"]


class Dispatcher(Protocol):
    def defer(self, index: int, attempt: int) -> None:
        """Input `index` (at `attempt`) waits on this dispatcher."""

    async def wait_ready(self) -> Iterable[int]:
        """Wait until some waiting inputs can run again; return their indices."""


class Deferred(Exception):
    """Raised by a call whose answer will come later, through `dispatcher`."""

    def __init__(self, dispatcher: Dispatcher, reason: str = "waiting for an answer") -> None:
        super().__init__(reason)
        self.dispatcher = dispatcher
