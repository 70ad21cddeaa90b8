"""The viewer as users run it: the real `starfish ui` command serving a real job database."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Viewer:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url


@pytest.fixture
def start_ui() -> Iterator[Callable[..., Viewer]]:
    """Start `starfish ui` with the given arguments; it is stopped with SIGINT (Ctrl-C)."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, token: str | None = None) -> Viewer:
        port = free_port()
        cmd = [sys.executable, "-m", "starfish", "ui", "--port", str(port), *args]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}/"
        probe = url + "api/jobs" + (f"?token={token}" if token else "")
        deadline = time.monotonic() + 60
        while True:  # until it answers (a condition, not a sleep that hopes)
            try:
                if get(probe)[0] == 200:
                    return Viewer(proc, url)
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"starfish ui did not start: {proc.communicate()[0]}")
            time.sleep(0.05)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def make_job(n: int = 60, xss_at: int | None = None, die_every: int = 0) -> str:
    """A finished job of `n` inputs in this test's database: input i fails for good when
    `die_every` divides i + 1 (two attempts), and input `xss_at` holds markup."""
    import asyncio

    from starfish import data_factory

    @data_factory(max_concurrency=8, show_progress=False, dead_queue_threshold=2, stop_threshold=0)
    async def qa(i: int) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        if die_every and (i + 1) % die_every == 0:
            raise TimeoutError(f"input {i} timed out")
        text = XSS if i == xss_at else f"question {i}"
        return [{"i": i, "question": text}]

    with contextlib.suppress(Exception):  # a job with dead inputs may end `failed`
        qa.run(i=list(range(n)))
    assert qa.job_id is not None
    return qa.job_id


def database() -> Path:
    from starfish.ui.queries import database_path

    return database_path()
