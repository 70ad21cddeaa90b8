"""The deadline watchdog: one timer for every call's `task_runner_timeout`.

Every call shares one timeout, so instead of a timer per call (`asyncio.timeout` costs a third
of the per-input overhead) each worker writes its call's deadline into its slot, and a single
timer, armed for the earliest deadline, cancels the workers whose calls overran. The worker
asks `expired` to tell that cancellation from any other and turns it into `TimeoutError`.

Deadlines are wall-clock, but a call is only judged late for time it could have used. When
synchronous code blocks the event loop (a hook or a function calling `time.sleep`), answers
that arrived meanwhile wait for the loop, not for their call. So:

- a timer that fires more than `STALL` late means the loop was blocked: the calls that fell due
  meanwhile get one grace period (`grace`) to hand over what is ready before they are
  cancelled;
- a call that ends past its deadline without the timer having fired was either running
  (blocking the loop, or ignoring the cancellation) or waiting behind the one that was. The
  watchdog notes the time of every event it sees (`_mark`: arm, disarm, fire, `touch`); a call
  that ends more than `STALL` after both its deadline and the last event ran past its deadline
  itself, and is a timeout whatever it returned. One that ends right after another event only
  waited its turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["STALL", "Watchdog"]

STALL = 0.1
"""Seconds of lateness that mean the loop was blocked (a busy loop is a few ms late)."""


def _clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The loop's clock, read without a Python call when it is asyncio's own (`time.monotonic`).

    `arm` and `disarm` read it for every call, on the path from one call's end to the next
    one's start; another loop's clock (uvloop's) may differ, so it is kept as it is.
    """
    if getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


class Watchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, slots: int) -> None:
        self._loop = loop
        self._time = _clock(loop)
        self.timeout = timeout
        self._deadlines: list[float | None] = [None] * slots
        self._expired = [False] * slots
        self._tasks: list[asyncio.Task[None] | None] = [None] * slots
        self._paused: list[float | None] = [None] * slots  # time left while paused
        self._armed_at = [0.0] * slots
        self._ran = [0.0] * slots  # how long the last call of the slot ran
        self._graced = [False] * slots
        self._timer: asyncio.TimerHandle | None = None
        self._mark = self._time()  # when the watchdog last saw the loop turn
        self.grace = max(STALL, min(timeout, 1.0))

    def watch(self, slot: int, task: asyncio.Task[None]) -> None:
        """The task that runs the calls of `slot`; cancelled when one of its calls overruns."""
        self._tasks[slot] = task

    def arm(self, slot: int) -> None:
        now = self._mark = self._time()
        self._armed_at[slot] = now
        self._graced[slot] = False
        deadline = self._deadlines[slot] = now + self.timeout
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def pause(self, slot: int) -> None:
        """Stop the clock of the call in `slot` (it waits in a limit, not working)."""
        deadline = self._deadlines[slot]
        if deadline is not None:
            self._paused[slot] = deadline - self._time()
            self._deadlines[slot] = None

    def resume(self, slot: int) -> None:
        left = self._paused[slot]
        if left is None:
            return
        self._paused[slot] = None
        deadline = self._deadlines[slot] = self._time() + left
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def touch(self) -> None:
        """The loop turns here (after code that may have blocked it, e.g. a hook)."""
        self._mark = self._time()

    def disarm(self, slot: int) -> bool:
        """The call in `slot` ended; whether it overran: cancelled for it (see `expired`), or
        ran past its deadline itself while the loop could not cancel it."""
        now = self._time()
        deadline = self._deadlines[slot]
        mark = self._mark
        self._mark = now
        self._ran[slot] = now - self._armed_at[slot]
        if deadline is not None:  # neither paused nor expired (`_fire` clears the deadline)
            self._deadlines[slot] = None
            return now - deadline > STALL and now - mark > STALL  # past both by STALL
        self._paused[slot] = None
        return self.expired(slot)

    def ran(self, slot: int) -> float:
        """Seconds the last call of `slot` ran, from arm to disarm."""
        return self._ran[slot]

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
        due = self._timer.when() if self._timer is not None else None
        self._timer = None
        now = self._mark = self._time()
        blocked = due is not None and now - due > STALL  # the loop could not turn meanwhile
        earliest = None
        for slot, deadline in enumerate(self._deadlines):
            if deadline is None:
                continue
            if deadline <= now and blocked and not self._graced[slot]:
                # fell due while the loop was blocked: hand over what is ready first
                self._graced[slot] = True
                deadline = self._deadlines[slot] = now + self.grace
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
