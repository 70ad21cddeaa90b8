"""Whole processes against a real loopback PostHog receiver: what arrives, when, and once."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from starfish.telemetry import outbox
from starfish.telemetry.schema import WIRE_FIELDS
from starfish.telemetry.service import NOTICE
from tests.posthog_receiver import PostHogReceiver
from tests.telemetry.conftest import JOB_ID, app_dir, capture_code, run_py, wait_deliverers_done


def _by_inputs(events: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for e in events:
        out.setdefault(e["properties"]["num_inputs"], []).append(e)
    return out


def test_the_receiver_gets_the_job_event_with_correct_types(receiver: PostHogReceiver) -> None:
    proc = run_py(capture_code(n=7), env={"CI": "true"})
    assert proc.returncode == 0 and proc.stderr == ""
    (event,) = receiver.wait_for_events(1)
    props = event["properties"]
    assert event["event"] == "data_factory_job_complete"
    assert uuid.UUID(event["distinct_id"]) and uuid.UUID(event["uuid"])
    assert props["num_inputs"] == 7 and type(props["num_inputs"]) is int
    assert props["target_reached"] is True
    assert props["execution_time"] == 1.5
    assert props["config"] == {"batch_size": 1, "max_concurrency": 50}
    assert props["count_summary"] == {"completed": 3, "failed": 1, "filtered": 0, "duplicate": 0}
    assert props["error_summary"] == {"ValueError": 1}
    assert props["job_id"] == JOB_ID
    assert props["is_ci"] is True and props["os"] in ("linux", "darwin", "windows")
    assert props["$process_person_profile"] is False and props["$geoip_disable"] is True
    for key in ("$os_version", "$os_distro", "$python_runtime", "$is_server"):
        assert key not in props
    request = receiver.requests[0]
    assert request["path"].startswith("/batch")
    assert request["json"]["api_key"].startswith("phc_")
    sent = set(request["json"]) | set(event) | {f"properties.{k}" for k in props}
    sent |= {f"properties.config.{k}" for k in props["config"]}
    sent |= {f"properties.count_summary.{k}" for k in props["count_summary"]}
    sent -= {"properties", "properties.config", "properties.count_summary"}
    assert sent <= set(WIRE_FIELDS), sent - set(WIRE_FIELDS)


def test_the_log_shows_exactly_what_left(receiver: PostHogReceiver) -> None:
    run_py(capture_code(n=4))
    (event,) = receiver.wait_for_events(1)
    wait_deliverers_done()
    (entry,) = outbox.read_log(app_dir())
    assert entry["status"] == "sent"
    assert entry["event"] == event
    assert outbox.read_outbox(app_dir()) == []


def test_opt_out_variants_send_nothing(
    receiver: PostHogReceiver, tmp_path_factory: pytest.TempPathFactory
) -> None:
    variants: list[tuple[dict[str, str], str]] = [
        ({"TELEMETRY_ENABLED": v}, "") for v in ("false", "0", "F", "no", "OFF")
    ]
    variants += [
        ({"DO_NOT_TRACK": "1"}, ""),
        ({"TELEMETRY_ENABLED": "true", "DO_NOT_TRACK": "yes"}, ""),
    ]
    variants += [({"TELEMETRY_ENABLED": ""}, "TELEMETRY_ENABLED=false\n")]
    dirs = []
    for env, dotenv in variants:
        cwd = tmp_path_factory.mktemp("cwd")
        (cwd / ".env").write_text(dotenv)
        data = tmp_path_factory.mktemp("appdata")
        dirs.append(data)
        code = (
            capture_code(n=1) + "print(sorted(m for m in sys.modules if m.startswith('posthog')))"
        )
        proc = run_py(code, env={**env, "STARFISH_LOCAL_STORAGE_DIR": str(data)}, cwd=cwd)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[]" and proc.stderr == ""
    # A saved `disable` with no variable set.
    data = tmp_path_factory.mktemp("appdata")
    (data / "telemetry.json").write_text('{"mode": "off"}')
    dirs.append(data)
    assert (
        run_py(
            capture_code(n=1),
            env={"TELEMETRY_ENABLED": "", "STARFISH_LOCAL_STORAGE_DIR": str(data)},
        ).returncode
        == 0
    )
    # Positive control: an enabled run after them all arrives, and it is the only event.
    run_py(capture_code(n=2))
    receiver.wait_for_events(1)
    for d in [*dirs, app_dir()]:
        wait_deliverers_done(d)
    assert [e["properties"]["num_inputs"] for e in receiver.events()] == [2]
    for d in dirs:
        assert not (d / outbox.OUTBOX_FILE).exists() and not (d / ".starfish_config").exists()


def test_the_parent_never_imports_posthog(receiver: PostHogReceiver) -> None:
    code = capture_code() + "from starfish.telemetry.service import default_service\n"
    code += "default_service().flush()\nprint('posthog' in sys.modules)"
    proc = run_py(code)
    assert proc.stdout.strip() == "False"
    receiver.wait_for_events(1)


EXIT_SCRIPT = capture_code(n=5) + "import time; print(time.time(), flush=True)\n"


def _exit_seconds(env: dict[str, str]) -> float:
    """Time from the script's last statement to the process being gone."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=30)
    gone = time.time()
    assert proc.returncode == 0 and err == "", err
    return gone - float(out.split()[-1])


