"""The model path under hostile servers (issue 16): no hang, no leak, no money lost from view,
no false status. Each test asserts on what the server received and on the stored job."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from starfish import StructuredLLM, jobs
from starfish.llm import LLMOutputError, LLMRequestError, LLMUnreachableError
from starfish.llm.cache import read_counts
from tests.llm.conftest import KEY
from tests.llm.test_jobs import db_path, make_job, stored_bytes

QA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]


def make_llm(server, **kwargs):
    kwargs.setdefault("output_schema", QA)
    kwargs.setdefault("prompt", "Write a pair about {{topic}}.")
    return StructuredLLM("m", base_url=server.url, **kwargs)


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": "abc"}, ["x"], {"prompt_tokens": -3_000_000, "completion_tokens": 5}],
)
def test_a_malformed_usage_releases_the_slot_counts_the_request_and_never_goes_negative(
    server, usage
):
    server.script({"usage": usage})
    llm = make_llm(server, max_in_flight=1)
    gen = make_job(llm, task_runner_timeout=5)
    records = gen.run(topic=[f"t{i}" for i in range(6)])  # hung forever before the fix
    assert len(records) == 6
    counts = read_counts(db_path(), gen.job_id)
    assert counts["requests"] == len(server.requests) == 6
    assert counts["prompt_tokens"] >= 0 and counts["completion_tokens"] >= 0
    assert llm._limiter.in_flight == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after-ms": "NaN"},
        {"retry-after": "nan"},
        {"retry-after-ms": "inf"},
        {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "0",
         "x-ratelimit-reset-requests": "NaN"},
    ],
)  # fmt: skip
def test_nan_in_a_header_is_never_a_duration(server, headers):
    server.script({"status": 429, "headers": headers})
    llm = make_llm(server)
    started = time.monotonic()
    resp = asyncio.run(asyncio.wait_for(llm.run(topic="a"), 10))
    assert resp.data and time.monotonic() - started < 5
    assert len(server.requests) == 2


def test_a_long_pause_is_shown_and_one_past_the_maximum_interrupts_the_job(server, monkeypatch):
    from starfish.data_factory import progress
    from starfish.llm import limits

    shown: list[str | None] = []
    real = progress.set_notice
    monkeypatch.setattr(progress, "set_notice", lambda text: (shown.append(text), real(text)))
    monkeypatch.setattr(limits, "NOTICE_AFTER", 0.2)
    server.script({"status": 429, "headers": {"retry-after": "0.5"}})
    gen = make_job(make_llm(server))
    assert len(gen.run(topic=["a"])) == 1
    [notice] = [s for s in shown if s]
    assert notice.startswith("paused by the server until ") and "(retry-after 0.5)" in notice
    assert shown[-1] is None  # cleared once the pause is over

    server.script({"status": 429, "headers": {"retry-after": "3600"}})
    from starfish.llm import LLMRateLimitError

    gen = make_job(make_llm(server, output_schema=QA, prompt="Another {{topic}}."))
    with pytest.raises(LLMRateLimitError, match="retry-after 3600"):
        gen.run(topic=[f"t{i}" for i in range(5)])
    info = jobs.load_job(gen.job_id)
    assert info.status == "interrupted" and "retry-after 3600" in info.stop_reason
    assert len(server.requests) == 3  # one answered, one 429, then nothing during the pause


def test_a_key_cut_at_the_message_limit_never_leaks(server):
    server.script({"status": 400, "error": "x" * 488 + KEY})
    gen = make_job(make_llm(server, api_key=KEY), dead_queue_threshold=1)
    with pytest.raises(Exception, match="finished without"):
        gen.run(topic=["a"])
    [failed] = list(jobs.iter_records(gen.job_id, filter="failed"))
    assert "sk-test-SECR" not in json.dumps(failed) and "***" in failed["error"]
    assert KEY[:8].encode() not in stored_bytes()


@pytest.mark.parametrize(
    ("message", "said"),
    [({"role": "assistant", "content": None, "refusal": "I can't help with that."}, "refused"),
     ({"role": "assistant", "content": None}, "empty"),
     ({"role": "assistant", "content": ""}, "empty")],
)  # fmt: skip
def test_a_refusal_or_empty_answer_is_a_failed_attempt_not_a_record(server, message, said):
    answer = {"choices": [{"message": message, "finish_reason": "stop"}], "usage": {}}
    server.script(*[{"raw": json.dumps(answer)}] * 3)
    gen = make_job(make_llm(server, output_schema=None), dead_queue_threshold=3)
    with pytest.raises(Exception, match="finished without"):
        gen.run(topic=["a"])
    info = jobs.load_job(gen.job_id)
    assert info.counts["completed"] == 0 and info.counts["dead"] == 1
    [failed] = list(jobs.iter_records(gen.job_id, filter="failed"))[:1]
    assert failed["error_type"] == "LLMOutputError" and said in failed["error"]
    with pytest.raises(LLMOutputError, match=said):
        server.script({"raw": json.dumps(answer)})
        asyncio.run(make_llm(server, output_schema=None).run(topic="b"))


def test_a_utf16_body_is_decoded_by_its_charset_counted_and_cached(server):
    answer = {
        "choices": [{"message": {"role": "assistant", "content": json.dumps(
            {"records": [{"question": "¿qué?", "answer": "sí"}]})}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }  # fmt: skip
    body = json.dumps(answer, ensure_ascii=False).encode("utf-16")
    server.script({"raw_bytes": body, "content_type": "application/json; charset=utf-16"})
    gen = make_job(make_llm(server))
    assert gen.run(topic=["a"]) == [{"question": "¿qué?", "answer": "sí"}]
    counts = read_counts(db_path(), gen.job_id)
    assert counts["requests"] == 1 and counts["completion_tokens"] == 4
    assert gen.run(topic=["a"]) == [{"question": "¿qué?", "answer": "sí"}]  # from the cache
    assert len(server.requests) == 1


def test_a_body_over_the_cap_is_a_request_error_not_memory(server, monkeypatch):
    from starfish.llm import transport

    monkeypatch.setattr(transport, "MAX_BODY", 4096)
    server.script({"content": "y" * 10_000})
    with pytest.raises(LLMRequestError, match="body over"):
        asyncio.run(make_llm(server, output_schema=None).run(topic="a"))
    assert len(server.requests) == 1


def test_field_names_pydantic_treats_specially_round_trip(server):
    schema = [{"name": "_x", "type": "str"}, {"name": "model_config", "type": "int"}]
    server.script({"content": '{"records": [{"_x": "a", "model_config": 3}]}'})
    resp = asyncio.run(make_llm(server, output_schema=schema).run(topic="a"))
    assert resp.data == [{"_x": "a", "model_config": 3}]
    from starfish.llm import LLMConfigError

    with pytest.raises(LLMConfigError, match="listed twice"):
        make_llm(server, output_schema=[{"name": "q"}, {"name": "q"}])


def test_the_budget_is_a_gate_at_concurrency_200(make_server):
    """budget_usd=0.01 at concurrency 200 and 0.3 s latency: what the server answered, times the
    price, stays within 10 % of the budget, and every request it received is counted."""
    server = make_server(latency=0.3)
    llm = make_llm(server, price=(100.0, 100.0))  # ~40 tokens a call: ~$0.004
    gen = make_job(llm, max_concurrency=200, budget_usd=0.01)
    gen.run(topic=[f"t{i}" for i in range(2000)])
    info = jobs.load_job(gen.job_id)
    counts = read_counts(db_path(), gen.job_id)
    served = [r for r in server.requests]
    assert info.status == "stopped" and "budget_usd=0.01" in info.stop_reason
    assert counts["requests"] == len(served)
    assert counts["cost_usd"] <= 0.01 * 1.1


class _Silent:
    """A socket that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_server_that_accepts_and_never_answers_fails_the_job_soon_and_says_so(monkeypatch):
    from starfish.data_factory import progress
    from starfish.llm import structured

    monkeypatch.setattr(structured, "FIRST_CONTACT_WAIT", 0.3)
    monkeypatch.setattr(structured, "FIRST_CONTACT_GIVE_UP", 1.0)
    shown: list[str | None] = []
    real = progress.set_notice
    monkeypatch.setattr(progress, "set_notice", lambda text: (shown.append(text), real(text)))
    silent = _Silent()
    try:
        llm = StructuredLLM("m", prompt="{{topic}}", base_url=silent.url)
        gen = make_job(llm, max_concurrency=20)
        started = time.monotonic()
        with pytest.raises(LLMUnreachableError, match="accepted the connection but sent no"):
            gen.run(topic=[f"t{i}" for i in range(20)])
        assert time.monotonic() - started < 10
    finally:
        silent.close()
    info = jobs.load_job(gen.job_id)
    assert info.status == "failed" and "sent no answer" in info.stop_reason
    assert any(s and s.startswith(f"waiting for {silent.url} (no answer for") for s in shown)


