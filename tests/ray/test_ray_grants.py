"""Limits and budget hold for the whole Ray job (data_factory/grants.py), measured at the
loopback OpenAI server: rpm across workers, a 429 that pauses every worker, budget_usd."""

from __future__ import annotations

import re

import pytest

from starfish import data_factory
from starfish.jobs import load_job
from starfish.llm import StructuredLLM
from tests.openai_server import OpenAIServer, count_tokens, prompt_tokens

pytestmark = pytest.mark.usefixtures("ray_cluster")

KEY = "sk-test-SECRET-0123456789abcdef"
PROMPT = "Say {{ topic }} from worker {{ pid }}."


def _job(llm: StructuredLLM, **options):
    options.setdefault("show_progress", False)

    @data_factory(executor="ray", **options)
    async def gen(topic: str):
        import os

        response = await llm.run(topic=topic, pid=os.getpid())
        return {"topic": topic, "pid": os.getpid(), "text": response.data[0]["text"]}

    return gen


def _pid(request: dict) -> str:
    found = re.search(r"from worker (\d+)", request["body"]["messages"][-1]["content"])
    assert found
    return found.group(1)


def test_rpm_holds_for_the_whole_job_across_four_workers():
    """rpm=600 for 30 s over 4 actors: the server counts 300 (within 3 %) and sends no 429."""
    with OpenAIServer(rpm=600) as server:
        llm = StructuredLLM("m", prompt=PROMPT, base_url=server.url, api_key=KEY, rpm=600)
        gen = _job(llm, storage="in_memory", max_concurrency=64, task_runner_timeout=None)
        records = gen.run(topic=[f"t{i}" for i in range(340)])
        times = [r["t"] for r in server.requests]
        pids = {_pid(r) for r in server.requests}
        rejected = server.bucket_rejections
    assert len(records) == 340
    assert len(pids) == 4  # every actor sent requests
    assert rejected == 0
    first = times[0]
    in_30s = sum(1 for t in times if first <= t < first + 30)
    steady = sum(1 for t in times if first + 1 <= t < first + 31)
    print(
        f"\nrpm=600 over 4 actors: {in_30s} requests in the first 30 s (burst included), "
        f"{steady} in the 30 s after the first second, {rejected} 429s"
    )
    assert abs(in_30s - 300) <= 9  # the bucket's burst (5) included
    assert abs(steady - 300) <= 9


def test_a_429_seen_by_one_worker_pauses_every_worker():
    """The 401st request gets a 429 with retry-after-ms=2000: no worker sends anything until it
    is over (beyond the few ms the news takes to travel), then all of them go on."""
    with OpenAIServer(latency=0.02) as server:
        server.script(*([{}] * 400), {"status": 429, "headers": {"retry-after-ms": "2000"}})
        llm = StructuredLLM("m", prompt=PROMPT, base_url=server.url, api_key=KEY)
        gen = _job(llm, storage="in_memory", max_concurrency=32)
        records = gen.run(topic=[f"t{i}" for i in range(1000)])
        requests = list(server.requests)
        statuses = list(server.statuses)
    assert len(records) == 1000
    assert statuses.count(429) == 1 and len(requests) == 1001
    limited = requests[400]["t"]
    quiet = [r["t"] - limited for r in requests[401:] if r["t"] - limited < 1.95]
    resumed = min(r["t"] for r in requests[401:] if r["t"] - limited >= 1.95) - limited
    print(
        f"\n429 with retry-after-ms=2000: requests after it at +{[round(q, 3) for q in quiet]} "
        f"s, the next at +{resumed:.3f} s"
    )
    assert all(q < 0.05 for q in quiet)  # only those already on their way
    # other workers were sending right up to the 429, and were as quiet as its own worker
    before = {_pid(r) for r in requests[:400] if limited - r["t"] < 0.2}
    after = {_pid(r) for r in requests[401:] if r["t"] - limited >= 1.95}
    assert len(before - {_pid(requests[400])}) >= 1 and len(after) >= 2


def test_budget_usd_stops_a_ray_job_as_a_local_one():
    """What the server answered, times the price, stays within the budget plus one call per
    unit of max_concurrency (in practice within one call); the job is stored `stopped`."""
    with OpenAIServer(latency=0.2) as server:
        llm = StructuredLLM(
            "m",
            prompt=PROMPT,
            base_url=server.url,
            api_key=KEY,
            price=(1000.0, 1000.0),  # $0.001 a token
            model_kwargs={"max_tokens": 20},
        )
        gen = _job(llm, storage="local", max_concurrency=16, budget_usd=0.1)
        gen.run(topic=[f"t{i}" for i in range(300)])
        bodies = server.bodies
    costs = [
        (prompt_tokens(b["messages"]) + count_tokens("echo: " + b["messages"][-1]["content"]))
        * 0.001
        for b in bodies
    ]
    per_call = max(costs)
    spent = sum(costs)
    info = load_job(gen.job_id)
    print(
        f"\nbudget_usd=0.1: {len(bodies)} requests, ${spent:.4f} answered "
        f"({(spent - 0.1) / per_call:+.2f} calls past the budget); stopped: {info.stop_reason}"
    )
    assert info.status == "stopped"
    assert info.stop_reason.startswith("budget_usd=0.1 reached")
    assert 0.1 <= spent <= 0.1 + 16 * per_call
    assert spent <= 0.1 + per_call  # as in one process: at most one request past
