"""`budget_usd` as a gate on model requests, not only a rule after them.

A rule sees a cost only once the answer is in: at concurrency 200 every worker has a request
out by then, and a job overran its budget 2.5-3x. So a request is sent only while what the job
has spent, plus what its requests in flight may cost, plus this one's estimate, stays within
the budget; otherwise it waits for those in flight. With nothing in flight a request goes
alone while anything is left (an estimate from max_tokens can be far above an answer's cost),
and once the budget is spent the job stops (`stopped`, with the budget as reason). The overrun
is then at most one request, not one answer per worker.

In a worker of a job spread over processes (Ray) the job's budget is held by its coordinator
(`JobContext.shared`, data_factory/grants.py): the reservation and the answer's cost go there,
with the same rules, so the overrun stays one request for the whole job.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starfish.llm.errors import LLMError

__all__ = ["BudgetReached", "estimate_usd", "release", "reserve"]

WAIT_STEP = 0.02
"""Seconds between looks at the spend while a request waits for those in flight."""


class BudgetReached(LLMError):
    """The next request would take the job past its `budget_usd`: the job stops here."""

    fatal = True
    stop_status = "stopped"


def estimate_usd(job: Any, tokens_estimate: float) -> float:
    """What one request may cost: the job's own average once it has a few answers (an estimate
    from max_tokens is far too high for short answers), else `tokens_estimate`."""
    requests = job.llm.get("requests", 0)
    spent = job.llm.get("cost_usd") or 0.0
    if requests >= 3 and spent > 0:
        return float(spent / requests) * 1.2
    return tokens_estimate


async def reserve(job: Any, estimate: float, clock: Any = None) -> float:
    """Hold `estimate` USD of the job's budget for one request (give it back with `release`);
    waits while requests in flight may use it, raises `BudgetReached` when none are and it
    still does not fit."""
    limit = job.budget_usd
    if limit is None or estimate <= 0:
        return 0.0
    shared = getattr(job, "shared", None)
    if shared is not None:
        return await _reserve_shared(shared, limit, estimate, clock)
    paused = False
    try:
        while job.spent_usd() + job.reserved_usd + estimate > limit:
            if job.reserved_usd <= 0:
                if job.spent_usd() < limit:
                    break  # alone, it may go: the estimate can be far above the real cost
                raise BudgetReached(
                    f"budget_usd={limit:g} reached: ${job.spent_usd():.4f} spent, and the next "
                    f"request may cost ${estimate:.6f}"
                )
            if clock is not None and not paused:  # waiting for others is not overrunning
                clock.pause()
                paused = True
            await asyncio.sleep(WAIT_STEP)
    finally:
        if paused:
            clock.resume()
    job.reserved_usd += estimate
    return estimate


async def _reserve_shared(shared: Any, limit: float, estimate: float, clock: Any) -> float:
    """`reserve` at the job's coordinator (it waits there for the requests in flight)."""
    if clock is not None:  # waiting for others is not overrunning
        clock.pause()
    try:
        granted, spent = await shared.reserve(estimate)
    finally:
        if clock is not None:
            clock.resume()
    if not granted:
        raise BudgetReached(
            f"budget_usd={limit:g} reached: ${spent:.4f} spent, and the next request may cost "
            f"${estimate:.6f}"
        )
    return estimate


def release(job: Any, reserved: float, cost: float | None = None) -> None:
    """Give back what `reserve` held; `cost` is what the request cost (None: unknown), which
    the job's coordinator counts (one process counts it with the answer instead)."""
    shared = getattr(job, "shared", None)
    if shared is not None:
        shared.settle(reserved, cost or 0.0)
        return
    if reserved:
        job.reserved_usd = max(0.0, job.reserved_usd - reserved)
