"""Structured output on the servers people run: how each refuses a mode, which mode is chosen,
what a cut answer says, and how a server that answers one request at a time is met."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from starfish import StructuredLLM, data_factory
from starfish.llm import LLMAuthError, LLMConfigError, LLMOutputError, LLMRequestError
from starfish.llm.cache import read_counts
from tests.llm.conftest import KEY
from tests.llm.test_jobs import db_path

QA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]
# What llama-cpp-python 0.3.36 answers to response_format json_schema (HTTP 500).
LLAMA_CPP_PYTHON_500 = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"
)


def make_llm(server, **kwargs):
    kwargs.setdefault("output_schema", QA)
    kwargs.setdefault("prompt", "Write a pair about {{topic}}.")
    return StructuredLLM("m", base_url=server.url, **kwargs)


def kinds(server):
    return [
        (b.get("response_format") or {}).get("type", "none")
        + ("+schema" if "schema" in (b.get("response_format") or {}) else "")
        for b in server.bodies
    ]


def test_a_500_that_names_the_response_format_moves_the_mode_and_is_not_retried(server):
    server.script({"status": 500, "error": LLAMA_CPP_PYTHON_500})
    llm = make_llm(server)
    resp = asyncio.run(llm.run(topic="tides"))
    assert resp.data == [{"question": "text", "answer": "text"}]
    assert resp.mode == "json_object"
    asyncio.run(llm.run(topic="owls"))
    # One refused request, then json_object carrying the schema (constrained by grammar).
    assert kinds(server) == ["json_schema", "json_object+schema", "json_object+schema"]
    assert server.bodies[1]["response_format"]["schema"]["properties"]["records"]["minItems"] == 1
    assert llm.counts.get("retries", 0) == 0


def test_errors_that_do_not_name_the_format_never_move_the_mode(server):
    llm = make_llm(server, max_retries=2)
    server.script({"status": 500, "error": "CUDA out of memory"})
    asyncio.run(llm.run(topic="a"))  # the 500 is retried in the same mode
    server.script(
        {"status": 400, "error": "This model's maximum context length is 8192 tokens",
         "code": "context_length_exceeded"},
    )  # fmt: skip
    with pytest.raises(LLMRequestError, match="maximum context length"):
        asyncio.run(llm.run(topic="b"))
    asyncio.run(llm.run(topic="c"))
    assert kinds(server) == ["json_schema"] * 4


def test_a_server_refusing_the_schema_in_json_object_gets_plain_json_object(make_server):
    server = make_server(reject_formats=("json_schema", "json_object_schema"))
    resp = asyncio.run(make_llm(server).run(topic="a"))
    assert resp.mode == "json_object" and resp.data
    assert kinds(server) == ["json_schema", "json_object+schema", "json_object"]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("json_schema", ["json_schema"]),
        ("json_object", ["json_object+schema"]),
        ("prompt", ["none"]),
    ],
)
def test_structured_output_chooses_the_mode(server, choice, sent):
    resp = asyncio.run(make_llm(server, structured_output=choice).run(topic="a"))
    assert kinds(server) == sent and resp.mode == choice
    if choice == "prompt":
        assert "JSON schema" in server.bodies[0]["messages"][0]["content"]


def test_a_chosen_mode_the_server_refuses_is_an_error_that_says_what_to_use(make_server):
    server = make_server(reject_formats=("json_schema",))
    with pytest.raises(LLMRequestError, match=r"structured_output='auto'"):
        asyncio.run(make_llm(server, structured_output="json_schema").run(topic="a"))
    assert len(server.requests) == 1


def test_bad_structured_output_is_a_setup_error(server):
    with pytest.raises(LLMConfigError, match="structured_output must be one of"):
        make_llm(server, structured_output="grammar")
    with pytest.raises(LLMConfigError, match="needs an output_schema"):
        make_llm(server, output_schema=None, structured_output="json_object")
    assert server.requests == []


def test_an_empty_list_of_records_is_re_asked(server):
    server.script({"content": '{"records": []}'})
    resp = asyncio.run(make_llm(server).run(topic="a"))
    assert resp.data == [{"question": "text", "answer": "text"}]
    assert "no records" in server.bodies[1]["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("status", "message"),
    [(400, "No connected db."), (400, "Invalid API key provided"), (404, "Unauthorized")],
)
def test_a_4xx_that_says_the_key_is_wrong_is_an_auth_error_in_any_mode(server, status, message):
    server.script({"status": status, "error": message})
    with pytest.raises(LLMAuthError):
        asyncio.run(make_llm(server, api_key=KEY).run(topic="a"))
    assert kinds(server) == ["json_schema"]  # no walk down the modes


def test_a_cut_answer_names_the_limit_that_cut_it_in_the_callers_words(server):
    llm = make_llm(server, output_schema=None, model_kwargs={"max_tokens": 50})
    usage = {"prompt_tokens": 10, "completion_tokens": 50}
    server.script({"finish_reason": "length", "usage": usage})
    with pytest.raises(LLMOutputError, match=r"max_tokens=50 .*raise max_tokens in model_kwargs"):
        asyncio.run(llm.run(topic="a"))
    # The context filled up before max_tokens did: the context is named, not max_tokens.
    server.script(
        {"finish_reason": "length", "usage": {"prompt_tokens": 2020, "completion_tokens": 28}}
    )
    with pytest.raises(LLMOutputError, match=r"context length \(2020 prompt \+ 28 answer"):
        asyncio.run(llm.run(topic="b"))
    from starfish.llm.generate import build

    cli = build({"model_name": "m", "prompt": "{{topic}}", "base_url": server.url})
    server.script({"finish_reason": "length", "usage": usage})
    with pytest.raises(LLMOutputError, match="set --max-tokens"):
        asyncio.run(cli.run(topic="c"))


def test_jobs_store_which_mode_answered(make_server):
    server = make_server(reject_formats=("json_schema",), reject_status=500)
    llm = make_llm(server)

    @data_factory(max_concurrency=4, show_progress=False)
    async def gen(topic):
        return (await llm.run(topic=topic)).data

    gen.run(topic=[f"t{i}" for i in range(6)])
    counts = read_counts(db_path(), gen.job_id)
    assert counts["answers_json_object"] == 6 and counts["answers_json_schema"] == 0
    assert counts["requests"] == 7 and counts["retries"] == 0
    from starfish.cli._output import llm_line

    assert "structured output json_object (6 answers)" in llm_line(counts)


def test_an_older_counts_table_gains_the_mode_columns(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE llm_counts (job_id TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0,"
        " cache_hits INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,"
        " completion_tokens INTEGER NOT NULL DEFAULT 0, rate_limited INTEGER NOT NULL DEFAULT 0,"
        " retries INTEGER NOT NULL DEFAULT 0, reasks INTEGER NOT NULL DEFAULT 0, cost_usd REAL)"
    )
    conn.execute("INSERT INTO llm_counts (job_id, requests) VALUES ('j', 3)")
    conn.commit()
    conn.close()
    assert read_counts(path, "j")["answers_prompt"] == 0
    import sqlite3 as sql

    from starfish.data_factory.storage.sqlite.cache import ensure, upsert_counts

    conn = sql.connect(path)
    ensure(conn)  # what opening the job storage does
    upsert_counts(conn, "j", {"requests": 1, "answers_prompt": 1})
    conn.commit()
    conn.close()
    counts = read_counts(path, "j")
    assert counts["requests"] == 4 and counts["answers_prompt"] == 1


def test_calls_wait_in_the_limiter_not_in_a_one_at_a_time_servers_queue(make_server):
    """llama.cpp-like: one request at a time, the rest queued. Sent all at once, the last of 6
    would wait 5 answers (1.5 s) and overrun its 1 s timeout; held in the limiter instead (where
    its clock is paused), no call times out and the server's queue stays short."""
    server = make_server(serial=True, latency=0.3)
    llm = make_llm(server)

    @data_factory(max_concurrency=6, task_runner_timeout=1.0, show_progress=False)
    async def gen(topic):
        return (await llm.run(topic=topic)).data

    records = gen.run(topic=[f"t{i}" for i in range(16)])
    from starfish import jobs

    info = jobs.load_job(gen.job_id)
    assert len(records) == 16 and info.counts["completed"] == 16
    assert info.counts["failed"] == 0
    assert server.peak_queued <= 1  # at most the occasional probe waited behind another
    assert llm._limiter.learner.limit is not None and llm._limiter.learner.limit <= 2


