"""Real subprocesses: kill -9 in the middle of a job and resume it elsewhere; the job event."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from starfish.jobs import list_jobs, load_job

N = 500

JOB_SCRIPT = textwrap.dedent(
    """
    import asyncio, os
    from starfish import data_factory

    @data_factory(max_concurrency=8, show_progress=False)
    async def gen(i, log):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {i}\\n")
        await asyncio.sleep(0.02)
        return [{"i": i, "square": i * i}]

    gen.run(i=list(range(%d)), log=%r)
    """
)

RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from starfish.data_factory import resume_from_checkpoint

    records = resume_from_checkpoint(sys.argv[1])
    print(json.dumps(records))
    """
)


def _completed(db: Path) -> set[int]:
    if not db.exists():
        return set()
    conn = sqlite3.connect(db)
    try:
        return {
            k & 0xFFFFFFFF
            for (k,) in conn.execute("SELECT key FROM inputs WHERE status = 'completed'")
        }
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def test_kill_9_mid_job_then_resume_in_a_new_process(tmp_path):
    log = tmp_path / "calls.log"
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT % (N, str(log)))
    db = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    deadline = time.monotonic() + 30
    while len(_completed(db)) < 60 and time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _completed(db)
    assert 60 <= len(done_before) < N
    [info] = list_jobs()
    assert info.status == "abandoned"  # killed: stored as running, but its process is gone
    first_pid = proc.pid

    resume = tmp_path / "resume.py"
    resume.write_text(RESUME_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(resume), info.job_id],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert records == [{"i": i, "square": i * i} for i in range(N)]

    calls = [line.split() for line in log.read_text().splitlines()]
    rerun = [int(i) for pid, i in calls if int(pid) != first_pid]
    assert not done_before & set(rerun), "an input completed before the kill ran again"
    assert set(rerun) | done_before == set(range(N))
    after = load_job(info.job_id)
    assert after.status == "completed" and after.run_mode == "resume_from_checkpoint"
    assert after.counts["completed"] == N and after.dead_queue == []


EVENT_SCRIPT = textwrap.dedent(
    """
    from starfish import data_factory

    @data_factory(show_progress=False, max_concurrency=3, dead_queue_threshold=2)
    async def gen(i):
        if i == 2:
            raise ValueError("secret user text")
        if i == 4:
            raise KeyError("another secret")
        return [{"i": i}]

    print(len(gen.run(i=list(range(6)))), gen.job_id)
    """
)


def test_job_event_arrives_at_the_receiver_with_counts_and_types(receiver, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(EVENT_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    n, _job_id = out.stdout.split()
    assert n == "4"
    events = [
        e for e in receiver.wait_for_events(1) if e.get("event") == "data_factory_job_complete"
    ]
    assert len(events) == 1
    props = events[0]["properties"]
    assert props["count_summary"] == {"completed": 4, "failed": 4, "filtered": 0, "duplicate": 0}
    assert props["error_summary"] == {"ValueError": 2, "KeyError": 2}
    assert props["executor"] == "local"
    assert props["num_inputs"] == 6 and props["run_mode"] == "normal"
    assert props["target_reached"] is False
    assert props["config"]["max_concurrency"] == 3
    assert isinstance(props["execution_time"], float)
    assert "secret" not in json.dumps(events[0])


OUTCOME_SCRIPT = textwrap.dedent(
    """
    import sys
    from starfish import data_factory

    @data_factory(show_progress=False, max_concurrency=1, dead_queue_threshold=1, stop_window=50)
    async def gen(i):
        if sys.argv[1] == "failed" or i >= 2:
            raise ConnectionError("secret endpoint text")
        return [{"i": i}]

    try:
        gen.run(i=list(range(int(sys.argv[2]))))
    finally:
        print(gen.job_id)
    """
)


@pytest.mark.parametrize(
    ("outcome", "n", "completed", "failed"),
    # 2 completions, then failures: the 50th outcome makes a full window, 48 of 50 failed
    [("stopped", 100, 2, 48), ("failed", 2, 0, 2)],
    ids=["circuit-breaker", "nothing-completed"],
)
def test_a_stopped_or_failed_job_sends_exactly_one_event(
    receiver, tmp_path, outcome, n, completed, failed
):
    script = tmp_path / "job.py"
    script.write_text(OUTCOME_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), outcome, str(n)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr  # JobStopped or OutputError, both uncaught
    assert load_job(out.stdout.split()[-1]).status == outcome
    receiver.wait_for_events(1)
    time.sleep(0.3)  # a second event, if one were sent, would have arrived by now
    events = receiver.events()
    assert [e["event"] for e in events] == ["data_factory_job_complete"]
    props = events[0]["properties"]
    assert props["count_summary"]["completed"] == completed
    assert props["error_summary"] == {"ConnectionError": failed}
    assert "secret" not in json.dumps(events[0])


def test_ctrl_c_marks_the_job_interrupted_with_its_progress_stored(tmp_path, receiver):
    log = tmp_path / "calls.log"
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT % (N, str(log)))
    db = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len(_completed(db)) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    [info] = list_jobs()
    # Uncaught, the KeyboardInterrupt still ends the script the way Ctrl-C does (by SIGINT),
    # but prints one line with the resume command instead of a traceback (issue 17, 6).
    assert proc.returncode == -signal.SIGINT, err
    assert b"Traceback" not in err
    said = [line for line in err.decode().splitlines() if "interrupted" in line]
    assert said == [
        f"starfish: job {info.job_id} interrupted, its progress stored; "
        f"continue it with: starfish jobs resume {info.job_id}"
    ]
    assert info.status == "interrupted"
    assert info.counts["completed"] == len(_completed(db)) >= 20
    [event] = receiver.wait_for_events(1)
    assert event["properties"]["count_summary"]["completed"] == info.counts["completed"]
