"""Progress: a bar on a terminal, plain lines in a pipe, nothing when show_progress=False."""

from __future__ import annotations

import os
import pty
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
    assert "inputs done" in lines[-1] and "completed" in lines[-1]
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
    assert "12/12" in text
    assert "completed 12" in text and "dead 0" in text
    assert "starfish: slow:" not in text  # the bar, not log lines
