"""The deadline watchdog: one timer for every call's `task_runner_timeout`.

Every call shares one timeout, so instead of a timer per call (`asyncio.timeout` costs a third
of the per-input overhead) each worker writes its call's deadline into its slot, and a single
timer, armed for the earliest deadline, cancels the workers whose calls overran. The worker
asks `expired` to tell that cancellation from any other and turns it into `TimeoutError`.
"""

from __future__ import annotations

import asyncio

__all__ = ["Watchdog"]


class Watchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, slots: int) -> None:
        self._loop = loop
        self.timeout = timeout
        self._deadlines: list[float | None] = [None] * slots
        self._expired = [False] * slots
        self._tasks: list[asyncio.Task[None] | None] = [None] * slots
        self._paused: list[float | None] = [None] * slots  # time left while paused
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, slot: int, task: asyncio.Task[None]) -> None:
        """The task that runs the calls of `slot`; cancelled when one of its calls overruns."""
        self._tasks[slot] = task

    def arm(self, slot: int) -> None:
        deadline = self._loop.time() + self.timeout
        self._deadlines[slot] = deadline
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def pause(self, slot: int) -> None:
        """Stop the clock of the call in `slot` (it waits in a limit, not working)."""
        deadline = self._deadlines[slot]
        if deadline is not None:
            self._paused[slot] = deadline - self._loop.time()
            self._deadlines[slot] = None

    def resume(self, slot: int) -> None:
        left = self._paused[slot]
        if left is None:
            return
        self._paused[slot] = None
        deadline = self._deadlines[slot] = self._loop.time() + left
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def disarm(self, slot: int) -> bool:
        """The call in `slot` ended; whether it overran (see `expired`)."""
        self._deadlines[slot] = None
        self._paused[slot] = None
        return self._expired[slot] and self.expired(slot)

    def expired(self, slot: int) -> bool:
        """Whether the call in `slot` overran; clears the mark and the task's cancel request."""
        if not self._expired[slot]:
            return False
        self._expired[slot] = False
        uncancel = getattr(self._tasks[slot], "uncancel", None)
        if uncancel is not None:
            uncancel()
        return True

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        earliest = None
        for slot, deadline in enumerate(self._deadlines):
            if deadline is None:
                continue
            if deadline <= now:
                self._deadlines[slot] = None
                self._expired[slot] = True
                task = self._tasks[slot]
                if task is not None:
                    task.cancel()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = self._loop.call_at(earliest, self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
