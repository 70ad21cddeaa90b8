"""The client id file: created once, old bare-UUID files kept, damage repaired."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from starfish.telemetry import TelemetryConfig


def test_id_is_created_once_and_reused() -> None:
    first = TelemetryConfig.generate_client_id()
    assert isinstance(first, uuid.UUID)
    assert TelemetryConfig.generate_client_id() == first
    assert TelemetryConfig.config_path().read_text().strip() == str(first)


def test_a_bare_uuid_file_from_the_original_library_keeps_its_id() -> None:
    old = uuid.uuid4()
    path = TelemetryConfig.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{old}\n")
    assert TelemetryConfig.generate_client_id() == old
    assert path.read_text() == f"{old}\n"  # not rewritten


def test_a_json_file_is_read_too() -> None:
    old = uuid.uuid4()
    path = TelemetryConfig.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"client_id": str(old)}))
    assert TelemetryConfig.generate_client_id() == old


@pytest.mark.parametrize("content", ["", "garbage", "{}", "\x00\xff" * 10, '{"client_id": 3}'])
def test_a_garbage_file_is_replaced(content: str) -> None:
    path = TelemetryConfig.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    new = TelemetryConfig.generate_client_id()
    assert uuid.UUID(path.read_text().strip()) == new


def test_a_directory_in_its_place_is_replaced() -> None:
    path = TelemetryConfig.config_path()
    (path / "inner").mkdir(parents=True)
    new = TelemetryConfig.generate_client_id()
    assert path.is_file()
    assert uuid.UUID(path.read_text().strip()) == new


def test_an_unwritable_app_data_dir_gives_a_stable_in_memory_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("STARFISH_LOCAL_STORAGE_DIR", str(blocker / "appdata"))
    first = TelemetryConfig.generate_client_id()
    assert TelemetryConfig.generate_client_id() == first
    assert TelemetryConfig.read_client_id() is None


def test_read_client_id_never_writes() -> None:
    assert TelemetryConfig.read_client_id() is None
    assert not TelemetryConfig.config_path().exists()
