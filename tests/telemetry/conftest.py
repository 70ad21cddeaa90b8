"""Helpers for telemetry tests: run a snippet as a whole process, wait for its deliverers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from starfish.telemetry import service

JOB_ID = "0b9f6a36-6f5b-4d5e-9d0c-2f6e8e3a0a11"

CAPTURE = """
import sys
from starfish.telemetry import TelemetryData
from starfish.telemetry.service import capture_job_event
capture_job_event(TelemetryData(job_id={job_id!r}, target_reached=True, num_inputs={n},
    run_mode="normal", run_time_platform="python", library_version="0.2.0",
    config={{"batch_size": 1, "max_concurrency": 50}}, execution_time=1.5,
    count_summary={{"completed": 3, "failed": 1, "filtered": 0, "duplicate": 0}},
    error_summary={{"ValueError": 1}}))
"""


def capture_code(n: int = 3, job_id: str = JOB_ID) -> str:
    """A snippet that captures one job event whose `num_inputs` marks it."""
    return CAPTURE.format(n=n, job_id=job_id)


def run_py(
    code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with the test's environment (plus `env`)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def app_dir() -> Path:
    return Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"])


def _deliverers(directory: Path) -> list[int]:
    """Pids of live processes whose environment points at `directory` (Linux /proc)."""
    needle = f"STARFISH_LOCAL_STORAGE_DIR={directory}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def live_deliverers(directory: Path | None = None) -> list[int]:
    """Pids of live (not zombie) delivery processes for this app data dir (Linux /proc)."""
    pids = []
    for pid in _deliverers(directory or app_dir()):
        try:
            if b"_deliver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


def wait_deliverers_done(directory: Path | None = None, timeout: float = 20.0) -> None:
    """Block until no process (deliverer) using this app data dir is alive."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc to see detached deliverers")
    directory = directory or app_dir()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _deliverers(directory):
            return
        time.sleep(0.05)
    raise AssertionError(f"deliverers still running after {timeout}s: {_deliverers(directory)}")


@pytest.fixture(autouse=True)
def _fresh_default_service() -> Iterator[None]:
    """Each test resolves the settings anew, from its own environment."""
    service._reset_default_service()
    yield
    service._reset_default_service()
