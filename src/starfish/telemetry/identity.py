"""The anonymous client id: a random UUID in `<app data dir>/.starfish_config`.

The file holds a bare UUID, as the original library wrote it, so both versions keep reading
each other's file. A JSON object `{"client_id": ...}` is accepted too. Anything else (garbage,
a directory) is replaced; when the directory cannot be written, the id lives in memory for the
life of the process, so telemetry never fails because of it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from starfish.paths import app_data_dir

if TYPE_CHECKING:
    from uuid import UUID

__all__ = ["CONFIG_FILE", "TelemetryConfig"]

CONFIG_FILE = ".starfish_config"

_log = logging.getLogger(__name__)
_memory_ids: dict[str, UUID] = {}


def _parse(text: str) -> UUID | None:
    from uuid import UUID

    text = text.strip()
    try:
        return UUID(text)
    except ValueError:
        pass
    try:
        value = json.loads(text)
        return UUID(str(value["client_id"]))
    except (ValueError, KeyError, TypeError):
        return None


def _write(path: Path, client_id: UUID, *, replace: bool) -> bool:
    """Write atomically; without `replace`, a file another process created first wins."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(str(client_id))
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            os.replace(tmp, path)
            return True
    finally:
        tmp.unlink(missing_ok=True)


class TelemetryConfig:
    """Where the client id lives and how it is made."""

    @staticmethod
    def config_path(directory: Path | None = None) -> Path:
        return (directory or app_data_dir()) / CONFIG_FILE

    @staticmethod
    def read_client_id(directory: Path | None = None) -> UUID | None:
        """The saved id, or None; never writes (for `starfish telemetry status`)."""
        try:
            return _parse(TelemetryConfig.config_path(directory).read_text(errors="replace")[:4096])
        except OSError:
            return None

    @staticmethod
    def generate_client_id(directory: Path | None = None) -> UUID:
        """Generate or retrieve the client id (in the app data dir by default); never raises."""
        from uuid import uuid4

        path = TelemetryConfig.config_path(directory)
        key = str(path)
        try:
            for _ in range(3):
                existing = TelemetryConfig.read_client_id(directory)
                if existing is not None:
                    return existing
                replace = path.exists() or path.is_symlink()
                if path.is_dir() and not path.is_symlink():
                    import shutil

                    shutil.rmtree(path)
                new_id = _memory_ids.get(key) or uuid4()
                if _write(path, new_id, replace=replace):
                    _memory_ids.pop(key, None)
                    return new_id
        except OSError as exc:
            _log.debug("client id kept in memory: %s", exc)
        if key not in _memory_ids:
            _memory_ids[key] = uuid4()
        return _memory_ids[key]
