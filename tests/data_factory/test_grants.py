"""The job-wide grants (data_factory/grants.py) without Ray: one coordinator, several clients
on one loop, each call to the coordinator delayed as a Ray round trip would be."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from starfish.data_factory import grants
from starfish.data_factory.grants import Grants, GrantsClient, Lease, Pauses

KEY = "http://x/v1 m 0123456789abcdef"
HOP = 0.002  # one way, as a Ray actor call on this machine


class Remote:
    """`Coordinator` over a `Grants` in the same loop, `HOP` seconds away each way."""

    def __init__(self, coordinator: Grants) -> None:
        self.grants = coordinator
        self.takes = 0

    async def take(
        self,
        key: str,
        rpm: float | None,
        tpm: float | None,
        costs: list[float],
        refund: tuple[float, float],
    ) -> Lease:
        self.takes += 1
        await asyncio.sleep(HOP)
        lease = await self.grants.take(key, rpm, tpm, costs, refund)
        await asyncio.sleep(HOP)
        return lease

    async def watch(self, seen: int) -> tuple[int, Pauses]:
        await asyncio.sleep(HOP)
        answer = await self.grants.watch(seen)
        await asyncio.sleep(HOP)
        return answer

    async def reserve(self, usd: float) -> tuple[int, float]:
        await asyncio.sleep(HOP)
        answer = await self.grants.reserve(usd)
        await asyncio.sleep(HOP)
        return answer

    def pause(self, key: str, seconds: float, why: str) -> None:
        asyncio.get_running_loop().call_later(HOP, self.grants.pause, key, seconds, why)

    def settle(self, ticket: int, cost: float) -> None:
        asyncio.get_running_loop().call_later(HOP, self.grants.settle, ticket, cost)


async def _saturate(
    clients: list[GrantsClient], seconds: float, rpm: float, per_client: int = 20
) -> list[float]:
    """Every client's callers ask for grants as fast as they come for `seconds`; the times
    the grants were used."""
    sent: list[float] = []
    end = time.monotonic() + seconds

    async def caller(client: GrantsClient) -> None:
        while True:
            await client.acquire(KEY, rpm, None, 0.0)
            now = time.monotonic()
            if now >= end:
                return
            sent.append(now)

    await asyncio.gather(*(caller(c) for c in clients for _ in range(per_client)))
    for client in clients:
        client.close()
    return sent


def test_four_workers_share_one_rate():
    """rpm=600 over four clients: the job sends its burst (5) and then 10/s, not 4 x 10/s."""

    async def main() -> list[float]:
        coordinator = Grants()
        clients = [GrantsClient(Remote(coordinator)) for _ in range(4)]
        return await _saturate(clients, 3.0, 600)

    sent = asyncio.run(main())
    assert 5 + 30 - 2 <= len(sent) <= 5 + 30 + 1
    for t in sent:  # never more than the burst plus the rate in any second
        assert sum(1 for u in sent if t <= u < t + 1.0) <= 10 + 5 + 1


def test_a_lease_serves_the_calls_waiting_in_one_round_trip():
    """At 60,000 rpm (100 ms = 100 requests) 200 waiting calls take about two round trips."""

    async def main() -> tuple[int, int]:
        remote = Remote(Grants())
        client = GrantsClient(remote)
        await asyncio.gather(*(client.acquire(KEY, 60_000, None, 0.0) for _ in range(200)))
        client.close()
        return remote.takes, remote.grants.granted

    takes, granted = asyncio.run(main())
    assert granted == 200
    assert takes <= 3


def test_tokens_per_minute_hold_and_unused_tokens_come_back():
    async def main() -> tuple[float, float]:
        coordinator = Grants()
        client = GrantsClient(Remote(coordinator))
        started = time.monotonic()
        for _ in range(4):  # 300 tokens each against 6,000 tpm (100/s, a bucket of 50)
            await client.acquire(KEY, None, 6_000, 300.0)
        took = time.monotonic() - started
        client.refund(KEY, 250.0)  # each used only 50
        await client.acquire(KEY, None, 6_000, 50.0)
        client.close()
        lane = coordinator.lanes[KEY]
        assert lane.tokens is not None
        return took, lane.tokens.level

    took, level = asyncio.run(main())
    assert 11.5 - 0.1 <= took <= 11.5 + 0.3  # (4 x 300 - 50) / 100 per second
    assert level > -50  # the refund paid the debt off: the next call went at once


def test_a_pause_reported_by_one_worker_holds_every_worker():
    async def main() -> tuple[list[float], float, float]:
        coordinator = Grants()
        a, b, c = (GrantsClient(Remote(coordinator)) for _ in range(3))
        for client in (a, b, c):
            await client.acquire(KEY, 6_000, None, 0.0)  # starts each one's watch
        await asyncio.sleep(0.05)
        reported = time.monotonic()
        a.report_pause(KEY, 1.0, "retry-after-ms 1000")
        await asyncio.sleep(0.02)
        heard = min(b.paused(KEY)[0], c.paused(KEY)[0])
        assert b.paused(KEY)[1] == "retry-after-ms 1000"
        # a lease asked for during the pause is granted once it is over
        await c.acquire(KEY, 6_000, None, 0.0)
        granted = time.monotonic() - reported
        for client in (a, b, c):
            client.close()
        return [heard], granted, coordinator.pauses().get(KEY, (0.0, ""))[0]

    [heard], granted, left = asyncio.run(main())
    assert 0.9 <= heard <= 1.0  # every worker knew within the 20 ms (two hops)
    assert 1.0 <= granted <= 1.1
    assert left == 0.0


def test_leases_waiting_at_the_coordinator_move_with_a_pause():
    async def main() -> float:
        coordinator = Grants()
        now = time.monotonic()
        for _ in range(5):  # the burst of rpm=600 is spent: the next is due in 0.1 s
            await coordinator.take(KEY, 600, None, [0.0], (0.0, 0.0))
        waiting = asyncio.ensure_future(coordinator.take(KEY, 600, None, [0.0], (0.0, 0.0)))
        await asyncio.sleep(0.05)
        coordinator.pause(KEY, 0.5, "429")
        await waiting
        return time.monotonic() - now

    assert 0.55 <= asyncio.run(main()) <= 0.7


def test_the_budget_holds_for_every_worker():
    async def main() -> list[Any]:
        coordinator = Grants(budget_usd=1.0, spent_usd=0.2)  # 0.2 spent by earlier runs
        a, b = GrantsClient(Remote(coordinator)), GrantsClient(Remote(coordinator))
        seen: list[Any] = []
        seen.append(await a.reserve(0.3))  # 0.2 + 0.3
        seen.append(await b.reserve(0.3))  # 0.2 + 0.6
        third = asyncio.ensure_future(a.reserve(0.3))  # 0.2 + 0.9 > 1: waits
        await asyncio.sleep(0.05)
        seen.append(third.done())
        a.settle(0.3, 0.5)  # spent 0.7, 0.3 in flight: still too much
        await asyncio.sleep(0.05)
        seen.append(third.done())
        b.settle(0.3, 0.4)  # spent 1.1, nothing in flight: refused
        seen.append(await third)
        return seen

    assert asyncio.run(main()) == [(True, 0.2), (True, 0.2), False, False, (False, 1.1)]


def test_a_request_alone_may_go_while_anything_is_left():
    async def main() -> tuple[Any, Any, Any]:
        coordinator = Grants(budget_usd=1.0, spent_usd=0.9)
        client = GrantsClient(Remote(coordinator))
        first = await client.reserve(0.5)  # alone: the estimate may be far above the cost
        client.settle(0.5, 0.05)
        await asyncio.sleep(0.01)
        second = await client.reserve(0.5)  # 0.95 spent: still something left
        client.settle(0.5, 0.1)
        await asyncio.sleep(0.01)
        return first, second, await client.reserve(0.5)

    first, second, third = asyncio.run(main())
    assert first == (True, 0.9)
    assert second[0] is True and second[1] == pytest.approx(0.95)
    assert third[0] is False and third[1] == pytest.approx(1.05)


def test_a_reservation_never_settled_expires(monkeypatch):
    """A worker that died holding a reservation does not hold the budget for ever."""
    monkeypatch.setattr(grants, "RESERVATION_TTL", 0.1)

    async def main() -> tuple[bool, float]:
        coordinator = Grants(budget_usd=1.0)
        assert (await coordinator.reserve(0.8))[0] > 0  # its worker dies
        started = time.monotonic()
        ticket, _ = await coordinator.reserve(0.8)
        return ticket > 0, time.monotonic() - started

    granted, waited = asyncio.run(main())
    assert granted and 0.05 <= waited <= 0.3


def test_the_limiter_and_budget_consult_the_installed_grants():
    """Through the model layer: the limiter waits for a lease and reports a 429 to every
    worker; budget.reserve raises BudgetReached from the job's coordinator."""
    from starfish.data_factory.context import JobContext
    from starfish.llm.budget import BudgetReached, release, reserve
    from starfish.llm.limits import Limiter

    async def main() -> None:
        coordinator = Grants(budget_usd=0.1)
        mine, other = GrantsClient(Remote(coordinator)), GrantsClient(Remote(coordinator))
        grants.install(mine)
        try:
            limiter = Limiter(rpm=600)
            limiter.key = KEY
            ticket = await limiter.acquire()
            assert coordinator.granted == 1
            await other.acquire(KEY, 600, None, 0.0)  # the other worker's watch runs
            limiter.release(ticket, status=429, headers={"retry-after-ms": "300"})
            await asyncio.sleep(0.02)
            assert other.paused(KEY)[0] > 0.25 and coordinator.pauses()[KEY][0] > 0.25

            job = JobContext("j", None, budget_usd=0.1, shared=mine)
            held = await reserve(job, 0.08)
            release(job, held, 0.12)
            await asyncio.sleep(0.01)
            assert coordinator.spent_usd == pytest.approx(0.12)
            with pytest.raises(BudgetReached, match=r"budget_usd=0.1 reached: \$0.1200 spent"):
                await reserve(job, 0.08)
        finally:
            grants.install(None)
            other.close()

    asyncio.run(main())


def test_locally_nothing_is_installed():
    assert grants.current() is None


def test_a_call_that_waited_after_its_turn_waits_out_a_pause_begun_meanwhile():
    """`Limiter.recheck`: a worker's call that made first contact (or waited for the budget)
    after its turn does not send into another worker's pause."""
    from starfish.llm.limits import Limiter

    async def main() -> float:
        coordinator = Grants()
        mine, other = GrantsClient(Remote(coordinator)), GrantsClient(Remote(coordinator))
        grants.install(mine)
        try:
            limiter = Limiter()
            limiter.key = KEY
            ticket = await limiter.acquire()  # its turn: no pause yet
            await other.acquire(KEY, None, None, 0.0)
            other.report_pause(KEY, 0.3, "retry-after-ms 300")  # meanwhile, elsewhere
            await asyncio.sleep(0.02)
            started = time.monotonic()
            await limiter.recheck()
            limiter.release(ticket)
            return time.monotonic() - started
        finally:
            grants.install(None)
            other.close()

    assert 0.24 <= asyncio.run(main()) <= 0.35
