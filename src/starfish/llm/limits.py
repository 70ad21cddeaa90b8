"""Rate limits that hold: one limiter per endpoint (base URL, model, key hash; endpoint.py).

- Requests/min and tokens/min are smooth token buckets refilled continuously. A bucket holds
  at most half a second of its limit: providers spread a per-minute limit over about one
  second, and the half second we leave unused is headroom for network jitter, so a job never
  bursts a minute's allowance and never trips the server's bucket.
- A call reserves its slot and tokens (prompt characters / 4 + max_tokens) before it is
  sent; the reservation may run the bucket negative and the caller sleeps until it is paid
  off, so callers are served in order without polling. Tokens are corrected from `usage`.
- Limits not given by the user are learned from every response's `x-ratelimit-*` (and
  `anthropic-ratelimit-*`) headers. Until an endpoint has answered once, one call goes alone,
  so a job never bursts before it knows the limits.
- A 429 pauses every caller of the limiter until the server's retry-after (or reset), and
  halves the in-flight cap, which grows back by one per success.
- An endpoint that states no limits at all (a self-hosted server) gets the concurrency it
  shows (`concurrency.py`), so calls wait here rather than in the server's queue.
- Every duration read from a header is finite and at most `MAX_SERVER_PAUSE`.
- In a worker of a job spread over processes (Ray), the job's grants (data_factory/grants.py)
  are asked too: a call also waits for the job-wide lease of its request and tokens, and a
  pause (429) reaches, and comes from, every worker. Locally there are none.

The shape is `await acquire(tokens) -> Ticket` / `release(ticket, ...)`, so the limiter can
become a gate of the scheduler.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from starfish.data_factory import grants
from starfish.data_factory.grants import BURST_SECONDS, Bucket
from starfish.llm.concurrency import ConcurrencyLearner

__all__ = [
    "BURST_SECONDS",
    "DEFAULT_PAUSE",
    "MAX_HEADER_DURATION",
    "MAX_SERVER_PAUSE",
    "NOTICE_AFTER",
    "Bucket",
    "Limiter",
    "Ticket",
    "parse_duration",
    "retry_after",
]
DEFAULT_PAUSE = 1.0
"""Pause after a 429 that says nothing about when to come back."""
MAX_SERVER_PAUSE = 900.0
"""The longest pause a server may impose on a job, in seconds (15 minutes): a longer one ends
the job `interrupted` (`LLMServerPauseError`), to be resumed later."""
MAX_HEADER_DURATION = 7 * 86400.0
"""Any duration read from a header is cut to this (a week): finite, whatever the server says."""
NOTICE_AFTER = 5.0
"""A pause at least this long is shown with the job's progress, with the server's reason."""


def _clamp(seconds: float | None) -> float | None:
    """A duration from a header: None when it is not a number (NaN, inf), else within
    0..MAX_HEADER_DURATION."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_HEADER_DURATION)


def _why(headers: Any) -> str:
    """The header a 429's pause came from, for the progress line and errors."""
    for name in ("retry-after-ms", "retry-after"):
        value = headers.get(name)
        if value is not None:
            return f"{name} {str(value)[:40]}"
    return "rate-limit reset"


def _notice(text: str | None) -> None:
    from starfish.data_factory.progress import set_notice

    set_notice(text)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """'20ms', '1s', '6m0s', '1.5' (seconds) -> seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return _clamp(float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts:
        return None
    return _clamp(sum(float(n) * _UNIT[u] for n, u in parts))


def _until(text: str | None) -> float | None:
    """An RFC 3339 / HTTP date -> seconds from now (Anthropic's reset headers)."""
    if not text:
        return None
    try:
        from datetime import datetime

        when = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError):
            return None
    return _clamp(when - time.time())


def _number(headers: Any, name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def retry_after(headers: Any) -> float:
    """Seconds to wait after a 429: retry-after-ms, retry-after, else the reset headers."""
    ms = _number(headers, "retry-after-ms")
    if ms is not None:
        return _clamp(ms / 1000) or 0.0
    value = headers.get("retry-after")
    if value is not None:
        seconds = parse_duration(value)
        if seconds is None:
            seconds = _until(value)
        if seconds is not None:
            return seconds
    resets = [
        parse_duration(headers.get("x-ratelimit-reset-requests")),
        parse_duration(headers.get("x-ratelimit-reset-tokens")),
        _until(headers.get("anthropic-ratelimit-requests-reset")),
        _until(headers.get("anthropic-ratelimit-tokens-reset")),
    ]
    known = [r for r in resets if r is not None]
    return max(known) if known else DEFAULT_PAUSE


_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-tokens-limit",
)