@pytest.mark.parametrize("mode", ["ok", "500", "refuse", "hang"])
def test_exit_time_is_bounded_whatever_the_endpoint_does(make_receiver, mode: str) -> None:
    rec = make_receiver(mode)
    off = min(_exit_seconds({"TELEMETRY_ENABLED": "false", "CI": "1"}) for _ in range(2))
    on = min(_exit_seconds({"CI": "1"}) for _ in range(2))
    assert on - off < 1.0, f"{mode}: exit took {on:.3f}s with telemetry vs {off:.3f}s without"
    if mode in ("ok", "500", "hang"):
        assert rec.wait_for_events(1)  # the deliverer did reach the endpoint


def test_refused_events_wait_in_the_outbox_and_a_later_run_sends_them_once(make_receiver) -> None:
    refusing = make_receiver("refuse")
    run_py(capture_code(n=1))
    wait_deliverers_done()
    (waiting,) = outbox.read_outbox(app_dir())
    assert waiting["properties"]["num_inputs"] == 1

    ok = make_receiver("ok")
    assert ok.url != refusing.url
    run_py(capture_code(n=2))
    assert len(ok.wait_for_events(2)) == 2
    wait_deliverers_done()
    run_py(capture_code(n=3))
    ok.wait_for_events(3)
    wait_deliverers_done()
    events = ok.events()
    assert sorted(e["properties"]["num_inputs"] for e in events) == [1, 2, 3]
    assert len({e["uuid"] for e in events}) == 3
    assert waiting["uuid"] in {e["uuid"] for e in events}
    assert outbox.read_outbox(app_dir()) == []
    assert len(outbox.read_log(app_dir())) == 3


def test_a_500_keeps_the_event_for_later(make_receiver) -> None:
    failing = make_receiver("500")
    run_py(capture_code(n=1))
    failing.wait_for_events(1)
    wait_deliverers_done()
    assert len(outbox.read_outbox(app_dir())) == 1
    assert outbox.read_log(app_dir()) == []


def test_notice_once_per_app_data_dir_and_never_in_ci(receiver: PostHogReceiver) -> None:
    first = run_py(capture_code(), env={"CI": ""})
    second = run_py(capture_code(), env={"CI": ""})
    assert NOTICE in first.stderr and "TELEMETRY_ENABLED=false" in first.stderr
    assert second.stderr == ""
    assert first.stdout == second.stdout == ""
    events = receiver.wait_for_events(2)
    assert [e["properties"]["is_ci"] for e in events] == [False, False]


def test_no_notice_under_ci(receiver: PostHogReceiver) -> None:
    proc = run_py(capture_code(), env={"CI": "true"})
    assert proc.stderr == ""
    assert not (app_dir() / "telemetry_notice_shown").exists()


