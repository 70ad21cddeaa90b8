"""The README's quick start is real code: it runs as written, in a fresh process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_start_runs_and_exports_its_records(tmp_path: Path) -> None:
    text = README.read_text()
    quick_start = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", quick_start, re.S).group(1)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    exported = [json.loads(line) for line in (tmp_path / "qa.jsonl").read_text().splitlines()]
    assert [r["topic"] for r in exported] == ["rust", "sqlite", "asyncio"]
    assert "completed" in proc.stdout
