"""A job started by a script is found and resumed from a new process (issue 17, point 6):
its id is printed as it starts, and `jobs.latest(name)` finds it where `gen.job_id` is None."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from starfish import ResumeError
from starfish.data_factory import resume_from_checkpoint
from starfish.jobs import load_job

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from starfish import data_factory, jobs
    from starfish.data_factory import resume_from_checkpoint

    @data_factory(dead_queue_threshold=1, stop_threshold=0)
    async def gen(i):
        if i >= 3 and not os.path.exists("FIXED"):
            raise ConnectionError("not yet")
        return [{"i": i}]

    if sys.argv[1] == "run":
        gen.run(i=list(range(6)))
    else:
        assert gen.job_id is None  # a new process has not run gen
        print(json.dumps(resume_from_checkpoint(jobs.latest("gen").job_id)))
    """
)


def test_a_new_process_resumes_the_job_a_script_left(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(SCRIPT)

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "job.py", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = python("run")
    assert first.returncode == 0, first.stderr
    [started] = [line for line in first.stderr.splitlines() if " started " in line]
    job_id = started.split()[2]
    assert started == (
        f"starfish: job {job_id} started (gen, 6 inputs); "
        f"if it stops, continue it with: starfish jobs resume {job_id}"
    )
    assert load_job(job_id).counts["dead"] == 3

    (tmp_path / "FIXED").touch()
    second = python("resume")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == [{"i": i} for i in range(6)]
    assert f"starfish: job {job_id} resumed (gen, 6 inputs)" in second.stderr
    assert load_job(job_id).status == "completed"


def test_resume_from_checkpoint_of_none_says_where_to_find_the_id() -> None:
    with pytest.raises(ResumeError, match=r"starfish jobs list.*jobs\.latest\('gen'\)"):
        resume_from_checkpoint(None)  # type: ignore[arg-type]
