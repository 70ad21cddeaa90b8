"""How many requests a self-hosted server works on at once, learned from its latency.

A local server (llama.cpp, llama-cpp-python, Ollama, vLLM on one machine) states no rate
limits: it queues what it cannot run at once, and the time a request waits in that queue would
count against the call's timeout (`task_runner_timeout`, the transport's own) and keep the
server busy with answers nobody waits for. So for an endpoint that never sends rate-limit
headers the limiter holds calls itself, where a call's clock is paused, at the concurrency
the server shows.

The signal is the time per answer token. Calls that ran at the lowest concurrency give the
base; when calls in flight together take longer per token, the server is queueing (or
sharing its compute between) them, and the limit shrinks by that ratio (the "gradient" rule of
Netflix's concurrency-limits); while they do not, it doubles. A limit that had to shrink waits
twice as long before it tries to grow again, so a one-at-a-time server is probed rarely. A
server whose first answer comes within `FAST` is not held at all (unless it slows down later):
queueing there costs no timeout.
"""

from __future__ import annotations

from collections import deque
from statistics import median

__all__ = ["ConcurrencyLearner"]

QUEUEING = 0.75
"""Below this ratio (base time per token / time per token now) calls are being queued."""
SMOOTHING = 0.3
"""Weight of the newest sample in the running ratio."""
GROW_AFTER = 4
"""Samples at the limit without queueing before it doubles (at least one per call it allows;
this doubles after each shrink)."""
MAX_GROW_AFTER = 256
PROMPT_WEIGHT = 0.1
"""A prompt token costs about a tenth of an answer token (prefill runs in parallel)."""
NOISE = 0.05
"""Seconds added to every latency: differences smaller than this are the client's own event
loop, not the server's queue."""
FAST = 0.25
"""Seconds: a server that answers a call within this is not held at all. Waiting in its queue
costs no timeout, and at such latencies the client's own load looks like queueing."""


class ConcurrencyLearner:
    """The number of calls an endpoint may have in flight (`limit`, None for no limit), from
    the latency of its answers."""

    def __init__(self) -> None:
        self.limit: int | None = 1
        self._base: deque[float] = deque(maxlen=15)  # seconds per token at the lowest limit
        self._base_limit = 1
        self._ratio = 1.0
        self._good = 0
        self._grow_after = GROW_AFTER

    def observe(self, seconds: float, prompt_tokens: int, completion_tokens: int, n: int) -> None:
        """One answer took `seconds`; `n` calls were in flight when it was sent (itself
        included)."""
        work = completion_tokens + PROMPT_WEIGHT * prompt_tokens
        if seconds <= 0 or work <= 0:
            return
        per_token = (seconds + NOISE) / work
        if n <= self._base_limit or not self._base:
            if n < self._base_limit:  # a lower concurrency than the base was measured at
                self._base.clear()
                self._base_limit = n
            self._base.append(per_token)
            if self.limit == 1 and len(self._base) == 1 and seconds < FAST:
                self.limit = None  # a fast server: nothing to hold
                return
            ratio = 1.0
        else:
            ratio = min(1.0, median(self._base) / per_token)
        self._ratio += SMOOTHING * (ratio - self._ratio)
        if self.limit is None:
            if seconds >= FAST and self._ratio < QUEUEING:  # fast no more: hold it after all
                self._shrink(n)
            return
        if n != self.limit:
            return  # below the limit it says nothing about more; above, it predates a shrink
        if self._ratio < QUEUEING and self.limit > 1:
            self._shrink(self.limit)
            return
        if ratio < QUEUEING:
            self._good = 0
            return
        self._good += 1
        if self._good >= max(self._grow_after, self.limit):  # a whole round without queueing
            self.limit *= 2
            self._good = 0

    def _shrink(self, current: int) -> None:
        self.limit = max(1, int(current * self._ratio + 0.5))
        self._ratio = 1.0
        self._good = 0
        self._grow_after = min(MAX_GROW_AFTER, self._grow_after * 2)
