"""Progress: a bar on a terminal, plain lines in a pipe, nothing when show_progress=False."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import textwrap

JOB = textwrap.dedent(
    """
    import asyncio, sys
    from starfish.data_factory import progress
    progress.LOG_INTERVAL = 0.05
    from starfish import data_factory

    @data_factory(max_concurrency=2, show_progress={show})
    async def slow(i):
        await asyncio.sleep(0.03)
        return {{"i": i}}

    slow.run(i=list(range(12)))
    """
)


def _run_in_pipe(show: bool) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", JOB.format(show=show)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_in_a_pipe_progress_is_plain_lines_on_stderr() -> None:
    err = _run_in_pipe(show=True)
    lines = [line for line in err.splitlines() if line.startswith("starfish: slow:")]
    assert lines, err
    line = r"\d+/12 inputs done · \S+/s · ETA \S+ · elapsed \d+:\d\d \(completed"
    assert re.search(line, lines[-1]), lines[-1]
    assert "\x1b[" not in err  # no terminal control codes: no bar


def test_show_progress_false_is_quiet() -> None:
    assert _run_in_pipe(show=False) == ""


def test_on_a_terminal_progress_is_a_bar_with_counts() -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout and stderr are a 120-column pseudo-terminal
        os.environ["COLUMNS"] = "120"
        os.execv(sys.executable, [sys.executable, "-c", JOB.format(show=True)])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    text = out.decode(errors="replace")
    assert "12/12" in text and "0 failed" in text and "ETA 0:00" in text
    assert "starfish: slow:" not in text  # the bar, not log lines


RESUMED = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from starfish.data_factory import progress, resume_from_checkpoint
    progress.LOG_INTERVAL = 0.05
    from starfish import data_factory

    gate, fixed = Path(sys.argv[1]), Path(sys.argv[2])

    @data_factory(max_concurrency=4, dead_queue_threshold=1, task_runner_timeout=600)
    async def work(i):
        if i >= 120 and not fixed.exists():
            raise ValueError("not yet")
        if i == 199 and fixed.exists():
            while not gate.exists():
                await asyncio.sleep(0.02)
        return {"i": i}

    try:
        work.run(i=list(range(200)))
    except Exception:
        pass  # a job that stopped early: what is not completed runs on resume
    fixed.touch()
    print("RESUMING", file=sys.stderr, flush=True)
    resume_from_checkpoint(work.job_id)
    """
)


def test_after_a_resume_done_and_completed_are_one_count() -> None:
    # The first run completes inputs 0-119 and not the rest; the resume does the rest, the last
    # input waiting for a file, so its log lines hold still at 199 done. Done counts the
    # earlier run's inputs, and the same line's `completed` is the job's, not this run's.
    import tempfile
    import time
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        gate, fixed = Path(tmp) / "gate", Path(tmp) / "fixed"
        proc = subprocess.Popen(
            [sys.executable, "-c", RESUMED, str(gate), str(fixed)],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        resumed = False
        line = ""
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            resumed = resumed or line.startswith("RESUMING")
            if (resumed and "199/200 inputs done" in line) or time.monotonic() > deadline:
                break
        gate.touch()
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    found = re.search(r"(\d+)/200 inputs done .*\(completed (\d+) ", line)
    assert found, line
    assert found.group(1) == found.group(2) == "199"


def test_the_line_keeps_its_order_at_any_width_and_cuts_the_name_first() -> None:
    from starfish.data_factory.progress import LineParts, format_line

    parts = LineParts(
        name="a_rather_long_job_name_for_the_dataset",
        done=8639,
        total=20000,
        elapsed=10.4,
        rate=812.3,
        failed=3,
        requests=8642,
        cost_usd=1.234,
    )
    kept = ["8639/20000", "812/s", "ETA 0:14", "3 failed", "8642 requests $1.2340"]
    wide = format_line(parts, 200)
    assert wide.startswith(parts.name + " ") and "elapsed 0:10" in wide
    for width in (80, 100, 120):
        line = format_line(parts, width)
        assert len(line) < width
        positions = [line.index(part) for part in kept]
        assert positions == sorted(positions), line
    line = format_line(parts, 80)
    assert line.startswith("a_rather_…") or not line.startswith(parts.name), line
    assert "█" in line  # the bar outlives the name's tail
    narrow = format_line(parts, 50)  # no bar, no name: the numbers stay
    assert len(narrow) < 50 and narrow.startswith("8639/20000 812/s ETA 0:14 3 failed"), narrow


def test_a_job_that_drops_records_shows_the_kept_and_duplicate_counts() -> None:
    from starfish.data_factory.progress import LineParts, format_line

    parts = LineParts(
        name="qa",
        done=1200,
        total=2000,
        elapsed=1.5,
        rate=812.3,
        failed=3,
        requests=1510,
        duplicate=300,
        filtered=12,
        kept=1188,
    )
    order = [
        "1200/2000",
        "812/s",
        "ETA 0:01",
        "3 failed",
        "1188 kept, 300 duplicate",
        "1510 requests",
    ]
    for width in (80, 100, 120):
        line = format_line(parts, width)
        assert len(line) < width
        positions = [line.index(part) for part in order]
        assert positions == sorted(positions), line
    assert "12 filtered" in format_line(parts, 200)  # filtered: only when there is room
    narrow = format_line(parts, 60)
    assert len(narrow) < 60 and "3 failed 1188 kept 300 dup" in narrow, narrow
    plain = format_line(LineParts(name="qa", done=5, total=9, elapsed=1, rate=5, failed=0), 80)
    assert "kept" not in plain  # nothing dropped: done is the kept count