def test_fork_parent_and_child_each_send_their_own_events_once(receiver: PostHogReceiver) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    code = (
        capture_code(n=1)
        + "import os\npid = os.fork()\n"
        + "if pid == 0:\n"
        + "".join("    " + line + "\n" for line in capture_code(n=2).strip().splitlines())
        + "    sys.exit(0)\n"
        + "os.waitpid(pid, 0)\n"
        + capture_code(n=3)
    )
    proc = run_py(code, env={"CI": "1"})
    assert proc.returncode == 0, proc.stderr
    receiver.wait_for_events(3)
    wait_deliverers_done()
    got = _by_inputs(receiver.events())
    assert {k: len(v) for k, v in got.items()} == {1: 1, 2: 1, 3: 1}


def test_multiprocessing_children_send_their_events(receiver: PostHogReceiver) -> None:
    code = (
        "import multiprocessing, sys\n"
        "def work(n):\n"
        + "".join("    " + line + "\n" for line in capture_code(n=0).strip().splitlines())
        + "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('fork')\n"
        "    procs = [ctx.Process(target=work, args=(n,)) for n in (1, 2)]\n"
        "    [p.start() for p in procs]\n"
        "    [p.join() for p in procs]\n"
    ).replace("num_inputs=0", "num_inputs=n")
    proc = run_py(code, env={"CI": "1"})
    assert proc.returncode == 0, proc.stderr
    receiver.wait_for_events(2)
    wait_deliverers_done()
    got = _by_inputs(receiver.events())
    assert {k: len(v) for k, v in got.items()} == {1: 1, 2: 1}


@pytest.mark.parametrize("content", ["not a uuid at all", None])
def test_a_damaged_client_id_file_is_replaced_and_the_event_still_sent(
    receiver: PostHogReceiver, content: str | None
) -> None:
    path = app_dir() / ".starfish_config"
    if content is None:
        (path / "sub").mkdir(parents=True)
    else:
        path.write_text(content)
    proc = run_py(capture_code(), env={"CI": "1"})
    assert proc.returncode == 0 and proc.stderr == ""
    (event,) = receiver.wait_for_events(1)
    assert event["distinct_id"] == path.read_text().strip()


def test_an_old_bare_uuid_file_is_kept(receiver: PostHogReceiver) -> None:
    old = str(uuid.uuid4())
    (app_dir() / ".starfish_config").write_text(old)
    run_py(capture_code())
    (event,) = receiver.wait_for_events(1)
    assert event["distinct_id"] == old


def test_an_unwritable_app_data_dir_still_sends(receiver: PostHogReceiver, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_py(capture_code(n=9), env={"STARFISH_LOCAL_STORAGE_DIR": str(blocker / "data")})
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr
    (event,) = receiver.wait_for_events(1)
    assert event["properties"]["num_inputs"] == 9
    assert uuid.UUID(event["distinct_id"])


def test_local_mode_records_and_never_sends(receiver: PostHogReceiver) -> None:
    proc = run_py(capture_code(n=6), env={"TELEMETRY_ENABLED": "local", "CI": ""})
    assert proc.returncode == 0 and proc.stderr == ""
    (entry,) = outbox.read_log(app_dir())
    assert entry["status"] == "local"
    assert entry["event"]["properties"]["num_inputs"] == 6
    assert not (app_dir() / outbox.OUTBOX_FILE).exists()
    wait_deliverers_done()
    assert receiver.requests == []


def test_debug_prints_the_payload_instead_of_sending(receiver: PostHogReceiver) -> None:
    proc = run_py(capture_code(n=8), env={"TELEMETRY_DEBUG": "1", "CI": "1"})
    assert proc.returncode == 0
    (line,) = proc.stderr.splitlines()
    assert line.startswith("[telemetry] ")
    payload = json.loads(line.removeprefix("[telemetry] "))
    assert payload["event"] == "data_factory_job_complete"
    assert payload["properties"]["num_inputs"] == 8
    assert not (app_dir() / outbox.OUTBOX_FILE).exists()
    wait_deliverers_done()
    assert receiver.requests == []


def test_a_long_running_process_delivers_before_it_exits(receiver: PostHogReceiver) -> None:
    import subprocess
    import sys

    code = capture_code(n=11) + "import time\ntime.sleep(30)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "CI": "1"})
    try:
        events = receiver.wait_for_events(1, timeout=15)
        assert proc.poll() is None, "the process had exited: delivery came from atexit"
        assert [e["properties"]["num_inputs"] for e in events] == [11]
    finally:
        proc.kill()
        proc.wait()
