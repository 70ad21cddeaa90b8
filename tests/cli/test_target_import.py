"""How TARGET is imported by `run` and again by `jobs resume`, with the installed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "starfish"


def _starfish(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user types it (not `python -m starfish`)."""
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=dict(os.environ), capture_output=True, text=True
    )


def test_installed_script_imports_a_module_target_from_the_working_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "mygen.py").write_text(
        "async def gen(topic: str):\n    return {'topic': topic, 'len': len(topic)}\n"
    )
    (tmp_path / "in.jsonl").write_text('{"topic": "sea"}\n{"topic": "stars"}\n')
    result = _starfish(
        "run", "mygen:gen", "-i", "in.jsonl", "--no-progress", "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "completed"
    assert job["counts"]["completed"] == 2


GEN = """
import os

from helpers import fmt


async def translate(text: str):
    if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "FAIL")):
        raise ConnectionError("service unreachable")
    return {"text": fmt(text)}
"""


def _project(path: Path) -> Path:
    """A user's directory: a target file that imports a sibling module, and an input file."""
    path.mkdir()
    (path / "gen.py").write_text(GEN)
    (path / "helpers.py").write_text("def fmt(text):\n    return text.upper()\n")
    (path / "in.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n')
    return path


def _failed_job(project: Path, target: str) -> str:
    (project / "FAIL").touch()
    result = _starfish("run", target, "-i", "in.jsonl", "--no-progress", "--json", cwd=project)
    assert result.returncode == 1, result.stderr
    job = json.loads(result.stdout)
    assert job["counts"]["completed"] == 0
    (project / "FAIL").unlink()
    return job["job_id"]


def _resumed(job_id: str, cwd: Path, *extra: str) -> dict:
    result = _starfish("jobs", "resume", job_id, "--no-progress", "--json", *extra, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def test_a_file_target_importing_a_sibling_module_resumes_from_any_directory(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job_id = _failed_job(project, "gen.py:translate")
    job = _resumed(job_id, elsewhere)
    assert job["status"] == "completed"
    assert job["counts"]["completed"] == 3
    out = elsewhere / "out.jsonl"
    assert _starfish("jobs", "export", job_id, "-o", str(out), cwd=elsewhere).returncode == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"text": "A"},
        {"text": "B"},
        {"text": "C"},
    ]


def test_a_module_target_resumes_from_any_directory(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job_id = _failed_job(project, "gen:translate")
    assert _resumed(job_id, elsewhere)["counts"]["completed"] == 3


BUGGY = """
async def translate(text: str):
    raise KeyError("bug: a typo in the prompt template")
"""

FIXED = """
from helpers import fmt


async def translate(text: str):
    return {"text": fmt(text), "fixed": True}
"""


def test_resume_runs_the_stored_code_and_reload_picks_up_a_fix(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    (project / "gen.py").write_text(BUGGY)
    first = _starfish(
        "run", "gen.py:translate", "-i", "in.jsonl", "--no-progress", "--json", cwd=project
    )
    assert first.returncode == 1, first.stderr
    job_id = json.loads(first.stdout)["job_id"]

    (project / "gen.py").write_text(FIXED)
    again = _starfish("jobs", "resume", job_id, "--no-progress", "--json", cwd=tmp_path)
    assert again.returncode == 1, again.stderr  # the code stored at the start, still buggy
    assert json.loads(again.stdout)["counts"]["completed"] == 0

    job = _resumed(job_id, tmp_path, "--reload")
    assert job["status"] == "completed"
    assert job["counts"]["completed"] == 3
    out = tmp_path / "out.jsonl"
    assert _starfish("jobs", "export", job_id, "-o", str(out), cwd=tmp_path).returncode == 0
    assert json.loads(out.read_text().splitlines()[0]) == {"text": "A", "fixed": True}


def _one_error_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    for needle in needles:
        assert needle in line, line
    return line


def test_resume_errors_are_one_line_and_exit_1_not_usage_errors(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    job_id = _failed_job(project, "gen.py:translate")
    (project / "gen.py").unlink()
    gone = _starfish("jobs", "resume", job_id, "--reload", "--no-progress", cwd=tmp_path)
    _one_error_line(gone, 1, f"cannot reload {project / 'gen.py'}:translate", job_id)
    # without --reload the code stored when the job started still runs
    assert _resumed(job_id, tmp_path)["counts"]["completed"] == 3


def test_a_job_whose_function_could_not_be_stored_cannot_be_resumed_elsewhere(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path / "project")
    (project / "locked.py").write_text(
        "import threading\n\nLOCK = threading.Lock()\n\n\n"
        "async def translate(text: str):\n"
        "    with LOCK:\n"
        "        raise ConnectionError('service unreachable')\n"
    )
    first = _starfish("run", "locked.py:translate", "-i", "in.jsonl", "--json", cwd=project)
    assert first.returncode == 1, first.stderr
    job_id = json.loads(first.stdout)["job_id"]
    again = _starfish("jobs", "resume", job_id, "--no-progress", cwd=project)
    _one_error_line(again, 1, f"job {job_id} stored no call spec")


HOOKED = """
from starfish import data_factory


def keep(records, state):
    return {verdict!r}


@data_factory(on_record_complete=keep, dead_queue_threshold=1, show_progress=False)
async def translate(text: str):
    return {{"text": text}}
"""


def test_reload_of_a_data_factory_target_uses_its_fixed_hooks(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    (project / "gen.py").write_text(HOOKED.format(verdict="filtered"))  # the bug: drops all
    first = _starfish("run", "gen.py:translate", "-i", "in.jsonl", "--json", cwd=project)
    assert first.returncode == 1, first.stderr
    job = json.loads(first.stdout)
    assert job["counts"]["filtered"] == 3 and job["counts"]["dead"] == 3

    (project / "gen.py").write_text(HOOKED.format(verdict=None))
    fixed = _resumed(job["job_id"], tmp_path, "--reload")
    assert fixed["counts"]["completed"] == 3 and fixed["counts"]["dead"] == 0
