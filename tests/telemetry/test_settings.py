"""Which mode wins, and why: environment, .env, DO_NOT_TRACK, the saved choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from starfish.telemetry.settings import (
    DEFAULT_ENDPOINT,
    NO_KEY_REASON,
    POSTHOG_API_KEY,
    env_says_off,
    resolve,
    save_choice,
    saved_choice,
)
from tests.conftest import TEST_API_KEY


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No telemetry variables but a project key, and an empty working directory (no .env)."""
    for name in ("TELEMETRY_ENABLED", "POSTHOG_HOST", "CI", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STARFISH_TELEMETRY_API_KEY", TEST_API_KEY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_default_with_a_project_key_is_on_with_the_us_cloud(clean_env: Path) -> None:
    s = resolve()
    assert (s.mode, s.endpoint, s.api_key, s.debug) == ("on", DEFAULT_ENDPOINT, TEST_API_KEY, False)
    assert "default" in s.reason


def test_default_without_a_project_key_is_local(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STARFISH_TELEMETRY_API_KEY")
    s = resolve()
    assert (s.mode, s.reason, s.api_key) == ("local", NO_KEY_REASON, POSTHOG_API_KEY)
    save_choice("on")
    assert resolve().mode == "local"
    monkeypatch.setenv("TELEMETRY_ENABLED", "true")
    assert (resolve().mode, resolve().reason) == ("local", NO_KEY_REASON)


@pytest.mark.parametrize("key", ["", "phx_personalKeyThatCanReadData", "not-a-key"])
def test_only_a_write_only_project_key_turns_sending_on(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("STARFISH_TELEMETRY_API_KEY", key)
    assert resolve().mode == "local"


@pytest.mark.parametrize(
    "value", ["false", "FALSE", "0", "f", "F", "no", "No", "off", "OFF", " off "]
)
def test_telemetry_enabled_false_ish_turns_it_off(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TELEMETRY_ENABLED", value)
    s = resolve()
    assert s.mode == "off"
    assert "TELEMETRY_ENABLED" in s.reason and "environment" in s.reason
    assert env_says_off()


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes"])
def test_do_not_track_turns_it_off_even_when_enabled(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TELEMETRY_ENABLED", "true")
    monkeypatch.setenv("DO_NOT_TRACK", value)
    s = resolve()
    assert s.mode == "off" and "DO_NOT_TRACK" in s.reason


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_do_not_track_zero_does_not(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", value)
    assert resolve().mode == "on"


def test_local_mode(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_ENABLED", "Local")
    assert resolve().mode == "local"
    assert not env_says_off()


def test_dotenv_counts(clean_env: Path) -> None:
    (clean_env / ".env").write_text("TELEMETRY_ENABLED=false\nPOSTHOG_HOST=http://127.0.0.1:1\n")
    s = resolve()
    assert s.mode == "off" and ".env" in s.reason
    assert s.endpoint == "http://127.0.0.1:1"


def test_real_environment_wins_over_dotenv(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("TELEMETRY_ENABLED=local\nPOSTHOG_HOST=http://127.0.0.1:1\n")
    monkeypatch.setenv("TELEMETRY_ENABLED", "true")
    monkeypatch.setenv("POSTHOG_HOST", "http://127.0.0.1:2/")
    s = resolve()
    assert s.mode == "on" and "environment" in s.reason
    assert s.endpoint == "http://127.0.0.1:2"


def test_dotenv_does_not_modify_the_environment(clean_env: Path) -> None:
    import os

    (clean_env / ".env").write_text("TELEMETRY_ENABLED=false\n")
    resolve()
    assert "TELEMETRY_ENABLED" not in os.environ


def test_a_broken_dotenv_is_ignored(clean_env: Path) -> None:
    (clean_env / ".env").write_bytes(b"\xff\xfe=\x00\nTELEMETRY_ENABLED")
    assert resolve().mode in ("on", "off")  # no exception is the point


@pytest.mark.parametrize("mode", ["off", "local", "on"])
def test_saved_choice_applies_without_env(clean_env: Path, mode: str) -> None:
    save_choice(mode)
    assert saved_choice() == mode
    s = resolve()
    assert s.mode == mode and "saved choice" in s.reason


def test_explicit_env_wins_over_saved_choice(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_choice("off")
    monkeypatch.setenv("TELEMETRY_ENABLED", "true")
    assert resolve().mode == "on"
    save_choice("on")
    monkeypatch.setenv("TELEMETRY_ENABLED", "0")
    assert resolve().mode == "off"


def test_saved_choice_rejects_unknown_modes(clean_env: Path) -> None:
    with pytest.raises(ValueError):
        save_choice("maybe")


def test_api_key_and_debug_overrides(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARFISH_TELEMETRY_API_KEY", "phc_other")
    monkeypatch.setenv("TELEMETRY_DEBUG", "1")
    s = resolve()
    assert s.api_key == "phc_other" and s.debug


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CI", "true", True),
        ("CI", "1", True),
        ("CI", "false", False),
        ("GITHUB_ACTIONS", "true", True),
    ],
)
def test_is_ci(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: bool
) -> None:
    monkeypatch.setenv(name, value)
    assert resolve().is_ci is expected


def test_not_ci_without_variables(clean_env: Path) -> None:
    assert resolve().is_ci is False
