"""Run the real `starfish` command in a subprocess, in a temporary working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

TARGETS = """
import asyncio
import os

from starfish import data_factory


async def echo(name: str, n: int = 1):
    return [{"name": name, "i": i} for i in range(n)]


async def flaky(name: str):
    if os.path.exists(os.path.join(os.path.dirname(__file__), "FAIL")):
        raise RuntimeError("FAIL file present")
    return [{"name": name}]


async def slow(name: str):
    await asyncio.sleep(0.5)
    return [{"name": name}]


def not_async(name: str):
    return [{"name": name}]


@data_factory(max_concurrency=2, show_progress=False)
async def decorated(name: str, suffix: str = ""):
    return [{"name": name + suffix}]
"""


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


Cli = Callable[..., Result]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory holding `targets.py` and small input files in each format."""
    (tmp_path / "targets.py").write_text(TARGETS)
    names = ["ada", "bo", "cy"]
    (tmp_path / "names.jsonl").write_text("".join(json.dumps({"name": n}) + "\n" for n in names))
    (tmp_path / "names.csv").write_text("name\n" + "".join(n + "\n" for n in names))
    return tmp_path


@pytest.fixture
def cli(workdir: Path) -> Cli:
    """`cli("jobs", "list")` runs `python -m starfish jobs list` in `workdir`."""

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
    ) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "starfish", *args],
            cwd=cwd or workdir,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(proc)

    return run


def run_job(cli: Cli, *args: str) -> dict[str, Any]:
    """Run `starfish run ... --json --no-progress` and return the job it printed."""
    result = cli("run", *args, "--json", "--no-progress")
    assert result.code == 0, result
    return result.json()
