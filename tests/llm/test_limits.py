"""Rate limits against a server that enforces its own request and token buckets."""

from __future__ import annotations

import asyncio
import time

import pytest

from starfish import StructuredLLM
from starfish.llm.endpoint import endpoint_for
from starfish.llm.limits import Limiter, parse_duration, retry_after

PROMPT = "Tell me about {{topic}} in a few words, please."


def make_llm(server, **kwargs):
    return StructuredLLM("m", prompt=PROMPT, base_url=server.url, **kwargs)


async def run_all(llm, n, concurrency):
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            return await llm.run(topic=f"topic {i:04d}")

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_rpm_holds_against_the_servers_bucket(make_server):
    server = make_server(rpm=3000)  # 50/s, a bucket of one second
    llm = make_llm(server, rpm=3000)
    started = time.monotonic()
    results = asyncio.run(run_all(llm, 150, 100))
    elapsed = time.monotonic() - started
    assert len(results) == 150
    assert server.bucket_rejections == 0 and 429 not in server.statuses
    assert len(server.requests) == 150
    # 25 at once (half a second of the limit), then 50/s: the limit is used, not undershot
    assert 2.4 < elapsed < 4.5


def test_tpm_holds_with_reservations_corrected_from_usage(make_server):
    server = make_server(tpm=60_000)  # 1,000 tokens/s
    llm = make_llm(server, tpm=60_000, output_schema=None, model_kwargs={"max_tokens": 40})
    results = asyncio.run(run_all(llm, 120, 50))
    assert len(results) == 120
    assert server.bucket_rejections == 0 and 429 not in server.statuses
    # reservations were corrected from usage: tokens spent were fewer than reserved
    assert llm.counts["prompt_tokens"] + llm.counts["completion_tokens"] < 120 * (13 + 40)


def test_limits_learned_from_headers_alone_are_never_exceeded(make_server):
    server = make_server(rpm=2400, tpm=100_000, limit_headers=True)
    llm = make_llm(server)  # no rpm/tpm: everything comes from the headers
    results = asyncio.run(run_all(llm, 120, 100))
    assert len(results) == 120
    assert server.bucket_rejections == 0 and 429 not in server.statuses
    second = server.requests[1]
    assert second["t"] >= server.answered_at[0]  # the first call went alone
    limiter = llm._limiter
    assert limiter.requests.per_minute == 2400 and limiter.tokens.per_minute == 100_000


def test_a_429_burst_pauses_every_caller_and_loses_no_input(make_server):
    server = make_server(latency=0.01)
    llm = make_llm(server)
    # the probe passes; then a burst of 429s asking for a one-second pause
    server.script({}, *[{"status": 429, "headers": {"retry-after-ms": "1000"}}] * 6)
    results = asyncio.run(run_all(llm, 60, 30))
    assert len(results) == 60 and all(r.data for r in results)
    assert llm.counts["rate_limited"] == 6
    assert len(server.requests) == 66
    first_429 = server.requests[1]["t"]
    # nothing new arrives while the pause holds (requests already on the wire get a little slack)
    quiet = [r for r in server.requests if first_429 + 0.15 < r["t"] < first_429 + 0.95]
    assert quiet == []
    assert max(r["t"] for r in server.requests) >= first_429 + 1.0


def test_429_halves_the_in_flight_cap_and_successes_grow_it_back():
    limiter = Limiter()

    async def scenario():
        tickets = [await limiter.acquire() for _ in range(1)]
        # answered, with limits stated: no probe limit any more
        limiter.release(tickets[0], headers={"x-ratelimit-limit-requests": "1000000"}, status=200)
        tickets = [await limiter.acquire() for _ in range(16)]
        limiter.release(tickets.pop(), headers={"retry-after-ms": "10"}, status=429)
        assert limiter.cap == 8
        for ticket in tickets[:4]:
            limiter.release(ticket, headers={"retry-after-ms": "10"}, status=429)
        assert limiter.cap == 8  # one halving per burst
        for ticket in tickets[4:]:
            limiter.release(ticket, status=200)
        assert limiter.cap is None or limiter.cap > 8

    asyncio.run(scenario())


def test_in_flight_cap_is_held(make_server):
    server = make_server(latency=0.05)
    llm = make_llm(server, max_in_flight=5)
    asyncio.run(run_all(llm, 40, 40))
    assert server.peak_active <= 5


def test_one_endpoint_per_base_url_model_and_key():
    a = endpoint_for("http://x/v1", "m", "k1")
    assert endpoint_for("http://x/v1", "m", "k1") is a
    assert endpoint_for("http://x/v1", "m", "k2") is not a
    assert endpoint_for("http://x/v1", "other", "k1") is not a
    # a later StructuredLLM's explicit limits may only tighten the shared limiter
    assert endpoint_for("http://x/v1", "m", "k1", rpm=600).limiter.user_rpm == 600
    assert endpoint_for("http://x/v1", "m", "k1", rpm=6000).limiter.user_rpm == 600
    assert endpoint_for("http://x/v1", "m", "k1", rpm=60).limiter.user_rpm == 60


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("6m0s", 360.0), ("1.5", 1.5), ("2m30.5s", 150.5), ("", None)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_retry_after_prefers_ms_then_seconds_then_reset():
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "5s"}) == 5
    assert retry_after({}) == 1.0


def test_anthropic_headers_are_learned():
    limiter = Limiter()
    limiter.learn(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "39000",
        }
    )
    assert limiter.requests.per_minute == 50 and limiter.tokens.per_minute == 40000


def test_remaining_zero_pauses_until_reset():
    limiter = Limiter()
    limiter.learn(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "300ms",
        }
    )
    assert 0.2 < limiter.paused_until - time.monotonic() <= 0.3


def test_a_reservation_made_during_a_pause_is_paid_after_it():
    from starfish.llm.limits import Bucket

    bucket = Bucket(600)  # 10/s, holds 5
    now = time.monotonic()
    for _ in range(5):
        assert bucket.reserve(1, now) == 0
    bucket.hold(now + 2.0)
    # the next request's token refills 0.1 s after the pause ends, not 0.1 s from now
    assert bucket.reserve(1, now) == pytest.approx(2.1, abs=0.01)
