"""`starfish jobs ...` against jobs stored by real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from starfish import io
from tests.cli.conftest import Cli, run_job


def test_list_and_show_human_and_json(cli: Cli) -> None:
    job = run_job(cli, "targets.py:echo", "-i", "names.jsonl")
    job_id = job["job_id"]

    listed = cli("jobs", "list")
    assert listed.code == 0, listed
    assert listed.out.splitlines()[0].split()[:3] == ["JOB", "ID", "NAME"]
    assert job_id in listed.out and "completed" in listed.out

    as_json = cli("jobs", "list", "--json").json()
    assert [j["job_id"] for j in as_json] == [job_id]

    shown = cli("jobs", "show", job_id)
    assert shown.code == 0, shown
    assert f"job:         {job_id}" in shown.out
    assert "status:      completed" in shown.out
    assert "counts:      completed 3  failed 0  filtered 0  duplicate 0  dead 0" in shown.out
    assert "config:" in shown.out

    detail = cli("jobs", "show", job_id, "--json").json()
    assert detail["job_id"] == job_id
    assert detail["num_inputs"] == 3
    assert detail["dead_queue"] == []


def test_list_when_empty(cli: Cli) -> None:
    assert cli("jobs", "list", "--json").json() == []
    assert "no jobs stored yet" in cli("jobs", "list").out


def test_export_each_format_in_input_order(cli: Cli, workdir: Path) -> None:
    job_id = run_job(cli, "targets.py:echo", "-i", "names.jsonl", "-p", "n=2")["job_id"]
    expected = [{"name": n, "i": i} for n in ("ada", "bo", "cy") for i in (0, 1)]

    result = cli("jobs", "export", job_id, "--output", "all.jsonl")
    assert result.code == 0, result
    assert f"wrote 6 completed records of job {job_id} to all.jsonl" in result.out
    lines = (workdir / "all.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == expected

    assert cli("jobs", "export", job_id, "-o", "all.parquet").code == 0
    assert list(io.read_rows(workdir / "all.parquet")) == expected

    assert cli("jobs", "export", job_id, "-o", "all.csv").code == 0
    assert list(io.read_rows(workdir / "all.csv")) == [
        {"name": r["name"], "i": str(r["i"])} for r in expected
    ]


def test_export_filter_failed_and_bad_filter(cli: Cli, workdir: Path) -> None:
    job_id = run_job(cli, "targets.py:echo", "-i", "names.jsonl")["job_id"]
    result = cli("jobs", "export", job_id, "-o", "failed.jsonl", "--filter", "failed")
    assert result.code == 0, result
    assert "wrote 0 failed records" in result.out
    assert (workdir / "failed.jsonl").read_text() == ""

    bad = cli("jobs", "export", job_id, "-o", "x.jsonl", "--filter", "bogus")
    assert bad.code == 2
    assert "Traceback" not in bad.err

    unknown = cli("jobs", "export", job_id, "-o", "x.xlsx")
    assert unknown.code == 2
    assert unknown.err.strip() == (
        "error: cannot write x.xlsx: unknown extension '.xlsx'; supported: .jsonl, .csv, .parquet"
    )


def test_resume_finishes_a_failed_job_in_a_new_process(
    cli: Cli, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (workdir / "FAIL").touch()
    failed = cli("run", "targets.py:flaky", "-i", "names.jsonl", "--no-progress")
    assert failed.code == 1, failed
    job_id = cli("jobs", "list", "--json").json()[0]["job_id"]

    (workdir / "FAIL").unlink()
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # a file target resumes from any cwd
    resumed = cli("jobs", "resume", job_id, "--no-progress", "--json", cwd=elsewhere)
    assert resumed.code == 0, resumed
    info = resumed.json()
    assert info["job_id"] == job_id
    assert info["status"] == "completed"
    assert info["counts"]["completed"] == 3

    assert cli("jobs", "export", job_id, "-o", "out.jsonl").code == 0
    names = [json.loads(line)["name"] for line in (workdir / "out.jsonl").read_text().splitlines()]
    assert names == ["ada", "bo", "cy"]


def test_delete_removes_the_job(cli: Cli) -> None:
    job_id = run_job(cli, "targets.py:echo", "-i", "names.jsonl")["job_id"]
    result = cli("jobs", "delete", job_id)
    assert result.code == 0, result
    assert f"deleted job {job_id}" in result.out
    assert cli("jobs", "list", "--json").json() == []
    gone = cli("jobs", "show", job_id)
    assert gone.code == 2
