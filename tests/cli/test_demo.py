"""`make demo` end to end: examples/demo.sh in a temporary demo dir."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.cli.conftest import REPO
from tests.conftest import DEAD_LOOPBACK


def test_demo_runs_shows_exports_and_logs_the_event_locally(tmp_path: Path) -> None:
    # A key and an endpoint in the environment must not turn the demo into model calls.
    env = {
        **os.environ,
        "STARFISH_DEMO_DIR": str(tmp_path / "demo"),
        "OPENAI_API_KEY": "sk-demo-must-not-be-used",
        "OPENAI_BASE_URL": DEAD_LOOPBACK + "/v1",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "examples" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert "qa_pairs: using the embedded generator (QA_PAIRS_MODEL=embedded)" in proc.stderr
    out = proc.stdout
    job_id = re.search(r"^job ([0-9a-f]{32}): completed", out, re.M).group(1)
    assert f"job:         {job_id}" in out  # jobs show
    written = int(re.search(rf"wrote (\d+) completed records of job {job_id}", out).group(1))
    exported = (tmp_path / "demo" / "qa_pairs.jsonl").read_text().splitlines()
    assert len(exported) == written > 200
    assert re.search(r"local\s+data_factory_job_complete", out)  # telemetry log, mode local
    assert f'"job_id": "{job_id}"' in out
