"""The progress line in a real terminal: tmux at 80 and 120 columns, read with `capture-pane`.

A job of 200 inputs calls a loopback model server; four inputs fail once, and the last input
waits for a file the test creates, saying so through the job's notice (`set_notice`). While it
waits, the screen is still: done is 199/200 whatever the timing, so the test reads it, widens
the window, reads it again, then lets the job finish. tmux is needed: `.ci/run` installs it
(apt-get) when missing, and without it these tests fail saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.openai_server import OpenAIServer

NAME = "questions_about_topics"
NOTICE = "waiting for http://127.0.0.1:18082/v1 (no answer for 10 s)"
JOB = textwrap.dedent(
    f"""
    import asyncio, sys
    from pathlib import Path
    from starfish import StructuredLLM, data_factory
    from starfish.data_factory.context import current_call
    from starfish.data_factory.progress import set_notice

    llm = StructuredLLM("m", prompt="About {{{{topic}}}}", base_url=sys.argv[1], price=(100, 100))
    gate = Path(sys.argv[2])

    @data_factory(max_concurrency=4, task_runner_timeout=600)
    async def {NAME}(i):
        if i % 50 == 7 and current_call().attempt == 1:
            raise ValueError("the first attempt fails")
        if i == 199:
            set_notice({NOTICE!r})
            while not gate.exists():
                await asyncio.sleep(0.02)
            set_notice(None)
        return (await llm.run(topic=str(i))).data

    {NAME}.run(i=list(range(200)))
    """
)


def _tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.fail(
            "tmux is not installed, and these tests read the progress line from a real "
            "terminal: apt-get install tmux (.ci/run does so when it is missing)"
        )
    return tmux


class Terminal:
    """One tmux session on a private server, running one command."""

    def __init__(self, command: list[str], width: int, env: dict[str, str]) -> None:
        self.tmux = [_tmux(), "-L", f"starfish-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        shell = " ".join(map(_quote, command)) + "; echo EXIT=$?; sleep 600"
        self._run("new-session", "-d", "-s", "t", "-x", str(width), "-y", "20", shell, env=env)

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            [*self.tmux, *args], capture_output=True, text=True, timeout=30, env=env
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def screen(self) -> list[str]:
        return [line.rstrip() for line in self._run("capture-pane", "-p", "-t", "t").splitlines()]

    def resize(self, width: int) -> None:
        self._run("resize-window", "-t", "t", "-x", str(width), "-y", "20")

    def wait_for(self, found: Callable[[list[str]], bool], what: str) -> list[str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = self.screen()
            if found(screen):
                return screen
            if any(line.startswith("EXIT=") for line in screen):
                break
            time.sleep(0.05)
        raise AssertionError(f"no {what} on the screen:\n" + "\n".join(self.screen()))

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=30)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def make(command: list[str], width: int) -> Terminal:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
        made.append(Terminal(command, width, env))
        return made[-1]

    yield make
    for term in made:
        term.close()


def _progress(screen: list[str]) -> str | None:
    return next((line for line in screen if re.search(r"\d+/200 ", line)), None)


LINE = re.compile(
    r"(?P<done>\d+)/200 (?P<rate>[\d.k]+)/s ETA (?P<eta>\d+:\d\d)"
    r"(?P<elapsed> elapsed \d+:\d\d)? (?P<failed>\d+) failed (?P<requests>\d+) requests "
    r"\$(?P<cost>\d+\.\d+)$"
)


def test_the_line_fits_80_and_120_columns_in_its_order_and_shows_the_notice(
    tmp_path: Path, terminal: Callable[..., Terminal]
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    gate = tmp_path / "gate"
    with OpenAIServer() as server:
        term = terminal([sys.executable, str(script), server.url, str(gate)], 80)

        # a rate (and so an ETA) is shown half a second into a run: until then `–/s ETA ?`
        screen = term.wait_for(
            lambda s: any("199/200" in line and "–/s" not in line for line in s), "199/200"
        )
        line = _progress(screen)
        assert line is not None and len(line) < 80, screen
        # the name is cut first (the bar stays); the rest in order: done, rate, ETA, failures,
        # then the model's requests and cost; elapsed went for lack of room
        name, rest = line.split(" ", 1)
        assert name.endswith("…") and NAME.startswith(name[:-1]), line
        bar, rest = rest.split(" ", 1)
        assert set(bar) <= {"█", "░"} and len(bar) >= 10, line
        found = LINE.match(rest)
        assert found, line
        assert found["done"] == "199" and found["failed"] == "4" and found["eta"] == "0:00"
        assert found["requests"] == "199" == str(len(server.requests))
        assert float(found["cost"]) > 0
        # the notice, on the line under it, while it is set
        assert screen[screen.index(line) + 1].strip() == NOTICE, screen

        term.resize(120)
        screen = term.wait_for(
            lambda s: any(NAME in line and "199/200" in line for line in s), "the full name"
        )
        line = _progress([line for line in screen if NAME in line])
        assert line is not None and len(line) < 120, screen
        assert line.startswith(f"{NAME} ")
        found = LINE.match(line.split(" ", 2)[2])
        assert found and found["elapsed"], line  # labelled, now that there is room

        gate.touch()
        screen = term.wait_for(lambda s: "EXIT=0" in s, "EXIT=0")
    final = [line for line in screen if "200/200" in line]
    assert final, screen
    found = LINE.match(final[-1].split(" ", 2)[2])
    assert found and found["requests"] == "200", final
    assert NOTICE not in "\n".join(screen[screen.index(final[-1]) :])  # cleared at the end
