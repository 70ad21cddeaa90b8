"""Job-wide grants: rate limits, server pauses and the budget held for every worker of a job.

A job whose calls run in several processes (the Ray executor) has one `Grants` (the
coordinator, on a Ray actor) and one `GrantsClient` per worker process, installed there with
`install()`; the model layer reads it with `current()` and asks it, besides its own limiter:

- **requests and tokens**: one pair of smooth buckets per endpoint (base URL, model, key hash;
  never the key) for the whole job, with the semantics of the model layer's own limiter
  (`Bucket`: a per-minute limit, at most `BURST_SECONDS` of it banked, reservations that run
  the bucket into debt and are paid off in order). A worker takes a *lease*: the calls waiting
  in it at that moment, at most `LEASE_SECONDS` of the rate, in one round trip. The coordinator
  answers once the first of them is due, with the offsets of the others (within about
  `LEASE_SECONDS`), so a worker never holds more than a tenth of a second of the job's rate.
- **pauses**: a 429 seen by any worker is reported here and holds the buckets (no grant before
  it ends); the pause reaches every worker with the next lease and at once through `watch`, a
  call each worker keeps waiting here that returns when a pause is announced.
- **the budget**: what the job has spent (earlier runs included) plus what the requests in
  flight may cost; a request is granted its estimate while that fits, waits while others are
  in flight, and is refused once nothing is in flight and the budget is spent (the model layer
  then raises `BudgetReached` as in one process).

This module knows nothing of Ray (the executor adapts an actor handle to `Coordinator`) nor of
the model layer, so it is tested with plain asyncio. Locally nothing is installed, `current()`
is None and the model layer does what it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "BURST_SECONDS",
    "LEASE_SECONDS",
    "RESERVATION_TTL",
    "WATCH_SECONDS",
    "Bucket",
    "Coordinator",
    "Grants",
    "GrantsClient",
    "Lease",
    "Pauses",
    "current",
    "install",
]

BURST_SECONDS = 0.5
"""How much of a per-minute limit a bucket may hold, in seconds of the limit."""
LEASE_SECONDS = 0.1
"""How much of the job's rate one lease may hold: enough that a Ray round trip is not paid per
request at high rates, little enough that the rate holds and a pause is not outrun."""
WATCH_SECONDS = 10.0
"""A worker's `watch` returns after this long even when nothing changed (then it asks again)."""
RESERVATION_TTL = 600.0
"""A budget reservation never settled (its worker died) is dropped after this many seconds."""