@dataclass
class Ticket:
    tokens: float
    sent_at: float
    in_flight: int = 1  # calls in flight when this one was sent, itself included


class Limiter:
    """Requests/min, tokens/min and an in-flight cap for one endpoint, model and key."""

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self.user_rpm, self.user_tpm, self.max_in_flight = rpm, tpm, max_in_flight
        self.key: str | None = None  # the endpoint's name job-wide (never the key itself)
        self.requests = Bucket(rpm) if rpm else None
        self.tokens = Bucket(tpm) if tpm else None
        self.cap: float | None = max_in_flight
        self.in_flight = 0
        self.answered = False  # has the endpoint answered once (limits known)?
        self.states_limits = False  # has it ever sent rate-limit headers?
        self.learner = ConcurrencyLearner()
        self.paused_until = 0.0
        self.pause_reason = ""  # why the server paused us (a header and its value)
        self.shift = 0.0  # total seconds of pauses so far: reservations move by as much
        self.rate_limited = 0
        self._peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    # the gate ------------------------------------------------------------------------------
    def _limit(self) -> float | None:
        if not self.answered:
            return 1  # the first call goes alone and tells us the limits
        if self.states_limits:
            return self.cap
        learned = self.learner.limit
        if learned is None:
            return self.cap
        return learned if self.cap is None else min(self.cap, learned)

    async def acquire(self, tokens: float = 0.0) -> Ticket:
        """Wait for a slot, a request and `tokens`; the caller must `release()` the ticket."""
        while True:
            now = time.monotonic()
            if self.paused_until > now:
                await self._sit_out(now)
                continue
            limit = self._limit()
            if limit is not None and self.in_flight >= limit:
                fut = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                try:
                    await fut
                except BaseException:
                    if fut.done() and not fut.cancelled():
                        self._wake()  # pass the wake-up on
                    raise
                continue
            break
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)
        try:
            wait = 0.0
            if self.requests is not None:
                wait = self.requests.reserve(1, now)
            if self.tokens is not None and tokens:
                wait = max(wait, self.tokens.reserve(tokens, now))
            shift0 = self.shift
            target = now + wait
            shared = grants.current() if self.key is not None else None
            while True:
                due = max(target + self.shift - shift0, self.paused_until)
                delay = due - time.monotonic()
                if delay <= 0:
                    if shared is None:
                        break
                    await self._shared_turn(shared, tokens)
                    shared = None  # granted: only a pause it brought may hold the call now
                    continue
                if self.paused_until > time.monotonic():
                    await self._sit_out(time.monotonic())
                    continue
                await asyncio.sleep(delay)
        except BaseException:
            self.in_flight -= 1
            self._wake()
            raise
        return Ticket(tokens if self.tokens is not None else 0.0, time.monotonic(), self.in_flight)

    async def _shared_turn(self, shared: grants.GrantsClient, tokens: float) -> None:
        """The job-wide grant of one request and `tokens`, besides this process's own; a
        pause another worker was told of becomes this limiter's too."""
        assert self.key is not None
        rpm = self.requests.per_minute if self.requests is not None else None
        tpm = self.tokens.per_minute if self.tokens is not None else None
        await shared.acquire(self.key, rpm, tpm, tokens if tpm else 0.0)
        left, why = shared.paused(self.key)
        if left > 0:
            self.pause(left, why, share=False)

    async def recheck(self, clock: Any = None) -> None:
        """Wait out a pause that began after this call's turn (it made first contact or waited
        for the budget meanwhile): in a job spread over workers, another worker's 429."""
        if self.key is not None:
            shared = grants.current()
            if shared is not None:
                left, why = shared.paused(self.key)
                if left > 0:
                    self.pause(left, why, share=False)
        now = time.monotonic()
        if self.paused_until <= now:
            return
        if clock is not None:  # a pause is not the call overrunning
            clock.pause()
        try:
            while self.paused_until > now:
                await self._sit_out(now)
                now = time.monotonic()
        finally:
            if clock is not None:
                clock.resume()

    async def _sit_out(self, now: float) -> None:
        """Wait out the server's pause, saying so when it is long; refuse one that is longer
        than `MAX_SERVER_PAUSE`."""
        left = self.paused_until - now
        if left > MAX_SERVER_PAUSE:
            from starfish.llm.errors import LLMServerPauseError

            raise LLMServerPauseError(
                f"the server paused requests for {left:.0f} s ({self.pause_reason}), longer "
                f"than the {MAX_SERVER_PAUSE:.0f} s a job waits: resume the job later",
                retry_after=left,
            )
        if left >= NOTICE_AFTER:
            until = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
            _notice(f"paused by the server until {until} ({self.pause_reason})")
            try:
                await asyncio.sleep(left)
            finally:
                _notice(None)
        else:
            await asyncio.sleep(left)

    def release(
        self,
        ticket: Ticket,
        *,
        used_tokens: float | None = None,
        completion_tokens: int | None = None,
        headers: Any = None,
        status: int | None = None,
    ) -> None:
        """Give the slot back; correct the tokens from `usage`; learn from the headers and,
        for a server that states no limits, from how long the answer took."""
        self.in_flight -= 1
        now = time.monotonic()
        if status == 200 and used_tokens is not None and completion_tokens is not None:
            prompt = int(used_tokens) - completion_tokens
            self.learner.observe(now - ticket.sent_at, prompt, completion_tokens, ticket.in_flight)
        if self.tokens is not None and ticket.tokens and used_tokens is not None:
            self.tokens.refund(ticket.tokens - used_tokens, now)
            shared = grants.current()
            if shared is not None and self.key is not None:
                shared.refund(self.key, ticket.tokens - used_tokens)
        if headers is not None:
            self.learn(headers)
        if status is not None:
            self.answered = True
            if status == 429:
                self.on_429(headers if headers is not None else {})
            elif status < 400 and self.cap is not None:
                self.cap += 1
                ceiling = self.max_in_flight
                if ceiling is not None:
                    self.cap = min(self.cap, ceiling)
                elif self.cap > self._peak:
                    self.cap = None  # grown back past anything we ever used
        self._wake()

    def _wake(self) -> None:
        limit = self._limit()
        free = (limit - self.in_flight) if limit is not None else len(self._waiters)
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                try:
                    fut.set_result(None)
                except RuntimeError:  # its loop is closed
                    continue
                free -= 1

    # learning ------------------------------------------------------------------------------
    def on_429(self, headers: Any) -> None:
        self.rate_limited += 1
        fresh = self.paused_until <= time.monotonic()  # the first 429 of a burst
        self.pause(retry_after(headers), _why(headers))
        if fresh:
            current = self.in_flight + 1  # this call was released just before
            self.cap = max(1, int(min(self.cap or current, current)) // 2)

    def pause(self, seconds: float, why: str = "", *, share: bool = True) -> None:
        """Hold every caller of this limiter for `seconds` (from now); `why` says which
        header asked for it. In a worker of a job spread over processes the pause is the
        job's (`share`): every worker holds as long."""
        now = time.monotonic()
        until = now + seconds
        if share and self.key is not None:
            shared = grants.current()
            if shared is not None:
                shared.report_pause(self.key, seconds, why or f"{seconds:.0f} s")
        if until <= self.paused_until:
            return
        self.pause_reason = why or f"{seconds:.0f} s"
        self.shift += until - max(now, self.paused_until)
        self.paused_until = until
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.hold(until)

    def learn(self, headers: Any) -> None:
        """Take the limits the server states (only those the user did not set)."""
        if not any(name in headers for name in _LIMIT_HEADERS):
            return
        self.states_limits = True
        for kind, user in (("requests", self.user_rpm), ("tokens", self.user_tpm)):
            limit = _number(headers, f"x-ratelimit-limit-{kind}")
            remaining = _number(headers, f"x-ratelimit-remaining-{kind}")
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if limit is None:
                limit = _number(headers, f"anthropic-ratelimit-{kind}-limit")
                remaining = _number(headers, f"anthropic-ratelimit-{kind}-remaining")
                reset = _until(headers.get(f"anthropic-ratelimit-{kind}-reset"))
            if limit is None or limit <= 0:
                continue
            bucket: Bucket | None = getattr(self, kind)
            if user is None:
                if bucket is None:
                    # First word from the server: what it has left now is what we may use.
                    setattr(self, kind, Bucket(limit, remaining))
                elif bucket.per_minute != limit:
                    bucket.set_rate(limit)
            if remaining is not None and remaining < 1 and reset:
                self.pause(reset, f"{kind} remaining 0, reset in {reset:.0f} s")
