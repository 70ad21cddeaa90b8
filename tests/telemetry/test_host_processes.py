"""Telemetry inside every kind of host process: forks that end with `os._exit`, frozen apps, a
hostile working directory, many quick runs against an endpoint that never answers.

Each test runs whole processes against the loopback receiver and checks what arrived, how often,
and which processes were left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from starfish.telemetry import outbox
from tests.posthog_receiver import PostHogReceiver
from tests.telemetry.conftest import (
    app_dir,
    capture_code,
    live_deliverers,
    run_py,
    wait_deliverers_done,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="needs /proc to see detached deliverers"
)

JOB = textwrap.dedent(
    """
    import os, sys
    from starfish import data_factory

    @data_factory(show_progress=False, storage="in_memory", max_concurrency=4)
    async def gen(i):
        return [{"i": i}]
    """
)


def _inputs_count(events: list[dict]) -> dict[int, int]:
    """num_inputs -> how many events carried it (each job here has a distinct input count)."""
    out: dict[int, int] = {}
    for e in events:
        n = e["properties"]["num_inputs"]
        out[n] = out.get(n, 0) + 1
    return out


# 1. A finished job's event survives the process ending at once ----------------------------


def test_a_forked_child_ending_with_os_exit_keeps_its_job_event(receiver: PostHogReceiver) -> None:
    code = JOB + textwrap.dedent(
        """
        gen.run(i=list(range(1)))
        pid = os.fork()
        if pid == 0:
            gen.run(i=list(range(2)))
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )
    proc = run_py(code, env={"CI": "1"})
    assert proc.returncode == 0, proc.stderr
    receiver.wait_for_events(2)
    wait_deliverers_done()
    events = receiver.events()
    assert _inputs_count(events) == {1: 1, 2: 1}
    assert len({e["uuid"] for e in events}) == 2
    assert outbox.read_outbox(app_dir()) == []


def test_a_process_ending_with_os_exit_right_after_a_job_keeps_its_event(
    receiver: PostHogReceiver,
) -> None:
    proc = run_py(JOB + "gen.run(i=list(range(3)))\nos._exit(0)\n", env={"CI": "1"})
    assert proc.returncode == 0, proc.stderr
    (waiting,) = outbox.read_outbox(app_dir())
    assert waiting["properties"]["num_inputs"] == 3
    # The next run (or a live deliverer) sends it, once, together with its own.
    assert run_py(JOB + "gen.run(i=list(range(4)))\n", env={"CI": "1"}).returncode == 0
    receiver.wait_for_events(2)
    wait_deliverers_done()
    events = receiver.events()
    assert _inputs_count(events) == {3: 1, 4: 1}
    assert waiting["uuid"] in {e["uuid"] for e in events}
    assert outbox.read_outbox(app_dir()) == []


# 5. Frozen applications: never spawn `sys.executable` -------------------------------------


def _fake_app(tmp_path: Path) -> tuple[Path, Path]:
    """An executable that records being started: what a frozen app's sys.executable would do."""
    marker = tmp_path / "app-started-again"
    app = tmp_path / "frozen-app"
    app.write_text(f"#!/bin/sh\necho started >> {marker}\n")
    app.chmod(0o755)
    return app, marker


FROZEN_SHIM = "import sys\nsys.frozen = True\nsys.executable = {app!r}\n"


def test_a_frozen_app_delivers_from_a_thread_and_never_starts_itself(
    receiver: PostHogReceiver, tmp_path: Path
) -> None:
    app, marker = _fake_app(tmp_path)
    code = (
        FROZEN_SHIM.format(app=str(app))
        + capture_code(n=5)
        + textwrap.dedent(
            """
            import time
            from starfish.telemetry import outbox
            from starfish.paths import app_data_dir
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if any(e.get("status") == "sent" for e in outbox.read_log(app_data_dir())):
                    break
                time.sleep(0.05)
            """
        )
    )
    proc = run_py(code, env={"CI": "1"})
    assert proc.returncode == 0, proc.stderr
    (event,) = receiver.wait_for_events(1)
    assert event["properties"]["num_inputs"] == 5
    assert not marker.exists(), "the frozen app was started again"
    assert live_deliverers() == []
    assert outbox.read_outbox(app_dir()) == []


def test_a_quick_frozen_app_leaves_its_event_in_the_outbox(
    receiver: PostHogReceiver, tmp_path: Path
) -> None:
    app, marker = _fake_app(tmp_path)
    proc = run_py(FROZEN_SHIM.format(app=str(app)) + capture_code(n=6), env={"CI": "1"})
    assert proc.returncode == 0, proc.stderr
    time.sleep(0.5)
    assert not marker.exists(), "the frozen app was started again"
    (waiting,) = outbox.read_outbox(app_dir())
    assert waiting["properties"]["num_inputs"] == 6
    # An ordinary run later sends it, once.
    run_py(capture_code(n=7), env={"CI": "1"})
    receiver.wait_for_events(2)
    wait_deliverers_done()
    assert _inputs_count(receiver.events()) == {6: 1, 7: 1}


