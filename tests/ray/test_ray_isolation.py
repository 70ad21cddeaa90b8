"""On Ray, one bad outcome fails one input, keys reach the workers and SIGTERM stops the job
as with the local executor (issue 16, case 14)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starfish import data_factory
from starfish.jobs import list_jobs, load_job

pytestmark = pytest.mark.usefixtures("ray_cluster")

KEY = "sk-ray-TESTONLY0123456789abcdef"


def test_a_result_that_cannot_be_sent_back_fails_its_input_only_with_a_clean_message():
    @data_factory(executor="ray", storage="local", show_progress=False, max_concurrency=8)
    async def gen(i: int):
        import threading

        if i == 5:
            return {"i": i, "lock": threading.Lock()}  # cannot be pickled back
        return {"i": i}

    records = gen.run(i=list(range(40)))
    assert records == [{"i": i} for i in range(40) if i != 5]
    info = load_job(gen.job_id)
    assert info.status == "completed"
    assert info.counts["completed"] == 39 and info.counts["dead"] == 1
    assert gen.get_index_dead_queue() == [5]
    failures = gen.get_output_data(filter="failed")
    assert {f["index"] for f in failures} == {5} and len(failures) == 3
    for failure in failures:
        error = failure["error"]
        assert failure["error_type"] == "TypeError"
        assert "cannot be sent back from a Ray worker" in error and "lock" in error
        assert "\x1b" not in error and "pid=" not in error
        assert not re.search(r"\d+\.\d+\.\d+\.\d+", error), error


def test_a_structured_llm_api_key_reaches_the_workers_and_is_never_stored():
    from starfish import StructuredLLM
    from tests.openai_server import OpenAIServer

    server = OpenAIServer().start()
    try:
        llm = StructuredLLM(
            model_name="loopback-model", base_url=server.url, prompt="Say {{x}}.", api_key=KEY
        )

        @data_factory(executor="ray", storage="local", show_progress=False, max_concurrency=4)
        async def ask(x: int):
            return (await llm.run(x=x)).data

        records = ask.run(x=list(range(6)))
    finally:
        server.stop()
    assert len(records) == 6
    assert len(server.requests) == 6
    assert {r["headers"].get("Authorization") for r in server.requests} == {f"Bearer {KEY}"}
    assert load_job(ask.job_id).status == "completed"
    db = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert KEY.encode() not in path.read_bytes()


def test_sigterm_of_a_cli_driver_on_ray_exits_143_with_the_resume_hint(tmp_path, ray_cluster):
    (tmp_path / "gen.py").write_text(
        "import asyncio\n\n"
        "async def gen(i: int):\n"
        "    await asyncio.sleep(0.02)\n"
        "    return {'i': i}\n"
    )
    (tmp_path / "in.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(20000)))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    args = ["gen.py:gen", "-i", "in.jsonl", "--executor", "ray", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "starfish", "run", *args, "--max-concurrency", "8"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = list_jobs()
        if jobs and load_job(jobs[0].job_id).counts["completed"] >= 20:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    [info] = list_jobs()
    assert info.status == "interrupted" and info.stop_reason == "terminated (SIGTERM)"
    assert f"starfish jobs resume {info.job_id}" in err
    assert "Traceback" not in err and "Fatal Python error" not in err
