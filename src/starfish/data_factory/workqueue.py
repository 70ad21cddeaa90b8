"""The work queue: which input runs next, and when the work is over.

Inputs come from one iterator of pending indices (never a task or an entry per input, so a
million inputs cost no more memory than ten), retries come back through timers
(`loop.call_later`, not sleeping tasks), and idle workers wait on one future that is resolved
when work appears or the job ends: no polling. The work is over when the queue is closed, or
when nothing is pending, in flight or waiting for a retry.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator

__all__ = ["WorkQueue"]


class WorkQueue:
    def __init__(self, pending: Iterator[int], loop: asyncio.AbstractEventLoop) -> None:
        self._pending = pending
        self._loop = loop
        self._ready: deque[int] = deque()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._busy = 0
        self._held = 0  # inputs waiting on a dispatcher (deferred.py): the work is not over
        self._exhausted = False  # the pending iterator gave its last index
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def take(self) -> int | None:
        """The next input to run now (counted in flight until `done`), or None."""
        if self._closed:
            return None
        if self._ready:
            index: int | None = self._ready.popleft()
        else:
            index = next(self._pending, None)
            if index is None:
                self._exhausted = True
                return None
        self._busy += 1
        return index

    def done(self) -> None:
        """An input taken with `take` is no longer in flight."""
        self._busy -= 1

    @property
    def finished(self) -> bool:
        if self._closed:
            return True
        return self._exhausted and not (self._busy or self._timers or self._ready or self._held)

    @property
    def stalled(self) -> bool:
        """Every input left waits on a dispatcher: nothing else can make progress."""
        return bool(
            self._held
            and self._exhausted
            and not (self._closed or self._busy or self._timers or self._ready)
        )

    async def wait(self) -> None:
        """Until work may have appeared or the queue finished; at once if it has finished,
        waking every idle worker so that each sees it too."""
        if self.finished:
            self._wake()
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = self._loop.create_future()
        await waiter

    def hold(self) -> None:
        """One more input waits outside the queue (deferred) and will come back."""
        self._held += 1

    def come_back(self, index: int) -> None:
        """A held input is ready to run again."""
        self._held -= 1
        if not self._closed:
            self._ready.append(index)
        self._wake()

    def retry_later(self, index: int, delay: float) -> None:
        self._timers[index] = self._loop.call_later(delay, self._retry_ready, index)

    def _retry_ready(self, index: int) -> None:
        del self._timers[index]
        if not self._closed:
            self._ready.append(index)
        self._wake()

    def close(self) -> None:
        """No input is taken any more; retries waiting are dropped."""
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
