"""bench/bench_telemetry.py runs end to end at tiny sizes and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_telemetry.py"


def test_bench_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "200", "--runs", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["calls"] == 200
    assert result["capture"]["capture_event (on)"]["median_us"] > 0
    assert "p99_us" in result["capture"]["capture_job_event (on)"]
    modes = {"off", "ours, ok", "ours, refuse", "ours, 500", "ours, hang"}
    assert modes <= set(result["exit"])
    for mode in modes:
        assert result["exit"][mode]["added_exit_s"] < 1.0
