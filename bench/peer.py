"""Install the peer library, starfish-core 0.1.3, in its own venv under bench/peer/.

The peer must never share our .venv: it pulls litellm and friends, and it installs a package
also named `starfish`, which would shadow ours.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

PEER_SPEC = "starfish-core==0.1.3"
PEER_DIR = Path(__file__).resolve().parent / "peer"
PEER_PYTHON = PEER_DIR / ".venv" / "bin" / "python"
STAMP = PEER_DIR / ".venv" / ".installed"


def ensure_peer(quiet: bool = True) -> Path:
    """Create the peer venv and install the peer once; return its python."""
    if STAMP.exists() and STAMP.read_text().strip() == PEER_SPEC and PEER_PYTHON.exists():
        return PEER_PYTHON
    PEER_DIR.mkdir(parents=True, exist_ok=True)
    if not PEER_PYTHON.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(PEER_DIR / ".venv")
    cmd = [str(PEER_PYTHON), "-m", "pip", "install", "--disable-pip-version-check", PEER_SPEC]
    if quiet:
        cmd.insert(4, "-q")
    print(f"installing the peer: {' '.join(cmd)}", file=sys.stderr)
    subprocess.run(cmd, check=True)
    STAMP.write_text(PEER_SPEC + "\n")
    return PEER_PYTHON


if __name__ == "__main__":
    print(ensure_peer(quiet=False))
