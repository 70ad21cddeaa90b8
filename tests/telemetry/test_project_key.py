"""Without a real project key the default is honest: `local`, nothing spawned, no claim to send."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from starfish.telemetry import outbox
from starfish.telemetry.settings import NO_KEY_REASON, POSTHOG_API_KEY, has_project_key, resolve
from tests.conftest import TEST_API_KEY
from tests.posthog_receiver import PostHogReceiver
from tests.telemetry.conftest import app_dir, capture_code, run_py, wait_deliverers_done

REASON = "no project key is configured; events are kept on this machine"


@pytest.fixture
def no_key(receiver: PostHogReceiver, monkeypatch: pytest.MonkeyPatch) -> PostHogReceiver:
    """Nothing opted in or out, no key: a first-time user of a build without a project key."""
    monkeypatch.delenv("TELEMETRY_ENABLED")
    monkeypatch.delenv("STARFISH_TELEMETRY_API_KEY")
    monkeypatch.setenv("CI", "")
    return receiver


def test_the_packaged_key_is_a_placeholder_not_a_project_key() -> None:
    assert not has_project_key(POSTHOG_API_KEY)
    assert has_project_key(TEST_API_KEY)
    assert NO_KEY_REASON == REASON


def test_default_mode_is_local_with_the_reason(no_key: PostHogReceiver) -> None:
    s = resolve()
    assert (s.mode, s.reason) == ("local", REASON)
    proc = subprocess.run(
        [sys.executable, "-m", "starfish", "telemetry", "status", "--json"],
        capture_output=True,
        text=True,
    )
    info = json.loads(proc.stdout)
    assert (info["mode"], info["reason"]) == ("local", REASON)
    text = subprocess.run(
        [sys.executable, "-m", "starfish", "telemetry", "status"], capture_output=True, text=True
    ).stdout
    assert f"mode:      local  ({REASON})" in text


@pytest.mark.parametrize("enabled", ["", "true"])
def test_without_a_key_nothing_is_spawned_sent_or_claimed(
    no_key: PostHogReceiver, monkeypatch: pytest.MonkeyPatch, enabled: str
) -> None:
    monkeypatch.setenv("TELEMETRY_ENABLED", enabled)
    proc = run_py(capture_code(n=4))
    assert proc.returncode == 0
    assert proc.stderr == "", "a notice claiming that data is sent was printed"
    wait_deliverers_done()
    assert no_key.requests == []
    assert not (app_dir() / outbox.OUTBOX_FILE).exists()
    (entry,) = outbox.read_log(app_dir())
    assert entry["status"] == "local" and entry["event"]["properties"]["num_inputs"] == 4


def test_a_real_key_in_the_environment_turns_sending_on(
    no_key: PostHogReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARFISH_TELEMETRY_API_KEY", TEST_API_KEY)
    assert resolve().mode == "on"
    run_py(capture_code(n=5))
    (event,) = no_key.wait_for_events(1)
    assert event["properties"]["num_inputs"] == 5
    assert no_key.requests[0]["json"]["api_key"] == TEST_API_KEY