class Bucket:
    """A smooth token bucket in `units` per second, holding at most `BURST_SECONDS` of them."""

    def __init__(self, per_minute: float, level: float | None = None) -> None:
        self.set_rate(per_minute)
        self.level = self.capacity if level is None else min(level, self.capacity)
        self.stamp = time.monotonic()

    def set_rate(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_SECONDS)

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def reserve(self, cost: float, now: float) -> float:
        """Take `cost` (possibly running into debt); return seconds until the debt is paid."""
        self._refill(now)
        self.level -= cost
        held = max(0.0, self.stamp - now)  # no refill before a pause ends (`hold`)
        return held + (-self.level / self.rate if self.level < 0 else 0.0)

    def refund(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def hold(self, until: float) -> None:
        """No refill before `until` (the server is pausing us)."""
        self._refill(time.monotonic())
        self.level = min(self.level, 0.0)
        self.stamp = max(self.stamp, until)


Lease = tuple[list[float], float, str]
"""A coordinator's answer to `take`: seconds from now after which each granted request may go,
and the endpoint's pause (seconds left, why)."""
Pauses = dict[str, tuple[float, str]]
"""Endpoint key -> (seconds of pause left, why), for the endpoints paused now."""


class Coordinator(Protocol):
    """What a worker's client calls: `Grants` itself in one process, an actor's handle on Ray.
    `pause` and `settle` are sent without waiting for them."""

    def take(
        self,
        key: str,
        rpm: float | None,
        tpm: float | None,
        costs: list[float],
        refund: tuple[float, float],
    ) -> Awaitable[Lease]: ...

    def watch(self, seen: int) -> Awaitable[tuple[int, Pauses]]: ...

    def reserve(self, usd: float) -> Awaitable[tuple[int, float]]: ...

    def pause(self, key: str, seconds: float, why: str) -> None: ...

    def settle(self, ticket: int, cost: float) -> None: ...


@dataclass
class _Lane:
    """One endpoint, job-wide (the coordinator's side)."""

    requests: Bucket | None = None
    tokens: Bucket | None = None
    paused_until: float = 0.0
    why: str = ""
    shift: float = 0.0  # total seconds of pauses so far: leases waiting move by as much

    def tighten(self, rpm: float | None, tpm: float | None) -> None:
        """The first limits named are kept; later ones may only lower them (as one process
        does for the `StructuredLLM`s naming one endpoint)."""
        if rpm and (self.requests is None or rpm < self.requests.per_minute):
            if self.requests is None:
                self.requests = Bucket(rpm)
            else:
                self.requests.set_rate(rpm)
        if tpm and (self.tokens is None or tpm < self.tokens.per_minute):
            if self.tokens is None:
                self.tokens = Bucket(tpm)
            else:
                self.tokens.set_rate(tpm)


class Grants:
    """The coordinator: the job's buckets, pauses and budget (one per job)."""

    def __init__(self, budget_usd: float | None = None, spent_usd: float = 0.0) -> None:
        self.lanes: dict[str, _Lane] = {}
        self.version = 0  # counts pauses announced: a `watch` waits for it to move
        self._changed = asyncio.Event()
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd  # all runs of the job, as the driver knew it, plus answers
        self.reserved_usd = 0.0
        self._held: dict[int, tuple[float, float]] = {}  # ticket -> (usd, expires)
        self._tickets = itertools.count(1)
        self._settled = asyncio.Event()
        self.granted = 0  # requests granted, for tests and figures

    # requests and tokens ---------------------------------------------------------------------
    async def take(
        self,
        key: str,
        rpm: float | None,
        tpm: float | None,
        costs: list[float],
        refund: tuple[float, float] = (0.0, 0.0),
    ) -> Lease:
        """Reserve one request (and its tokens, `costs[i]`) per waiting call; answer when the
        first is due, with every one's offset from then."""
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = _Lane()
        lane.tighten(rpm, tpm)
        now = time.monotonic()
        if lane.requests is not None and refund[0]:
            lane.requests.refund(refund[0], now)
        if lane.tokens is not None and refund[1]:
            lane.tokens.refund(refund[1], now)
        due: list[float] = []
        for cost in costs:
            wait = lane.requests.reserve(1, now) if lane.requests is not None else 0.0
            if lane.tokens is not None and cost:
                wait = max(wait, lane.tokens.reserve(cost, now))
            due.append(now + wait)
        self.granted += len(costs)
        shift0 = lane.shift
        first = min(due, default=now)
        while True:  # a pause announced meanwhile moves the lease with it
            delay = max(first + lane.shift - shift0, lane.paused_until) - time.monotonic()
            if delay <= 0:
                break
            await asyncio.sleep(delay)
        now = time.monotonic()
        moved = lane.shift - shift0
        offsets = [max(0.0, max(t + moved, lane.paused_until) - now) for t in due]
        return offsets, max(0.0, lane.paused_until - now), lane.why

    # pauses ----------------------------------------------------------------------------------
    def pause(self, key: str, seconds: float, why: str) -> None:
        """A worker was told to pause (a 429): every worker of the job pauses as long."""
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = _Lane()
        now = time.monotonic()
        until = now + seconds
        if until <= lane.paused_until:
            return
        lane.shift += until - max(now, lane.paused_until)
        lane.paused_until = until
        lane.why = why
        for bucket in (lane.requests, lane.tokens):
            if bucket is not None:
                bucket.hold(until)
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def pauses(self) -> Pauses:
        now = time.monotonic()
        return {
            key: (lane.paused_until - now, lane.why)
            for key, lane in self.lanes.items()
            if lane.paused_until > now
        }

    async def watch(self, seen: int, timeout: float = WATCH_SECONDS) -> tuple[int, Pauses]:
        """The pauses now, once a pause later than the `seen`th is announced (or `timeout`)."""
        if self.version == seen:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        return self.version, self.pauses()

    # the budget ------------------------------------------------------------------------------
    def _expire(self, now: float) -> float | None:
        """Drop reservations whose worker never settled them; the next expiry, if any."""
        soonest = None
        for ticket, (usd, expires) in list(self._held.items()):
            if expires <= now:
                del self._held[ticket]
                self.reserved_usd = max(0.0, self.reserved_usd - usd)
            elif soonest is None or expires < soonest:
                soonest = expires
        return soonest

    async def reserve(self, usd: float) -> tuple[int, float]:
        """Hold `usd` of the budget for one request: `(ticket, spent)`, the ticket 0 when
        there is no budget and -1 when the budget is spent and nothing is in flight."""
        limit = self.budget_usd
        if limit is None or usd <= 0:
            return 0, self.spent_usd
        while self.spent_usd + self.reserved_usd + usd > limit:
            soonest = self._expire(time.monotonic())
            if not self._held:
                self.reserved_usd = 0.0
                if self.spent_usd < limit:
                    break  # alone, it may go: the estimate can be far above the real cost
                return -1, self.spent_usd
            settled = self._settled
            timeout = None if soonest is None else max(0.0, soonest - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), timeout)
        ticket = next(self._tickets)
        self._held[ticket] = (usd, time.monotonic() + RESERVATION_TTL)
        self.reserved_usd += usd
        return ticket, self.spent_usd

    def settle(self, ticket: int, cost: float) -> None:
        """A request answered (or failed): give its reservation back, count what it cost."""
        held = self._held.pop(ticket, None)
        if held is not None:
            self.reserved_usd = max(0.0, self.reserved_usd - held[0])
        if cost and math.isfinite(cost) and cost > 0:
            self.spent_usd += cost
        self._settled.set()
        self._settled = asyncio.Event()


