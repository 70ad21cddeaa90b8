"""`starfish run`: a target over the rows of a file, in a real subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starfish import io, jobs
from tests.cli.conftest import Cli, run_job


def test_run_prints_job_id_summary_and_where_the_records_are(cli: Cli) -> None:
    result = cli("run", "targets.py:echo", "--input", "names.jsonl", "--no-progress")
    assert result.code == 0, result
    first = result.out.splitlines()[0]
    assert first.startswith("job ") and ": completed" in first
    assert "completed 3" in result.out and "failed 0" in result.out and "dead 0" in result.out
    job_id = first.split()[1].rstrip(":")
    assert f"starfish jobs export {job_id} --output" in result.out


def test_run_json_param_broadcast_and_jsonl_output(cli: Cli, workdir: Path) -> None:
    job = run_job(cli, "targets.py:echo", "-i", "names.jsonl", "--param", "n=2", "-o", "out.jsonl")
    assert job["status"] == "completed"
    assert job["counts"]["completed"] == 3
    assert job["records"] == 6  # two records per input
    assert job["output"] == "out.jsonl"
    rows = [json.loads(line) for line in (workdir / "out.jsonl").read_text().splitlines()]
    assert rows == [{"name": n, "i": i} for n in ("ada", "bo", "cy") for i in (0, 1)]


def test_run_csv_input_module_target_and_parquet_output(cli: Cli, workdir: Path) -> None:
    job = run_job(cli, "targets:echo", "--input", "names.csv", "--output", "out.parquet")
    assert job["counts"]["completed"] == 3
    assert list(io.read_rows(workdir / "out.parquet")) == [
        {"name": n, "i": 0} for n in ("ada", "bo", "cy")
    ]


def test_run_parquet_input_into_decorated_factory_with_overrides(cli: Cli, workdir: Path) -> None:
    io.write_records(workdir / "in.parquet", [{"name": "x"}, {"name": "y"}])
    job = run_job(
        cli,
        "targets.py:decorated",
        "-i",
        "in.parquet",
        "-p",
        'suffix="!"',
        "--max-concurrency",
        "1",
        "--timeout",
        "5",
        "-o",
        "out.csv",
    )
    assert job["config"]["max_concurrency"] == 1
    assert list(io.read_rows(workdir / "out.csv")) == [{"name": "x!"}, {"name": "y!"}]


def test_run_target_count_stops_early(cli: Cli) -> None:
    job = run_job(cli, "targets.py:echo", "-i", "names.jsonl", "--target-count", "2")
    assert job["counts"]["completed"] == 2


def test_a_failing_job_exits_1_and_stays_stored(cli: Cli, workdir: Path) -> None:
    (workdir / "FAIL").touch()
    result = cli("run", "targets.py:flaky", "-i", "names.jsonl", "--no-progress")
    assert result.code == 1, result
    assert "Traceback" not in result.err
    listed = cli("jobs", "list", "--json").json()
    assert len(listed) == 1
    assert listed[0]["counts"]["completed"] == 0
    assert listed[0]["status"] in ("failed", "stopped")


def test_ctrl_c_leaves_an_interrupted_job_and_says_how_to_resume(workdir: Path) -> None:
    (workdir / "many.jsonl").write_text("".join(f'{{"name": "{i}"}}\n' for i in range(40)))
    args = ["run", "targets.py:slow", "-i", "many.jsonl", "--max-concurrency", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "starfish", *args, "--no-progress"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not [j for j in jobs.list_jobs() if j.name == "slow" and j.counts["completed"] >= 1]:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    (job,) = jobs.list_jobs()
    assert job.status == "interrupted"
    assert f"continue it with: starfish jobs resume {job.job_id}" in err


def test_a_csv_saved_by_excel_with_a_byte_order_mark_runs(cli: Cli, workdir: Path) -> None:
    (workdir / "excel.csv").write_bytes(b"\xef\xbb\xbfname\r\nada\r\nbo\r\n")
    job = run_job(cli, "targets.py:echo", "-i", "excel.csv", "-o", "out.jsonl")
    assert job["counts"]["completed"] == 2
    rows = [json.loads(line) for line in (workdir / "out.jsonl").read_text().splitlines()]
    assert rows == [{"name": "ada", "i": 0}, {"name": "bo", "i": 0}]


BAD_FOR_PARQUET = """
async def mixed(name: str):
    return {"name": name, "v": 1 if name == "ada" else "x"}


async def huge(name: str):
    return {"name": name, "v": 2**80}
"""


@pytest.mark.parametrize(
    ("target", "why"),
    [("mixed", "tried to convert to int64"), ("huge", "an integer beyond 64 bits")],
)
def test_run_prints_the_job_then_one_line_when_parquet_output_fails(
    cli: Cli, workdir: Path, target: str, why: str
) -> None:
    (workdir / "bad_parquet.py").write_text(BAD_FOR_PARQUET)
    result = cli("run", f"bad_parquet.py:{target}", "-i", "names.jsonl", "-o", "x.parquet")
    assert result.code == 1, result
    assert "Traceback" not in result.err
    (job,) = jobs.list_jobs()
    assert job.status == "completed" and job.counts["completed"] == 3
    assert result.out.splitlines()[0].startswith(f"job {job.job_id}: completed")
    started, line = result.err.strip().splitlines()  # the job's id as it started, the error
    assert started.startswith(f"starfish: job {job.job_id} started"), result
    assert line.startswith("error: cannot write x.parquet: field 'v' does not fit"), result
    assert why in line and f"starfish jobs export {job.job_id}" in line
    assert not (workdir / "x.parquet").exists()

    exported = cli("jobs", "export", job.job_id, "-o", "x.parquet")
    assert exported.code == 1, exported
    (line,) = exported.err.strip().splitlines()
    assert line.startswith("error: cannot write x.parquet: field 'v'"), exported
    assert cli("jobs", "export", job.job_id, "-o", "x.jsonl").code == 0


def test_rate_limit_and_executor_options_are_checked_before_any_call(cli: Cli) -> None:
    args = ("run", "targets.py:echo", "-i", "names.jsonl", "--no-progress")
    bad_rate = cli(*args, "--rate-limit", "fast")
    assert bad_rate.code == 2 and "rate_limit must be a string like '600/min'" in bad_rate.err
    bad_exec = cli(*args, "--executor", "dask")
    assert bad_exec.code == 2 and "executor must be 'local' or 'ray'" in bad_exec.err
    assert "Traceback" not in bad_rate.err + bad_exec.err
    ok = cli(*args, "--rate-limit", "100/s", "--json")
    assert ok.code == 0, ok
    assert ok.json()["config"]["rate_limit"] == "100/s"
    assert ok.json()["counts"]["completed"] == 3
