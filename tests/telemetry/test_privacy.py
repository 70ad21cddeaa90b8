"""Secrets put anywhere but an allow-listed field, or into error messages, never reach the wire.

A "secret" here is what users leak in practice: API keys, tokens, passwords, prompts; strings
with a separator (`-`), so never a valid Python type name or a lowercase enum-like word, which
are the only shapes the allow-list lets through in its string fields.
"""

from __future__ import annotations

import gzip
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starfish.telemetry import (
    AnalyticsConfig,
    AnalyticsService,
    Event,
    TelemetryData,
    outbox,
)
from starfish.telemetry._deliver import _complete
from starfish.telemetry.schema import JOB_EVENT, error_type_counts
from starfish.telemetry.transport import send
from tests.openai_server import OpenAIServer
from tests.posthog_receiver import PostHogReceiver
from tests.telemetry.conftest import app_dir, run_py

secrets = st.builds(
    lambda head, tail: f"Sx-{head}-{tail}",
    st.text(string.ascii_letters + string.digits, min_size=6, max_size=20),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=20),
)
# An API key travels in an HTTP header, so it is printable ASCII.
api_keys = st.text(string.ascii_letters + string.digits, min_size=8, max_size=24).map(
    lambda s: f"Sx-key-{s}"
)


def _wire_text(rec: PostHogReceiver) -> tuple[bytes, str]:
    raw = b"".join(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b for b in rec.raw_bodies)
    return raw, json.dumps([r["json"] for r in rec.requests], ensure_ascii=False)


def _leaky_job(secret: str) -> TelemetryData:
    data = TelemetryData(
        job_id=secret,
        target_reached=True,
        run_mode=secret,
        run_time_platform=secret,
        num_inputs=3,
        library_version="0.2.0",
        config={"batch_size": secret, "max_concurrency": 4, "api_key": secret},
        execution_time=0.5,
        count_summary={"completed": 1, "failed": secret, secret: 5},  # type: ignore[dict-item]
        error_summary={
            **error_type_counts([ValueError(secret), KeyError(secret), TimeoutError(secret)]),
            secret: 1,
            "RuntimeError": secret,  # type: ignore[dict-item]
        },
    )
    data.inputs = [{"prompt": secret}]  # type: ignore[attr-defined]
    data.error_message = f"failed with {secret}"  # type: ignore[attr-defined]
    return data


@pytest.fixture(scope="module")
def wire_receiver() -> Any:
    rec = PostHogReceiver("ok").start()
    yield rec
    rec.stop()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secret=secrets)
def test_no_secret_byte_reaches_the_receiver(wire_receiver: PostHogReceiver, secret: str) -> None:
    wire_receiver.requests.clear()
    wire_receiver.raw_bodies.clear()
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_test", endpoint=wire_receiver.url))
    with pytest.MonkeyPatch.context() as mp:  # no background delivery: this test sends below
        mp.setattr(svc, "_signal", lambda: None)
        svc.capture_job(_leaky_job(secret))
        svc.capture_event(
            Event(
                JOB_EVENT,
                {**_leaky_job(secret).to_dict(), "prompt": secret, "error": repr(secret)},
                client_id="0b9f6a36-6f5b-4d5e-9d0c-2f6e8e3a0a11",
            )
        )
    events = [svc._finalize(svc._queue.popleft()) for _ in range(len(svc._queue))]
    # The finished job went straight to the outbox: it must be clean there already.
    saved = app_dir() / outbox.OUTBOX_FILE
    assert secret not in saved.read_text(encoding="utf-8")
    events += [_complete(e, app_dir()) for e in outbox.read_outbox(app_dir())]
    saved.unlink()
    sent = send(events, api_key="phc_test", endpoint=wire_receiver.url)
    assert len(sent) == 2 and len(wire_receiver.events()) == 2
    raw, text = _wire_text(wire_receiver)
    assert secret not in text
    assert secret.encode() not in raw
    for event in wire_receiver.events():
        props = event["properties"]
        assert props["error_summary"] == {"ValueError": 1, "KeyError": 1, "TimeoutError": 1}
        assert props["num_inputs"] == 3 and props["config"] == {"max_concurrency": 4}