def test_many_workers_under_a_low_ulimit_wait_for_connections_instead_of_failing(
    make_server, tmp_path
):
    import subprocess
    import sys
    import textwrap

    server = make_server(latency=0.3, rpm=1_000_000, limit_headers=True)
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        from starfish import StructuredLLM, data_factory, jobs
        llm = StructuredLLM("m", prompt="{{{{topic}}}}", base_url={server.url!r})

        @data_factory(max_concurrency=400, show_progress=False)
        async def gen(topic):
            return (await llm.run(topic=topic)).data

        records = gen.run(topic=[f"t{{i}}" for i in range(400)])
        info = jobs.load_job(gen.job_id)
        print(len(records), info.counts["completed"], info.counts["failed"])
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["400", "400", "0"]


def test_a_server_answering_500_forever_gets_six_requests_for_an_input(server, monkeypatch):
    """One retry policy: the model layer retries a transient failure (max_retries=5, 6
    requests); the job does not retry it again, the input is dead with that reason."""
    from starfish.data_factory import rules

    monkeypatch.setattr(rules, "RETRY_BASE_DELAY", 0.001)
    server.script(*[{"status": 500, "error": "upstream failed"}] * 50)
    gen = make_job(make_llm(server), max_concurrency=1)
    with pytest.raises(Exception, match="finished without"):
        gen.run(topic=["a"])
    assert len(server.requests) == 6  # 18 before: 6 per attempt, 3 attempts
    info = jobs.load_job(gen.job_id)
    assert info.counts["dead"] == 1 and info.dead_queue == [0]
    [failed] = list(jobs.iter_records(gen.job_id, filter="failed"))
    assert (
        failed["error_type"] == "LLMTransientError"
        and "HTTP 500: upstream failed" in failed["error"]
    )
