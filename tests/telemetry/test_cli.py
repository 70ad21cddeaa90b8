"""`starfish telemetry ...`, through Typer's runner and as a real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starfish.cli.telemetry import app
from starfish.telemetry import outbox
from starfish.telemetry.schema import JOB_EVENT
from starfish.telemetry.service import NOTICE
from starfish.telemetry.settings import choice_path
from tests.conftest import TEST_API_KEY
from tests.posthog_receiver import PostHogReceiver
from tests.telemetry.conftest import app_dir, capture_code, run_py, wait_deliverers_done

runner = CliRunner()


def _status(monkeypatch: pytest.MonkeyPatch | None = None) -> dict:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_status_json_has_the_documented_keys_and_writes_nothing() -> None:
    info = _status()
    assert {"mode", "reason", "client_id", "endpoint", "files"} <= set(info)
    assert info["mode"] == "off" and "TELEMETRY_ENABLED" in info["reason"]
    assert info["client_id"] is None and info["endpoint"] == "http://127.0.0.1:9"
    assert info["files"]["app_data_dir"] == str(app_dir())
    assert list(app_dir().iterdir()) == []


def test_status_text() -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0
    assert "mode:      off" in result.output and str(app_dir()) in result.output


@pytest.mark.parametrize(
    ("command", "mode"), [("enable", "on"), ("disable", "off"), ("local", "local")]
)
def test_choices_persist_and_env_still_wins(
    monkeypatch: pytest.MonkeyPatch, command: str, mode: str
) -> None:
    monkeypatch.delenv("TELEMETRY_ENABLED")
    monkeypatch.setenv("STARFISH_TELEMETRY_API_KEY", TEST_API_KEY)
    result = runner.invoke(app, [command])
    assert result.exit_code == 0, result.output
    info = _status()
    assert info["mode"] == mode and "saved choice" in info["reason"]
    monkeypatch.setenv("TELEMETRY_ENABLED", "false")
    result = runner.invoke(app, [command])
    assert _status()["mode"] == "off"
    if mode != "off":
        assert "still 'off'" in result.output


def test_enable_without_a_project_key_says_it_stays_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TELEMETRY_ENABLED")
    result = runner.invoke(app, ["enable"])
    assert result.exit_code == 0
    assert "still 'local'" in result.output and "no project key" in result.output
    assert _status()["mode"] == "local"


def test_disable_drops_undelivered_events(monkeypatch: pytest.MonkeyPatch) -> None:
    outbox.append_outbox(app_dir(), [{"uuid": "u1", "event": JOB_EVENT}], timeout=1)
    assert runner.invoke(app, ["disable"]).exit_code == 0
    assert outbox.read_outbox(app_dir()) == []


def test_log_shows_entries_exactly() -> None:
    entry = {
        "status": "sent",
        "logged_at": "t",
        "event": {"event": JOB_EVENT, "properties": {"a": 1}},
    }
    outbox.append_log(app_dir(), [entry], timeout=1)
    result = runner.invoke(app, ["log", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == [entry]
    text = runner.invoke(app, ["log"]).output
    assert JOB_EVENT in text and '{"a": 1}' in text


def test_log_when_empty() -> None:
    assert "no telemetry events" in runner.invoke(app, ["log"]).output


def test_status_as_a_real_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "starfish", "telemetry", "status", "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["mode"] == "off" and info["files"]["app_data_dir"] == str(app_dir())


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starfish", "telemetry", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_the_choice_lives_in_the_platform_user_config_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("STARFISH_CONFIG_DIR")
    expected = Path(platformdirs.user_config_dir("starfish", appauthor=False)) / "telemetry.json"
    assert choice_path() == expected
    monkeypatch.setenv("STARFISH_LOCAL_STORAGE_DIR", "/elsewhere/entirely")
    assert choice_path() == expected


def test_disable_holds_when_the_storage_dir_changes(
    receiver: PostHogReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path_factory
) -> None:
    monkeypatch.delenv("TELEMETRY_ENABLED")
    assert _cli("disable").returncode == 0
    assert json.loads((Path(os.environ["STARFISH_CONFIG_DIR"]) / "telemetry.json").read_text()) == {
        "mode": "off"
    }
    fresh = str(tmp_path_factory.mktemp("new-storage"))
    info = json.loads(_cli("status", "--json", env={"STARFISH_LOCAL_STORAGE_DIR": fresh}).stdout)
    assert info["mode"] == "off" and "saved choice" in info["reason"]
    proc = run_py(capture_code(n=3), env={"STARFISH_LOCAL_STORAGE_DIR": fresh, "CI": ""})
    assert proc.returncode == 0 and proc.stderr == ""
    wait_deliverers_done(Path(fresh))
    assert receiver.requests == []
    assert list(Path(fresh).iterdir()) == []


def test_the_notice_is_shown_once_per_user_not_per_storage_dir(
    receiver: PostHogReceiver, tmp_path_factory
) -> None:
    first = run_py(capture_code(n=1), env={"CI": ""})
    assert NOTICE in first.stderr
    fresh = str(tmp_path_factory.mktemp("new-storage"))
    second = run_py(capture_code(n=2), env={"CI": "", "STARFISH_LOCAL_STORAGE_DIR": fresh})
    assert second.returncode == 0 and second.stderr == ""
    receiver.wait_for_events(2)