# 6. Neither the working directory nor PYTHONPATH can shadow the SDK ------------------------


def _trap(directory: Path, marker: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "posthog.py").write_text(
        f"open({str(marker)!r}, 'a').write('the deliverer ran posthog.py from ' + __file__)\n"
        "raise SystemExit('booby trap')\n"
    )


def test_a_posthog_py_in_the_working_directory_is_never_run(
    receiver: PostHogReceiver, tmp_path: Path
) -> None:
    cwd, marker = tmp_path / "project", tmp_path / "trap-fired"
    _trap(cwd, marker)
    proc = run_py(capture_code(n=8), env={"CI": "1"}, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    (event,) = receiver.wait_for_events(1)
    wait_deliverers_done()
    assert event["properties"]["num_inputs"] == 8
    assert not marker.exists(), marker.read_text()


def test_a_posthog_py_on_pythonpath_is_never_run(receiver: PostHogReceiver, tmp_path: Path) -> None:
    trap_dir, marker = tmp_path / "on-path", tmp_path / "trap-fired"
    _trap(trap_dir, marker)
    proc = run_py(capture_code(n=9), env={"CI": "1", "PYTHONPATH": str(trap_dir)}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (event,) = receiver.wait_for_events(1)
    wait_deliverers_done()
    assert event["properties"]["num_inputs"] == 9
    assert not marker.exists(), marker.read_text()


# 7. Bounded background work ---------------------------------------------------------------


def test_quick_runs_against_a_blackhole_leave_at_most_one_deliverer(make_receiver) -> None:
    make_receiver("blackhole")
    alive = []
    for n in range(20):
        proc = run_py(capture_code(n=n), env={"CI": "1"})
        assert proc.returncode == 0, proc.stderr
        alive.append(len(live_deliverers()))
    assert max(alive) <= 1, f"deliverers alive after each run: {alive}"
    # Each deliverer is bounded in time, and nothing was lost or sent: all 20 wait.
    wait_deliverers_done(timeout=30)
    pending = outbox.read_outbox(app_dir())
    assert sorted(e["properties"]["num_inputs"] for e in pending) == list(range(20))
    # Once the endpoint answers, one run sends them all, each once.
    ok = make_receiver("ok")
    run_py(capture_code(n=20), env={"CI": "1"})
    ok.wait_for_events(21, timeout=20)
    wait_deliverers_done()
    events = ok.events()
    assert _inputs_count(events) == {n: 1 for n in range(21)}
    assert outbox.read_outbox(app_dir()) == []


ZOMBIES = textwrap.dedent(
    """
    import os, time
    from pathlib import Path

    def zombie_children():
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                found.append(int(entry.name))
        return found

    print("captured", flush=True)
    sys.stdin.readline()  # the test says: your deliverer has finished
    deadline = time.monotonic() + 3
    while zombie_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("zombies", zombie_children(), flush=True)
    """
)


def test_a_long_running_process_reaps_its_deliverer(receiver: PostHogReceiver) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", capture_code(n=10) + ZOMBIES],
        env={**os.environ, "CI": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "captured"
        (event,) = receiver.wait_for_events(1, timeout=15)
        assert event["properties"]["num_inputs"] == 10
        deadline = time.monotonic() + 20
        while live_deliverers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live_deliverers() == []
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "zombies []"
    finally:
        proc.kill()
        proc.wait()


def test_concurrent_processes_and_deliverers_send_every_event_exactly_once(
    receiver: PostHogReceiver,
) -> None:
    """Writers append while deliverers replace the outbox: no event lost, none sent twice."""
    code = textwrap.dedent(
        """
        import sys, time
        from starfish.telemetry import TelemetryData
        from starfish.telemetry.service import capture_job_event
        first = int(sys.argv[1])
        for n in range(first, first + 25):
            capture_job_event(TelemetryData(num_inputs=n))
            time.sleep(0.04)  # long enough for this process's deliverer to start meanwhile
        """
    )
    env = {**os.environ, "CI": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(first)], env=env)
        for first in range(0, 200, 25)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    # Whoever found a deliverer alive left its events to it: it sent them before it ended.
    receiver.wait_for_events(200, timeout=30)
    wait_deliverers_done()
    assert _inputs_count(receiver.events()) == {n: 1 for n in range(200)}
    # And a later run finds nothing left to resend.
    run_py(capture_code(n=1000), env={"CI": "1"})
    receiver.wait_for_events(201, timeout=30)
    wait_deliverers_done()
    got = _inputs_count(receiver.events())
    assert got == {n: 1 for n in [*range(200), 1000]}
    assert outbox.read_outbox(app_dir()) == []