@dataclass
class _Waiting:
    """One endpoint as a worker sees it: the calls waiting for a lease, one `take` at a time."""

    rpm: float | None = None
    tpm: float | None = None
    calls: deque[tuple[float, asyncio.Future[float]]] = field(default_factory=deque)
    taking: asyncio.Task[None] | None = None
    unused: tuple[float, float] = (0.0, 0.0)  # granted to calls that left: given back


class GrantsClient:
    """A worker process's side: leases for its calls, the job's pauses, budget reservations."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._lanes: dict[str, _Waiting] = {}
        self._pauses: dict[str, tuple[float, str]] = {}  # key -> (until, why), this clock
        self._watcher: asyncio.Task[None] | None = None
        self._synced: asyncio.Future[None] | None = None  # the job's pauses known once
        self._tickets: dict[float, deque[int]] = {}

    # requests and tokens ---------------------------------------------------------------------
    async def acquire(self, key: str, rpm: float | None, tpm: float | None, tokens: float) -> None:
        """Wait for the job's grant of one request and `tokens` (nothing to wait for when the
        endpoint has no known limits); a pause is read with `paused` after it."""
        synced = self._synced
        if synced is None or not synced.done() or self._watcher is None or self._watcher.done():
            await self._watch()
        if not rpm and not tpm:
            return
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Waiting()
        lane.rpm, lane.tpm = rpm, tpm
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        cost = tokens if tpm else 0.0
        lane.calls.append((cost, future))
        if lane.taking is None or lane.taking.done():
            lane.taking = loop.create_task(self._take(key, lane))
        due = await future
        delay = due - time.monotonic()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:  # the call left before its turn: the grant goes back
                lane.unused = (lane.unused[0] + 1, lane.unused[1] + cost)
                raise

    async def _take(self, key: str, lane: _Waiting) -> None:
        """Lease for the calls waiting now, again while more wait: one round trip at a time."""
        while lane.calls:
            batch = self._batch(lane)
            if not batch:
                continue
            unused, lane.unused = lane.unused, (0.0, 0.0)
            try:
                offsets, left, why = await self.coordinator.take(
                    key, lane.rpm, lane.tpm, [cost for cost, _ in batch], unused
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            now = time.monotonic()
            self._learn(key, left, why, now)
            requests, tokens = lane.unused
            for (cost, future), offset in zip(batch, offsets, strict=True):
                if future.done():  # the call left meanwhile: its grant goes back
                    requests, tokens = requests + 1, tokens + cost
                else:
                    future.set_result(now + offset)
            lane.unused = (requests, tokens)

    def _batch(self, lane: _Waiting) -> list[tuple[float, asyncio.Future[float]]]:
        """The waiting calls one lease serves: at most `LEASE_SECONDS` of the rate, at least
        one call."""
        most = math.inf if not lane.rpm else max(1, int(lane.rpm / 60 * LEASE_SECONDS))
        budget = math.inf if not lane.tpm else lane.tpm / 60 * LEASE_SECONDS
        batch: list[tuple[float, asyncio.Future[float]]] = []
        spent = 0.0
        while lane.calls and len(batch) < most:
            cost, future = lane.calls[0]
            if future.done():
                lane.calls.popleft()
                continue
            if batch and spent + cost > budget:
                break
            lane.calls.popleft()
            batch.append((cost, future))
            spent += cost
        return batch

    def refund(self, key: str, tokens: float) -> None:
        """Tokens reserved beyond what an answer used (`usage`): given back with the next
        lease."""
        lane = self._lanes.get(key)
        if lane is not None and tokens:
            lane.unused = (lane.unused[0], lane.unused[1] + tokens)

    # pauses ----------------------------------------------------------------------------------
    def paused(self, key: str) -> tuple[float, str]:
        """Seconds the job's pause of this endpoint has left (0: none), and why."""
        known = self._pauses.get(key)
        if known is None:
            return 0.0, ""
        left = known[0] - time.monotonic()
        if left <= 0:
            del self._pauses[key]
            return 0.0, ""
        return left, known[1]

    def report_pause(self, key: str, seconds: float, why: str) -> None:
        """This worker was told to pause: the coordinator tells every other one."""
        self._learn(key, seconds, why, time.monotonic())
        self.coordinator.pause(key, seconds, why)

    def _learn(self, key: str, left: float, why: str, now: float) -> None:
        if left <= 0:
            return
        until = now + left
        known = self._pauses.get(key)
        if known is None or until > known[0]:
            self._pauses[key] = (until, why)

    async def _watch(self) -> None:
        """Keep one `watch` waiting at the coordinator from this loop (started on first use);
        the first call waits until the job's pauses are known, so that a worker that starts
        during a pause does not send its first request into it."""
        loop = asyncio.get_running_loop()
        watcher = self._watcher
        if watcher is None or watcher.done() or watcher.get_loop() is not loop:
            self._synced = loop.create_future()
            self._watcher = loop.create_task(self._watching(self._synced))
        assert self._synced is not None
        await asyncio.shield(self._synced)

    async def _watching(self, synced: asyncio.Future[None]) -> None:
        seen = -1  # differs from any version: the first answer comes at once
        while True:
            try:
                version, pauses = await self.coordinator.watch(seen)
            except Exception:
                if not synced.done():
                    synced.set_result(None)  # no coordinator to ask: leases still tell
                await asyncio.sleep(1.0)
                continue
            now = time.monotonic()
            seen = version
            for key, (left, why) in pauses.items():
                self._learn(key, left, why, now)
            if not synced.done():
                synced.set_result(None)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
            self._synced = None

    # the budget ------------------------------------------------------------------------------
    async def reserve(self, usd: float) -> tuple[bool, float]:
        """Hold `usd` of the job's budget: `(granted, spent)`; not granted once it is spent."""
        ticket, spent = await self.coordinator.reserve(usd)
        if ticket < 0:
            return False, spent
        if ticket:
            self._tickets.setdefault(usd, deque()).append(ticket)
        return True, spent

    def settle(self, usd: float, cost: float) -> None:
        """Give back a reservation of `usd` and count what its request cost. Reservations of
        the same amount are interchangeable, so the model layer keeps only the amount."""
        tickets = self._tickets.get(usd)
        ticket = tickets.popleft() if tickets else 0
        if tickets is not None and not tickets:
            del self._tickets[usd]
        if ticket or cost:
            self.coordinator.settle(ticket, cost)


_client: GrantsClient | None = None


def install(client: GrantsClient | None) -> None:
    """Make `client` the one the model layer of this process consults (None: none)."""
    global _client
    if _client is not None and _client is not client:
        _client.close()
    _client = client


def current() -> GrantsClient | None:
    """The job-wide grants of this worker process; None locally (nothing changes then)."""
    return _client
