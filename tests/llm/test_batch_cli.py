"""The batch lane from the command line: `starfish generate --batch`, `jobs show` (a line per
batch, the cost marked `(batch)`, `--json`'s `batches`) and `jobs delete` cancelling the live
batches of a job, against the loopback batch server in real subprocesses."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from starfish import jobs
from tests.batch_server import BatchServer
from tests.llm.conftest import KEY
from tests.llm.test_batch_lane import db_path, killed_driver
from tests.llm.test_generate import write_topics


@pytest.fixture
def batch_server() -> Iterator[BatchServer]:
    server = BatchServer(key=KEY).start()
    yield server
    server.stop()


def starfish(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "BATCH_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "starfish", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**base, "STARFISH_BATCH_POLL_S": "0.05", **env},
        timeout=120,
    )


def test_generate_batch_end_to_end_then_jobs_show_its_batches(
    batch_server: BatchServer, tmp_path: Path
) -> None:
    topics = write_topics(tmp_path / "topics.jsonl", ["tides", "volcanoes", "owls"])
    args = [
        "generate",
        "--model", "openai/gpt-4o-mini",
        "--prompt", "Write a question about {{topic}}.",
        "--schema", "question:str,answer:str",
        "--input", str(topics),
        "--output", "qa.jsonl",
        "--batch",
        "--batch-size", "2",
        "--no-progress",
    ]  # fmt: skip
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": batch_server.url}
    out = starfish(*args, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "wrote 3 records to qa.jsonl" in out.stdout
    assert "(batch)" in out.stdout
    records = [json.loads(line) for line in (tmp_path / "qa.jsonl").read_text().splitlines()]
    assert sorted(r["topic"] for r in records) == ["owls", "tides", "volcanoes"]
    assert batch_server.lines_per_batch == [2, 1]
    assert not [r for r in batch_server.requests if r["path"].endswith("/chat/completions")]

    [job] = jobs.list_jobs()
    shown = starfish("jobs", "show", job.job_id, cwd=tmp_path, env={})
    assert shown.returncode == 0, shown.stderr
    cost = next(line for line in shown.stdout.splitlines() if line.startswith("llm:"))
    assert "3 requests" in cost and re.search(r"cost \$0\.0000\d+ \(batch\)", cost)
    [llm] = [jobs.load_job(job.job_id).llm]
    online = (llm["prompt_tokens"] * 0.15 + llm["completion_tokens"] * 0.6) / 1e6
    assert llm["cost_usd"] == pytest.approx(online / 2)  # gpt-4o-mini's table price, halved
    ids = list(batch_server.batches)
    batch_lines = [line for line in shown.stdout.splitlines() if ids[0] in line or ids[1] in line]
    assert len(batch_lines) == 2 and batch_lines[0].startswith("batch:")
    assert "completed  2 requests: 2 succeeded, 0 failed  created " in batch_lines[0]
    assert "1 requests: 1 succeeded" in batch_lines[1] and "ended 20" in batch_lines[1]

    detail = json.loads(starfish("jobs", "show", job.job_id, "--json", cwd=tmp_path, env={}).stdout)
    batches = detail["batches"]
    assert [b["batch_id"] for b in batches] == ids
    assert [(b["state"], b["requests"], b["succeeded"]) for b in batches] == [
        ("ended", 2, 2),
        ("ended", 1, 1),
    ]
    assert all(b["created_at"] and b["ended_at"] for b in batches)
    assert "base_url" not in batches[0] and "lines" not in batches[0]
    assert batch_server.url not in json.dumps(detail["batches"])

    again = starfish(*args, "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert len(batch_server.batches) == 2  # every answer came from the cache
    assert json.loads(again.stdout)["llm"]["cache_hits"] == 3


def test_generate_batch_size_needs_batch(tmp_path: Path) -> None:
    topics = write_topics(tmp_path / "topics.jsonl", ["a"])
    out = starfish(
        "generate", "--model", "openai/gpt-4o-mini", "--prompt", "{{topic}}",
        "--input", str(topics), "--batch-size", "3",
        cwd=tmp_path, env={"OPENAI_API_KEY": KEY},
    )  # fmt: skip
    assert out.returncode == 2 and "--batch-size needs --batch" in out.stderr


def _stored_rows() -> list[Any]:
    with sqlite3.connect(db_path()) as conn:
        return conn.execute("SELECT job_id FROM llm_batches").fetchall()


def test_delete_cancels_the_live_batches_at_the_provider(
    batch_server: BatchServer, tmp_path: Path
) -> None:
    job_id = killed_driver(batch_server, tmp_path)
    [batch] = batch_server.batches.values()
    shown = starfish("jobs", "show", job_id, cwd=tmp_path, env={})
    assert f"batch:       {batch.id}  in_progress  15 requests" in shown.stdout

    out = starfish("jobs", "delete", job_id, cwd=tmp_path, env={"BATCH_KEY": KEY})
    assert out.returncode == 0, out.stderr
    assert f"cancelled 1 live batch at {batch_server.url}" in out.stdout
    assert f"deleted job {job_id}" in out.stdout
    cancels = [r for r in batch_server.requests if r["path"].endswith("/cancel")]
    assert [(r["method"], r["path"]) for r in cancels] == [
        ("POST", f"/v1/batches/{batch.id}/cancel")
    ]
    assert batch.status in ("cancelling", "cancelled")
    assert _stored_rows() == []
    assert jobs.list_jobs() == []


def test_delete_without_the_key_keeps_the_job_and_says_so(
    batch_server: BatchServer, tmp_path: Path
) -> None:
    job_id = killed_driver(batch_server, tmp_path)
    [batch] = batch_server.batches.values()
    out = starfish("jobs", "delete", job_id, cwd=tmp_path, env={})
    assert out.returncode == 1
    assert "could not cancel batch" in out.stderr and "set BATCH_KEY" in out.stderr
    assert "--keep-batches" in out.stderr
    assert [j.job_id for j in jobs.list_jobs()] == [job_id]
    assert not [r for r in batch_server.requests if r["path"].endswith("/cancel")]

    kept = starfish("jobs", "delete", job_id, "--keep-batches", cwd=tmp_path, env={})
    assert kept.returncode == 0, kept.stderr
    assert f"left 1 live batch running ({batch.id})" in kept.stdout
    assert jobs.list_jobs() == [] and _stored_rows() == []
    assert batch.status == "in_progress"


def test_cancel_reads_the_providers_key_variable_and_finds_an_unconfirmed_batch(
    batch_server: BatchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row of `openai/...` finds its key in OPENAI_API_KEY, as StructuredLLM does; a row
    stored before its batch's id (a kill mid-create) is found by the submission's metadata."""
    import asyncio

    from starfish.llm.batch import OpenAIBatchClient
    from starfish.llm.batch.cancel import cancel_live
    from starfish.llm.batch.lane import JOB_KEY, SUBMISSION_KEY

    batch_server.hold = True
    client = OpenAIBatchClient(batch_server.url, KEY)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

    async def create(submission: str) -> Any:
        line = client.encode(f"c-{submission}", body)
        return await client.submit([line], {JOB_KEY: "j", SUBMISSION_KEY: submission})

    known, unconfirmed = asyncio.run(create("s1")), asyncio.run(create("s2"))
    rows = [
        {
            "submission": submission,
            "provider": "openai",
            "model": "openai/gpt-4o-mini",
            "base_url": batch_server.url,
            "api_key_env": None,
            "state": state,
            "started_at": time.time() - 5,
            "lines": [[f"c-{submission}", 0, 1]],
            "ref": ref,
        }
        for submission, state, ref in (
            ("s1", "running", known.as_dict()),
            ("s2", "submitting", None),
            ("s3", "ended", None),
        )
    ]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    missing = cancel_live(rows)
    assert missing.done == {} and len(missing.problems) == 2
    assert all("set OPENAI_API_KEY" in p for p in missing.problems)

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    done = cancel_live(rows)
    assert done.problems == [] and done.notes() == ["cancelled 2 live batches at openai"]
    for batch in (known, unconfirmed):
        assert batch_server.batches[batch.batch_id].status in ("cancelling", "cancelled")
