"""A loopback HTTP server (aiohttp) on a thread with its own event loop: what the fake
providers share (`openai_server.OpenAIServer`, `batch_server.BatchServer`). A subclass says
which routes it answers (`_app`); this class starts it on 127.0.0.1 and stops it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

from aiohttp import web


class LoopbackServer:
    name = "loopback-server"  # its thread's name, and what a failed start names
    backlog = 128

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def _app(self) -> web.Application:
        raise NotImplementedError

    async def _serve(self, ready: threading.Event, port: int) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=self.backlog)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()

    def start(self, port: int = 0) -> Self:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve(ready, port))
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name=self.name)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the {self.name} did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
