"""`rate_limit`: one gate class plus one option; the rate holds over a run and composes."""

from __future__ import annotations

import asyncio
import bisect
import time

import pytest

from starfish import OptionsError, data_factory
from starfish.data_factory.gates import parse_rate
from starfish.jobs import load_job


def _most_in_any_window(starts: list[float], window: float) -> int:
    starts = sorted(starts)
    return max(bisect.bisect_left(starts, t + window) - i for i, t in enumerate(starts))


def test_the_rate_holds_over_a_run_measured_per_window():
    starts: list[float] = []

    @data_factory(storage="local", show_progress=False, max_concurrency=50, rate_limit="20/s")
    async def gen(i):
        starts.append(time.monotonic())
        return [{"i": i}]

    assert len(gen.run(i=list(range(50)))) == 50
    # evenly spread: at most rate * window + 1 starts in any window, from the first second on
    assert _most_in_any_window(starts, 1.0) <= 21
    assert _most_in_any_window(starts, 0.25) <= 6
    span = max(starts) - min(starts)
    assert 49 / 20 <= span < 49 / 20 + 1.0  # the limit is used, not undershot by much
    assert load_job(gen.job_id).counts["completed"] == 50


def test_rate_limit_and_max_concurrency_both_hold():
    running = 0
    peak = 0
    starts: list[float] = []

    @data_factory(storage="in_memory", show_progress=False, max_concurrency=3, rate_limit="40/s")
    async def slow(i):
        nonlocal running, peak
        starts.append(time.monotonic())
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)  # three at a time cap it at 15/s: concurrency binds
        running -= 1
        return [{"i": i}]

    assert len(slow.run(i=list(range(24)))) == 24
    assert peak == 3
    assert _most_in_any_window(starts, 1.0) <= 16

    running = 0
    peak = 0
    starts.clear()

    @data_factory(storage="in_memory", show_progress=False, max_concurrency=50, rate_limit="10/s")
    async def paced(i):
        nonlocal running, peak
        starts.append(time.monotonic())
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.25)  # at 10 starts/s about 3 overlap: the rate binds
        running -= 1
        return [{"i": i}]

    assert len(paced.run(i=list(range(20)))) == 20
    assert peak <= 4
    assert _most_in_any_window(starts, 1.0) <= 11


def test_retries_pass_the_gate_too():
    starts: list[float] = []

    @data_factory(
        storage="in_memory", show_progress=False, rate_limit="10/s", dead_queue_threshold=3
    )
    async def flaky(i):
        starts.append(time.monotonic())
        if len(starts) % 2:
            raise ConnectionError("try again")
        return [{"i": i}]

    flaky.run(i=list(range(8)))
    assert _most_in_any_window(starts, 1.0) <= 11


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("600/min", 10.0), ("20/s", 20.0), ("3600/hour", 1.0), ("5 / second", 5.0), ("1.5/s", 1.5)],
)
def test_rate_strings(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("bad", ["600", "abc/min", "0/s", "-5/s", 600, "10/fortnight", "/s", ""])
def test_an_invalid_rate_is_an_error_at_decoration(bad):
    with pytest.raises(OptionsError, match=r"rate_limit must be a string like '600/min'"):

        @data_factory(rate_limit=bad)
        async def gen(i):
            return [{"i": i}]
