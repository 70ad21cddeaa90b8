"""llama-cpp-python's server with SmolLM2-135M on 127.0.0.1, and a recording proxy in front.

Used by the real-model tests and by bench/bench_real_model.py; both run in a loopback-only
network namespace, after tests/real_model/provision.py installed the server and the model.
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
from pathlib import Path
from typing import Any

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


class ModelServer:
    """`python -m llama_cpp.server` from the provisioned venv, one request at a time (its
    default), with its output in `log`."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 120) -> ModelServer:
        cache = cache_dir()
        python = cache / "venv" / "bin" / "python"
        model = cache / "model" / MODEL_FILE
        if not python.exists() or not model.exists():
            raise RuntimeError(
                f"the real model server is not installed in {cache}: run "
                "`python tests/real_model/provision.py` (make test-real-model does)"
            )
        port = _free_port()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [str(python), "-m", "llama_cpp.server", "--model", str(model),
                 "--host", "127.0.0.1", "--port", str(port), "--model_alias", MODEL,
                 "--n_threads", "2"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "*"},
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the model server did not start:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
