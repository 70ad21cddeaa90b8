"""What `starfish run` says when inputs fail (issue 17, points 1 and 6), in a real subprocess:
the failure rate that stops a job, the cause named once, no export hint for nothing, the
attempt counts explained, the dead inputs exported, and the job id as the job starts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli, run_job

FAILING = """
import random

rng = random.Random(17)


async def sometimes(i: int):
    if rng.random() < 0.3:
        raise ValueError("random failure")
    return {"i": i}


async def broken(i: int):
    raise RuntimeError("HTTP 501 from the server")
"""

CAUSE = "RuntimeError: HTTP 501 from the server"


def _rows(workdir: Path, n: int) -> str:
    (workdir / "failing.py").write_text(FAILING)
    name = f"rows{n}.jsonl"
    (workdir / name).write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
    return name


def test_thirty_percent_random_failure_at_concurrency_20_completes(cli: Cli, workdir: Path) -> None:
    rows = _rows(workdir, 1000)
    job = run_job(cli, "failing.py:sometimes", "-i", rows, "--max-concurrency", "20")
    assert job["status"] == "completed", job["stop_reason"]
    assert job["counts"]["completed"] + job["counts"]["dead"] == 1000


def test_a_broken_function_stops_and_the_summary_names_the_cause_once(
    cli: Cli, workdir: Path
) -> None:
    rows = _rows(workdir, 200)
    result = cli("run", "failing.py:broken", "-i", rows, "--max-concurrency", "20")
    assert result.code == 1, result
    job_id = cli("jobs", "list", "--json").json()[0]["job_id"]
    # the job id as the job starts, on stderr, one line
    started = [line for line in result.err.splitlines() if "started" in line]
    assert started == [
        f"starfish: job {job_id} started (broken, 200 inputs); "
        f"if it stops, continue it with: starfish jobs resume {job_id}"
    ]
    both = result.out + result.err
    assert both.count("circuit breaker") == 1, result
    assert f"most common error (20 of 20): {CAUSE}" in result.out
    assert "Traceback" not in result.err
    assert "export" not in both  # nothing completed: nothing to export
    assert "failed, filtered and duplicate count attempts, so they can exceed the inputs" in (
        result.out
    )
    assert "not finished 200" in result.out  # none dead: every input waits for a resume


def test_stop_threshold_0_runs_every_input_and_names_the_cause(cli: Cli, workdir: Path) -> None:
    rows = _rows(workdir, 30)
    result = cli("run", "failing.py:broken", "-i", rows, "--no-progress", "--stop-threshold", "0")
    assert result.code == 1, result
    [job] = cli("jobs", "list", "--json").json()
    assert job["counts"]["dead"] == 30 and job["counts"]["failed"] == 90
    reason = f"no input completed; most common error: {CAUSE} (90 of 90 failed attempts)"
    assert job["stop_reason"] == reason
    assert (result.out + result.err).count(CAUSE) == 1, result
    assert "export" not in result.out

    dead = cli("jobs", "export", job["job_id"], "-o", "dead.jsonl", "--filter", "dead")
    assert dead.code == 0, dead
    exported = [json.loads(line) for line in (workdir / "dead.jsonl").read_text().splitlines()]
    assert len(exported) == 30
    assert exported[7] == {
        "index": 7,
        "attempt": 3,
        "error_type": "RuntimeError",
        "error": "HTTP 501 from the server",
        "input": {"i": 7},
    }


def test_a_bad_stop_threshold_is_a_usage_error(cli: Cli, workdir: Path) -> None:
    rows = _rows(workdir, 3)
    result = cli("run", "failing.py:broken", "-i", rows, "--stop-threshold", "1.5")
    assert result.code == 2, result
    assert "--stop-threshold" in result.err
    assert cli("jobs", "list", "--json").json() == []
