"""AnalyticsService in-process: the no-op when off, never raising, local recording, verbose."""

from __future__ import annotations

import subprocess
import sys

import pytest

from starfish.telemetry import (
    AnalyticsConfig,
    AnalyticsService,
    Event,
    TelemetryData,
    outbox,
)
from starfish.telemetry.schema import JOB_EVENT
from starfish.telemetry.service import capture_job_event, default_service
from tests.telemetry.conftest import JOB_ID, app_dir


def test_inactive_service_is_a_no_op() -> None:
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", active=False))
    svc.capture_event(Event(JOB_EVENT, {"num_inputs": 1}, client_id="c"))
    svc.flush()
    svc.shutdown()
    assert svc.mode == "off"
    assert len(svc._queue) == 0 and not svc._thread_started
    assert list(app_dir().iterdir()) == []


def test_capture_job_event_with_telemetry_off_does_nothing() -> None:
    capture_job_event(TelemetryData(job_id=JOB_ID))
    assert list(app_dir().iterdir()) == []


def test_off_never_imports_posthog_nor_starts_a_thread() -> None:
    code = (
        "import sys, threading\n"
        "from starfish.telemetry import TelemetryData\n"
        "from starfish.telemetry.service import capture_job_event\n"
        "capture_job_event(TelemetryData(num_inputs=1))\n"
        "print(any(m.startswith('posthog') for m in sys.modules), threading.active_count())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "1"]


def test_importing_telemetry_is_cheap() -> None:
    code = (
        "import sys, threading\n"
        "import starfish.telemetry\n"
        "print(any(m.startswith(('posthog', 'dotenv', 'requests')) for m in sys.modules),"
        " threading.active_count())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "1"]


@pytest.mark.parametrize(
    "event",
    [
        Event(JOB_EVENT, None, client_id="c"),  # type: ignore[arg-type]
        Event(JOB_EVENT, {"config": object(), "error_summary": [1, 2]}, client_id="c"),
        Event("not_allowed", {"num_inputs": 1}, client_id="c"),
        Event(JOB_EVENT, {1: 2}, client_id="c"),  # type: ignore[dict-item]
    ],
)
def test_capture_never_raises_and_drops_what_is_not_allowed(event: Event) -> None:
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", local=True))
    svc.capture_event(event)
    svc.capture_job(object())  # type: ignore[arg-type]
    svc.flush()
    for entry in outbox.read_log(app_dir()):
        assert set(entry["event"]["properties"]) <= {
            "config",
            "error_summary",
            "python_version",
            "os",
            "is_ci",
        }


def test_local_mode_records_the_event_in_the_log_on_flush() -> None:
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", local=True, ci=False))
    svc.capture_event(Event(JOB_EVENT, {"num_inputs": 3, "secret": "x"}, client_id="client"))
    assert outbox.read_log(app_dir()) == []  # nothing on the caller's thread
    svc.flush()
    (entry,) = outbox.read_log(app_dir())
    assert entry["status"] == "local"
    event = entry["event"]
    assert event["distinct_id"] == "client"
    assert event["properties"]["num_inputs"] == 3 and "secret" not in event["properties"]
    assert event["properties"]["is_ci"] is False
    assert not (app_dir() / outbox.OUTBOX_FILE).exists()


def test_the_log_is_bounded() -> None:
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", local=True))
    for i in range(outbox.MAX_LOG + 5):
        svc.capture_event(Event(JOB_EVENT, {"num_inputs": i}, client_id="c"))
        if i % 400 == 0:
            svc.flush()
    svc.flush()
    entries = outbox.read_log(app_dir())
    assert len(entries) == outbox.MAX_LOG
    assert entries[-1]["event"]["properties"]["num_inputs"] == outbox.MAX_LOG + 4
    assert len((app_dir() / outbox.LOG_FILE).read_text().splitlines()) == outbox.MAX_LOG


def test_the_outbox_is_bounded() -> None:
    events = [{"uuid": str(i), "event": JOB_EVENT} for i in range(outbox.MAX_OUTBOX + 10)]
    assert outbox.append_outbox(app_dir(), events[:600], timeout=1)
    assert outbox.append_outbox(app_dir(), events[600:], timeout=1)
    kept = outbox.read_outbox(app_dir())
    assert len(kept) == outbox.MAX_OUTBOX and kept[-1]["uuid"] == str(outbox.MAX_OUTBOX + 9)


def test_verbose_prints_captured_events(capsys: pytest.CaptureFixture[str]) -> None:
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", local=True, verbose=True))
    svc.capture_event(Event(JOB_EVENT, {"num_inputs": 2}, client_id="c"))
    svc.shutdown()
    assert f"[telemetry] Captured event: {JOB_EVENT}" in capsys.readouterr().err


def test_shutdown_ignores_later_captures() -> None:
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", local=True))
    svc.shutdown()
    svc.capture_event(Event(JOB_EVENT, {"num_inputs": 2}, client_id="c"))
    assert len(svc._queue) == 0


def test_default_service_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_ENABLED", "local")
    svc = default_service()
    assert svc.mode == "local" and default_service() is svc
    assert svc.endpoint == "http://127.0.0.1:9"


def test_verbose_names_an_event_the_allow_list_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", local=True, verbose=True))
    svc.capture_event(Event("page_view", {"num_inputs": 2}, client_id="c"))
    svc.flush()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("[telemetry] ") and "'page_view'" in line
    assert "not sent" in line.lower() and "allow-list" in line
    assert outbox.read_log(app_dir()) == []


def test_verbose_says_why_nothing_is_sent_when_off(capsys: pytest.CaptureFixture[str]) -> None:
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", active=False, verbose=True))
    svc.capture_event(Event(JOB_EVENT, {"num_inputs": 2}, client_id="c"))
    (line,) = capsys.readouterr().err.splitlines()
    assert JOB_EVENT in line and "not sent" in line.lower() and "off" in line


def test_verbose_prints_the_seed_line_for_a_sent_event(receiver) -> None:
    code = (
        "import os\n"
        "from starfish.telemetry import AnalyticsConfig, AnalyticsService, Event\n"
        "from starfish.telemetry.schema import JOB_EVENT\n"
        "svc = AnalyticsService(AnalyticsConfig(api_key=os.environ['STARFISH_TELEMETRY_API_KEY'],"
        " endpoint=os.environ['POSTHOG_HOST'], verbose=True, ci=True))\n"
        "svc.capture_event(Event(JOB_EVENT, {'num_inputs': 2}, client_id='c'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"[telemetry] Captured event: {JOB_EVENT} with data: {{")
    assert "'num_inputs': 2" in line
    (event,) = receiver.wait_for_events(1)
    assert event["properties"]["num_inputs"] == 2


def test_a_new_event_type_is_one_schema_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from starfish.telemetry.schema import EVENTS, JOB_FIELDS, clean_wire_properties

    monkeypatch.setitem(EVENTS, "job_resumed", {"num_inputs": JOB_FIELDS["num_inputs"]})
    svc = AnalyticsService(AnalyticsConfig(api_key="phc_x", local=True, verbose=True))
    svc.capture_event(Event("job_resumed", {"num_inputs": 2, "prompt": "x"}, client_id="c"))
    svc.flush()
    assert "Captured event: job_resumed" in capsys.readouterr().err
    (entry,) = outbox.read_log(app_dir())
    props = entry["event"]["properties"]
    assert props["num_inputs"] == 2 and "prompt" not in props
    assert clean_wire_properties("job_resumed", props) == {
        "num_inputs": 2,
        "python_version": props["python_version"],
        "os": props["os"],
        "is_ci": props["is_ci"],
    }
