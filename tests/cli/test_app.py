"""The command as a whole: both entry points, --help everywhere, a light library import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starfish import __version__
from starfish.cli import app

COMMANDS = [
    [],
    ["run"],
    ["jobs"],
    ["jobs", "list"],
    ["jobs", "show"],
    ["jobs", "export"],
    ["jobs", "resume"],
    ["jobs", "delete"],
    ["telemetry"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "starfish")
def test_help_everywhere(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], prog_name="starfish")
    assert result.exit_code == 0, result.output
    assert "Usage: starfish" in result.output


def test_console_script_and_python_m_agree() -> None:
    script = Path(sys.executable).parent / "starfish"
    by_script = subprocess.run([script, "--version"], capture_output=True, text=True)
    by_module = subprocess.run(
        [sys.executable, "-m", "starfish", "--version"], capture_output=True, text=True
    )
    assert by_script.returncode == by_module.returncode == 0
    assert by_script.stdout == by_module.stdout == f"starfish {__version__}\n"


def test_import_starfish_does_not_load_the_cli() -> None:
    code = (
        "import sys, starfish; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('typer', 'click') or m.startswith('starfish.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
