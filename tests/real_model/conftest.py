"""A real model server none of us wrote: llama-cpp-python serving SmolLM2-135M-Instruct.

`make test-real-model` installs both (tests/real_model/provision.py) and runs these tests in a
loopback-only network namespace. The server is started once per session on 127.0.0.1; the
tests reach it through `Recorder`, a pass-through proxy that keeps what the server answered
(every request, every `usage`), so they can compare what Starfish counted with what the
server did.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from tests.real_model.provision import MODEL_FILE, cache_dir

MODEL = "smollm2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """Forwards /v1/* to the model server and records each answer."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.answers: list[dict[str, Any]] = []  # {"status", "body" (request), "usage"}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        with self._lock:
            self.answers.clear()

    def usage_total(self) -> tuple[int, int]:
        with self._lock:
            usages = [a["usage"] or {} for a in self.answers if a["status"] == 200]
        return (
            sum(u.get("prompt_tokens", 0) for u in usages),
            sum(u.get("completion_tokens", 0) for u in usages),
        )

    async def _forward(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = {"Content-Type": "application/json"}
        async with (
            ClientSession() as client,
            client.post(self.upstream + request.path, data=raw, headers=headers) as resp,
        ):
            body = await resp.read()
            status = resp.status
        try:
            usage = json.loads(body).get("usage")
        except (ValueError, AttributeError):
            usage = None
        with self._lock:
            self.answers.append({"status": status, "body": json.loads(raw), "usage": usage})
        return web.Response(body=body, status=status, content_type="application/json")

    def start(self) -> Recorder:
        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._forward)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True, name="recorder").start()
        if not ready.wait(10):
            raise RuntimeError("the recording proxy did not start")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running llama-cpp-python server (no recorder in front)."""
    cache = cache_dir()
    python = cache / "venv" / "bin" / "python"
    model = cache / "model" / MODEL_FILE
    if not python.exists() or not model.exists():
        pytest.fail(
            f"the real model server is not installed in {cache}: run "
            "`python tests/real_model/provision.py` (make test-real-model does)"
        )
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("llama")) / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--model_alias", MODEL, "--n_threads", "2"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "*"},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the model server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def recorder(model_server: str) -> Iterator[Recorder]:
    rec = Recorder(model_server.removesuffix("/v1")).start()
    yield rec
    rec.stop()
