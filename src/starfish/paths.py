"""Where Starfish keeps its files: one app data dir for jobs, telemetry id and settings."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "app_data_dir"]

ENV_VAR = "STARFISH_LOCAL_STORAGE_DIR"


def app_data_dir() -> Path:
    """The app data dir: `STARFISH_LOCAL_STORAGE_DIR`, else the platform's convention.

    Not created here: callers create what they write, so that a read-only look
    (`starfish telemetry status`) never leaves files behind.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("starfish", appauthor=False))
