"""A live job holds a lease: a resume elsewhere is refused, and a killed job reads `abandoned`.

Real processes: one runs the job, others list it and try to resume it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from starfish.jobs import list_jobs, load_job
from tests.data_factory.stored import rows_on_disk

N = 2000

TARGETS = textwrap.dedent(
    """
    import asyncio, os

    async def slow(i: int, log: str):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {i}\\n")
        await asyncio.sleep(float(os.environ.get("DELAY", "0.05")))  # read per call
        return [{"i": i}]
    """
)


def _cli(*args: str, cwd: Path, delay: str = "0.05") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starfish", *args],
        cwd=cwd,
        env={**os.environ, "DELAY": delay},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _calls(log: Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    return [(int(p), int(i)) for p, i in (line.split() for line in log.read_text().splitlines())]


def test_resume_of_a_live_job_is_refused_and_a_killed_one_reads_abandoned(tmp_path):
    (tmp_path / "targets.py").write_text(TARGETS)
    log = tmp_path / "calls.log"
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"i": i, "log": str(log)}) + "\n" for i in range(N))
    )
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "starfish",
            "run",
            "targets.py:slow",
            "-i",
            "in.jsonl",
            "--no-progress",
            "--max-concurrency",
            "4",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_calls(log)) < 20:
            assert job.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        [listed] = json.loads(_cli("jobs", "list", "--json", cwd=tmp_path).stdout)
        job_id = listed["job_id"]
        assert listed["status"] == "running"
        assert load_job(job_id).status == "running"  # starfish.jobs in Python tells the same

        refused = _cli("jobs", "resume", job_id, "--no-progress", cwd=tmp_path)
        assert refused.returncode != 0
        [line] = refused.stderr.strip().splitlines()
        assert f"job {job_id} is running in another process (pid {job.pid})" in line
        assert {pid for pid, _ in _calls(log)} == {job.pid}  # the refused resume called nothing
        kept = _cli("jobs", "delete", job_id, cwd=tmp_path)
        assert kept.returncode == 1 and f"job {job_id} is running now" in kept.stderr
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()

    listed = _cli("jobs", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "abandoned" in listed.stdout and "running" not in listed.stdout
    shown = _cli("jobs", "show", job_id, cwd=tmp_path).stdout
    assert "status:      abandoned" in shown
    [info] = list_jobs()
    assert info.status == "abandoned" and info.counts == rows_on_disk(job_id)
    done_before = {i for _, i in _calls(log)}

    resumed = _cli("jobs", "resume", job_id, "--no-progress", "--json", cwd=tmp_path, delay="0")
    assert resumed.returncode == 0, resumed.stderr
    after = json.loads(resumed.stdout)
    assert after["status"] == "completed" and after["counts"]["completed"] == N
    assert load_job(job_id).counts == rows_on_disk(job_id)
    second = {i for pid, i in _calls(log) if pid != job.pid}
    assert second | done_before == set(range(N))
    assert not os.listdir(Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "leases")


def test_a_finished_job_holds_no_lease_and_a_job_is_live_while_it_runs():
    from starfish import data_factory

    seen: list[str] = []

    @data_factory(show_progress=False, max_concurrency=1)
    async def gen(i):
        seen.append(load_job(gen.job_id).status)  # asked from inside: it is running
        return [{"i": i}]

    gen.run(i=[0, 1])
    assert seen == ["running", "running"]
    assert load_job(gen.job_id).status == "completed"
    assert gen.resume() == [{"i": 0}, {"i": 1}]  # nothing holds it any more