@pytest.fixture(scope="module")
def model_server() -> Iterator[OpenAIServer]:
    server = OpenAIServer().start()
    yield server
    server.stop()
    from starfish.llm import endpoint

    endpoint.reset_endpoints()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secret=secrets, key=api_keys)
def test_no_model_name_base_url_prompt_or_key_reaches_the_receiver(
    wire_receiver: PostHogReceiver, model_server: OpenAIServer, secret: str, key: str
) -> None:
    """A real job calling two models (one by base_url=, one by the provider table's variable)
    with the secret in their model names, base URLs, prompts and key: only counts and a
    provider word leave the machine."""
    from starfish import StructuredLLM, data_factory
    from starfish.telemetry import service

    wire_receiver.requests.clear()
    wire_receiver.raw_bodies.clear()
    model_server.requests.clear()
    base = f"http://127.0.0.1:{model_server.port}/{quote(secret, safe='')}/v1"
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_test", endpoint=wire_receiver.url))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(svc, "_signal", lambda: None)  # no background delivery: sent below
        mp.setattr(service, "capture_job_event", svc.capture_job)
        mp.setenv("VLLM_BASE_URL", base)
        by_table = StructuredLLM(
            f"vllm/{secret}", prompt="About {{topic}}.", api_key=key, cache=False
        )
        by_url = StructuredLLM(
            f"openai/{secret}", prompt="Again {{topic}}.", base_url=base, api_key=key, cache=False
        )

        @data_factory(show_progress=False, max_concurrency=2)
        async def gen(topic: str) -> list[dict[str, Any]]:
            await by_url.run(topic=topic)
            return (await by_table.run(topic=topic)).data

        records = gen.run(topic=[secret, secret + "2"])
    # The secret really was in play: in the requests the model server got, and the outputs.
    assert len(model_server.requests) == 4 and len(records) == 2
    assert all(r["body"]["model"] == secret for r in model_server.requests)
    assert all(r["headers"]["Authorization"] == f"Bearer {key}" for r in model_server.requests)
    assert secret in records[0]["text"]

    saved = app_dir() / outbox.OUTBOX_FILE
    assert secret not in saved.read_text(encoding="utf-8")
    events = [_complete(e, app_dir()) for e in outbox.read_outbox(app_dir())]
    saved.unlink()
    assert len(send(events, api_key="phc_test", endpoint=wire_receiver.url)) == 1
    raw, text = _wire_text(wire_receiver)
    for leak in (secret, key, quote(secret, safe=""), base, "About ", "Again "):
        assert leak not in text
        assert leak.encode() not in raw
    (event,) = wire_receiver.events()
    assert event["properties"]["llm_provider"] == "vllm"  # a tie: the table's row before other
    assert event["properties"]["llm_summary"]["requests"] == 4


def test_a_real_job_with_secret_inputs_and_error_messages_leaks_nothing(
    receiver: PostHogReceiver, tmp_path: Path
) -> None:
    secret = "Sx-sk-live-51HqLyjWDarjtT1zdp7dc"
    script = tmp_path / "job.py"
    script.write_text(
        "from starfish import data_factory\n"
        f"SECRET = {secret!r}\n"
        "@data_factory(max_concurrency=2)\n"
        "async def gen(text, api_key):\n"
        "    if text.startswith('fail'):\n"
        "        raise ValueError(f'bad {text} with key {api_key}')\n"
        "    return [{'out': text + api_key}]\n"
        "gen.run(text=[SECRET + 'a', 'fail' + SECRET], api_key=SECRET)\n"
    )
    proc = run_py(script.read_text(), env={"CI": "1"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (event,) = receiver.wait_for_events(1)
    raw, text = _wire_text(receiver)
    assert secret not in text and secret.encode() not in raw
    assert set(event["properties"]["error_summary"]) == {"ValueError"}
    assert event["properties"]["num_inputs"] == 2
