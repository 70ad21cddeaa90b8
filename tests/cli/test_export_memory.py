"""`starfish jobs export` reads records in batches bounded by bytes, not by count.

Sixty 10 MB records once peaked at 1.8 GB: the reader fetched 512 rows at a time. The export
runs in its own process and its peak RSS (from `wait4`) is compared with the same export of a
job of small records, so that the interpreter and imports cancel out.

glibc raises its mmap threshold the first time a big block is freed, after which freed 8 MB
blocks stay in the heap and count in the RSS whether in use or not (about 0.8 record more
here): the export command fixes the threshold itself (`starfish._memory`), so the default
environment is held to the same 3 records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECORD_MB = 8
RECORDS = 12

MAKE_JOB = """
import sys
from starfish import data_factory

size = int(sys.argv[1])

@data_factory(max_concurrency=1, show_progress=False)
async def big(i):
    return {"i": i, "text": chr(97 + i % 26) * size}

big.run(i=list(range(int(sys.argv[2]))))
print(big.job_id)
"""


def _make_job(size: int, count: int, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", MAKE_JOB, str(size), str(count)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _export_peak_mb(job_id: str, output: Path, env: dict[str, str]) -> float:
    """The peak RSS, in MB, of a `starfish jobs export` process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "starfish", "jobs", "export", job_id, "-o", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return usage.ru_maxrss / 1024  # kB on Linux


@pytest.fixture(scope="module")
def jobs_big_and_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    # the module shares one storage directory: the jobs are made once
    store = tmp_path_factory.mktemp("store")
    env = {
        "STARFISH_LOCAL_STORAGE_DIR": str(store),
        "STARFISH_CONFIG_DIR": str(tmp_path_factory.mktemp("config")),
        "TELEMETRY_ENABLED": "false",
    }
    return _make_job(RECORD_MB * 1024 * 1024, RECORDS, env), _make_job(100, RECORDS, env), store


@pytest.mark.parametrize(
    ("suffix", "env", "bound"),
    [
        (".jsonl", {}, 3.0),
        (".csv", {}, 3.0),
    ],
)
def test_exporting_big_records_holds_about_one_at_a_time(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jobs_big_and_small: tuple[str, str, Path],
    suffix: str,
    env: dict[str, str],
    bound: float,
) -> None:
    big, small, store = jobs_big_and_small
    monkeypatch.setenv("STARFISH_LOCAL_STORAGE_DIR", str(store))
    baseline = _export_peak_mb(small, tmp_path / f"small{suffix}", env)
    peak = _export_peak_mb(big, tmp_path / f"big{suffix}", env)
    out = tmp_path / f"big{suffix}"
    assert out.stat().st_size > RECORDS * RECORD_MB * 1024 * 1024  # every record was written
    if suffix == ".jsonl":
        first = json.loads(out.open().readline())
        assert first["i"] == 0 and len(first["text"]) == RECORD_MB * 1024 * 1024
    assert peak - baseline < bound * RECORD_MB, (peak, baseline)
