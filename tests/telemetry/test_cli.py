"""`starfish telemetry ...`, through Typer's runner and as a real command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from starfish.cli.telemetry import app
from starfish.telemetry import JOB_EVENT, outbox
from tests.telemetry.conftest import app_dir

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
    result = runner.invoke(app, [command])
    assert result.exit_code == 0, result.output
    info = _status()
    assert info["mode"] == mode and "saved choice" in info["reason"]
    monkeypatch.setenv("TELEMETRY_ENABLED", "false")
    result = runner.invoke(app, [command])
    assert _status()["mode"] == "off"
    if mode != "off":
        assert "still 'off'" in result.output


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
