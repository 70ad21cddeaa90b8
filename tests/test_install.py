"""Installing: the distribution has a name of its own on the index, the README and messages say
it, and the Makefile's stamps give `make demo` the package alone and `make test` the extras."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent


def test_the_distribution_is_starfish_datagen_and_the_command_starfish() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["name"] == "starfish-datagen"
    assert project["project"]["scripts"] == {"starfish": "starfish.cli:main"}
    # an SPDX string, which setuptools >= 77 takes without its deprecation warnings
    assert project["project"]["license"] == "Apache-2.0"
    assert project["build-system"]["requires"] == ["setuptools>=77"]


def test_no_text_tells_anyone_to_pip_install_the_other_projects_starfish() -> None:
    files = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("src/**/*.py")]
    wrong = re.compile(r"pip install (-U )?['\"]?starfish(\[|['\"]?(\s|$))")
    found = [f"{path}: {m.group(0)}" for path in files for m in wrong.finditer(path.read_text())]
    assert found == []


def _dry_run(tmp_path: Path, target: str) -> str:
    proc = subprocess.run(
        ["make", "-n", target],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_demo_installs_the_core_and_a_later_test_adds_the_extras(tmp_path: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copy(REPO / "Makefile", tmp_path)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    demo = _dry_run(tmp_path, "demo")
    assert "pip install -q -e .\n" in demo and "[dev]" not in demo
    assert "examples/demo.sh" in demo
    (tmp_path / ".venv" / ".installed-core").touch()  # the demo's install is done
    test = _dry_run(tmp_path, "test")
    assert "pip install -q -e '.[dev]'" in test
    (tmp_path / ".venv" / ".installed-dev").touch()
    assert "pip install" not in _dry_run(tmp_path, "demo")
    assert "pip install" not in _dry_run(tmp_path, "test")
