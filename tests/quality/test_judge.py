"""Judge while the job runs: low scores filtered (and retried), scores exported, calls cached
and counted apart, inside budget_usd, never for a duplicate."""

from __future__ import annotations

import json

import pytest

from starfish import data_factory
from starfish.errors import OptionsError
from starfish.jobs import load_job
from starfish.quality import Dedupe, Judge, iter_with_quality, summary


def grader(body):
    """Score 1 for a record whose text holds 'bad', else 5."""
    prompt = body["messages"][-1]["content"]
    score = 1 if "bad" in prompt.split("Record:", 1)[1] else 5
    return json.dumps({"records": [{"score": score, "reason": f"scored {score}"}]})


def job(hooks, **options):
    options.setdefault("show_progress", False)
    options.setdefault("max_concurrency", 4)
    options.setdefault("dead_queue_threshold", 2)

    @data_factory(on_record_complete=hooks, **options)
    async def gen(text):
        return {"text": text}

    return gen


def test_a_judge_filters_low_scores_and_the_scores_are_exported(make_server):
    server = make_server(reply=grader)
    judge = Judge(model="loopback-model", base_url=server.url, rubric="No bad.", min_score=4)
    gen = job([judge])
    assert gen.run(text=["good one", "bad one", "fine"]) == [
        {"text": "good one"},
        {"text": "fine"},
    ]
    kept = list(iter_with_quality(gen.job_id))
    assert [(r["quality.score"], r["quality.reason"]) for r in kept] == [
        (5, "scored 5"),
        (5, "scored 5"),
    ]
    filtered = list(iter_with_quality(gen.job_id, "filtered"))
    assert [r["quality.score"] for r in filtered] == [1, 1]  # tried again, filtered again
    q = summary(gen.job_id)
    assert q is not None
    assert (
        q["judged"] == 4
        and q["under_min_score"] == 2
        and q["score_histogram"]
        == {
            "1": 2,
            "5": 2,
        }
    )
    llm = load_job(gen.job_id).llm
    assert llm["judge_requests"] == 4 and llm["requests"] == 4


def test_judge_calls_are_cached_a_rerun_sends_no_request(make_server):
    server = make_server(reply=grader)
    judge = Judge(model="loopback-model", base_url=server.url, rubric="No bad.", min_score=4)
    job([judge]).run(text=["a", "b", "c"])
    sent = len(server.requests)
    again = job([judge])
    again.run(text=["a", "b", "c"])
    assert len(server.requests) == sent
    assert load_job(again.job_id).llm["cache_hits"] == 3


def test_a_duplicate_is_never_judged(make_server):
    server = make_server(reply=grader)
    judge = Judge(model="loopback-model", base_url=server.url, rubric="No bad.")
    gen = job([Dedupe("text"), judge], max_concurrency=1, dead_queue_threshold=1)
    gen.run(text=["same", "same", "Same!", "other"])
    judged = [b["messages"][-1]["content"].split("Record:", 1)[1] for b in server.bodies]
    assert len(judged) == 2  # the kept records' first attempts only


def test_the_judge_stays_inside_budget_usd(make_server):
    server = make_server(reply=grader)
    judge = Judge(
        llm=_priced(server.url), rubric="No bad.", min_score=4
    )  # $1 per million tokens each way
    gen = job([judge], max_concurrency=1, budget_usd=0.0002)
    gen.run(text=[f"record {i}" for i in range(50)])
    info = load_job(gen.job_id)
    assert info.status == "stopped" and "budget_usd" in (info.stop_reason or "")
    assert info.llm["cost_usd"] <= 0.0002 + 0.0001  # at most one call in flight past it
    assert info.llm["judge_requests"] < 50


def _priced(url):
    from starfish import StructuredLLM

    return StructuredLLM("loopback-model", prompt="x", base_url=url, price=(1.0, 1.0))


def test_judge_argument_errors():
    with pytest.raises(OptionsError, match="min_score"):
        Judge(model="m", rubric="r", min_score=7)
    with pytest.raises(OptionsError, match="scale"):
        Judge(model="m", rubric="r", scale=(5, 1))
    with pytest.raises(OptionsError, match="rubric"):
        Judge(model="m", rubric=" ")
    with pytest.raises(OptionsError, match="model="):
        Judge(rubric="r")
    with pytest.raises(ValueError):
        Judge(model="m", rubric="r", min_score=0)
