"""The job's `Grants` (data_factory/grants.py) on a Ray actor, and the workers' way to reach it.

The driver starts one coordinator actor per job (`num_cpus=0`: it waits, it does not compute)
with the job's budget and what the job spent before; each worker gets its handle, installs a
`GrantsClient` over it and keeps it in its worker-side `JobContext` (`shared`), next to the
budget, so the model layer finds both as in one process.
"""

from __future__ import annotations

from typing import Any

from starfish.data_factory.grants import Grants, GrantsClient, Lease, Pauses, install

__all__ = ["RemoteGrants", "join", "start_coordinator"]

EXTRA_CONCURRENCY = 64
"""Coordinator calls that may wait at once beyond one per call in flight (leases, watches)."""


class RemoteGrants:
    """`Coordinator` over a Ray actor handle: awaited calls, and `pause`/`settle` sent without
    waiting (Ray keeps one caller's calls in order)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def take(
        self,
        key: str,
        rpm: float | None,
        tpm: float | None,
        costs: list[float],
        refund: tuple[float, float],
    ) -> Lease:
        lease: Lease = await self.handle.take.remote(key, rpm, tpm, costs, refund)
        return lease

    async def watch(self, seen: int) -> tuple[int, Pauses]:
        answer: tuple[int, Pauses] = await self.handle.watch.remote(seen)
        return answer

    async def reserve(self, usd: float) -> tuple[int, float]:
        answer: tuple[int, float] = await self.handle.reserve.remote(usd)
        return answer

    def pause(self, key: str, seconds: float, why: str) -> None:
        self.handle.pause.remote(key, seconds, why)

    def settle(self, ticket: int, cost: float) -> None:
        self.handle.settle.remote(ticket, cost)


def start_coordinator(ray: Any, job: Any, concurrency: int) -> Any:
    """The job's coordinator actor (its budget and what the job spent before this run)."""
    budget = job.budget_usd if job is not None else None
    spent = job.spent_usd() if job is not None else 0.0
    actor = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(Grants)
    return actor.options(max_concurrency=max(1000, concurrency * 2 + EXTRA_CONCURRENCY)).remote(
        budget, spent
    )


def join(handle: Any) -> GrantsClient:
    """In a worker: install the job's grants client (the model layer's limiter finds it) and
    return it for the worker's job context."""
    client = GrantsClient(RemoteGrants(handle))
    install(client)
    return client
