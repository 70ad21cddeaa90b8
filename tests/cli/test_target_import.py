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
