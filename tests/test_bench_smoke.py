"""A smoke run of the benchmark suite: tiny sizes, ours only, nothing written, no peer install.

Benchmarks are not unit tests; this only proves `bench/run.py` still drives our API end to end
and prints its figures, so `make bench` does not rot between releases.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_run_prints_figures() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--only",
            "ours",
            "--no-write",
            "--workloads",
            "cold,throughput,io,resume",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "ERROR" not in out, out
    for row in ("`import starfish` (whole process)", "20-input job, whole process", "no-op, local"):
        assert row in out, out
    assert out.startswith("libraries: ours;"), out
    assert "| Workload | Ours (median) |" in out


def test_bench_batch_quick_run_prints_figures() -> None:
    """bench/bench_batch.py with tiny sizes: the batch lane, its cache-only re-run and the
    online/batch cost line, each in a child process against the servers' own processes."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_batch.py"),
            "--inputs",
            "300",
            "--cost-inputs",
            "50",
            "--reps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Batch / cache-only driver CPU" in out, out
    assert "Batch / online cost: 0.500" in out, out
