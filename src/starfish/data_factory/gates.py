"""Gates: asked before a call starts, told when it ends (the aiometer idea in our terms).

A gate is a small meter the scheduler awaits before it calls the function for an input and
informs when that call has ended. Concurrency is the cheapest gate of all and is built into the
runner as its pool of workers (a worker is a permit, so `max_concurrency` costs no await).
Every other limit is a `Gate` object the runner passes in order: a rate limit here, and, from
the model layer, per-endpoint request, token and in-flight limits.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Protocol

from starfish.errors import OptionsError

__all__ = ["Gate", "RateLimit", "parse_rate"]

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_UNITS.update({"h": 3600.0, "hour": 3600.0})
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+?)s?\s*$")


class Gate(Protocol):
    """A limit the scheduler passes before each call."""

    async def acquire(self, index: int) -> None:
        """Return when the call for input `index` may start."""

    def release(self, index: int, outcome: Any) -> None:
        """The call for `index` ended (`outcome` is its `rules.Outcome`, or None if cancelled)."""


def parse_rate(text: Any) -> float:
    """`"600/min"`, `"20/s"`, `"5000/hour"` -> calls per second; anything else is an error."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or match.group(2) not in _UNITS or float(match.group(1)) <= 0:
        raise OptionsError(
            f"rate_limit must be a string like '600/min', '20/s' or '5000/hour' (calls per "
            f"second, minute or hour, more than 0), got {text!r}."
        )
    return float(match.group(1)) / _UNITS[match.group(2)]


class RateLimit:
    """At most `rate` call starts per second, spread evenly: never a burst.

    Each start takes the next free slot on a timeline spaced `1 / rate` apart, so any window of
    `w` seconds holds at most `rate * w + 1` starts, from the first second of a job on (a
    provider quantises per-minute limits into about one-second windows, so a minute's
    allowance at once would be refused). Waiting callers queue in arrival order.
    """

    def __init__(self, calls_per_second: float) -> None:
        self.interval = 1.0 / calls_per_second
        self._next = 0.0

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        return cls(parse_rate(text))

    async def acquire(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    def release(self, index: int, outcome: Any) -> None:
        """A rate limit counts starts only."""