def test_a_timed_out_call_still_counts_its_request(make_server):
    """The server may have answered (and billed) a request whose call timed out: `requests`
    is what was sent, so it matches what the server received."""
    server = make_server(latency=1.5)
    llm = make_llm(server, max_in_flight=1)

    @data_factory(
        max_concurrency=1, task_runner_timeout=0.5, dead_queue_threshold=1, show_progress=False
    )
    async def gen(topic):
        return (await llm.run(topic=topic)).data

    from starfish.errors import OutputError

    with pytest.raises(OutputError, match="TimeoutError"):
        gen.run(topic=["a", "b"])
    counts = read_counts(db_path(), gen.job_id)
    assert counts["requests"] == len(server.requests) >= 2


def test_a_call_cancelled_while_queued_at_the_server_closes_its_connection(make_server):
    """The server skips a queued request whose client left (as llama-cpp-python does), and
    the request still counts: it went out."""
    server = make_server(serial=True, latency=1.0)
    busy = make_llm(server)
    queued = StructuredLLM("m2", prompt="{{topic}}", base_url=server.url)  # its own limiter

    async def until(condition):
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the server never got there")

    async def scenario():
        first = asyncio.ensure_future(busy.run(topic="a"))
        await until(lambda: server.active == 1)  # the server is answering `first`
        second = asyncio.ensure_future(queued.run(topic="b"))
        await until(lambda: server.queued == 1)  # `second` waits in the server's queue
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        await first

    asyncio.run(scenario())
    assert server.abandoned == 1 and server.statuses.count(200) == 1
    assert queued.counts["requests"] == 1
