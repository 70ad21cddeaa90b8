"""Every mistake a user can make gets one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Cli


def _assert_usage_error(result: object, *needles: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.err, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("error: "), result
    for needle in needles:
        assert needle in lines[0], result


@pytest.fixture
def bad_files(workdir: Path) -> Path:
    (workdir / "bad.jsonl").write_text('{"name": "ok"}\n\n{"name": oops}\n')
    (workdir / "extra.jsonl").write_text('{"name": "a", "colour": "red"}\n')
    (workdir / "broken.py").write_text("import no_such_module_anywhere\n")
    return workdir


CASES = {
    "missing input": (["targets.py:echo", "-i", "nope.jsonl"], ["nope.jsonl", "no such file"]),
    "malformed jsonl": (["targets.py:echo", "-i", "bad.jsonl"], ["bad.jsonl", "line 3"]),
    "unknown column": (["targets.py:echo", "-i", "extra.jsonl"], ["'colour'", "echo("]),
    "unknown param": (["targets.py:echo", "-i", "names.jsonl", "-p", "zz=1"], ["--param zz"]),
    "no such module": (["no_such_mod:f", "-i", "names.jsonl"], ["no_such_mod"]),
    "no such attribute": (["targets.py:nope", "-i", "names.jsonl"], ["nope"]),
    "no such target file": (["missing.py:f", "-i", "names.jsonl"], ["missing.py"]),
    "target import fails": (["broken.py:f", "-i", "names.jsonl"], ["no_such_module_anywhere"]),
    "not async": (["targets.py:not_async", "-i", "names.jsonl"], ["not an async function"]),
    "unknown output format": (
        ["targets.py:echo", "-i", "names.jsonl", "-o", "o.txt"],
        ["cannot write o.txt", "'.txt'; supported: .jsonl, .csv, .parquet"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_run(cli: Cli, bad_files: Path, case: str) -> None:
    args, needles = CASES[case]
    _assert_usage_error(cli("run", *args, "--no-progress"), *needles)
    assert not (bad_files / "o.txt").exists()


@pytest.mark.parametrize("command", ["show", "export", "resume", "delete"])
def test_unknown_job_id(cli: Cli, command: str) -> None:
    extra = ["-o", "x.jsonl"] if command == "export" else []
    _assert_usage_error(cli("jobs", command, "no-such-job", *extra), "no-such-job")
