"""The viewer's HTTP server: static files and a small JSON API over `queries.Reader`.

Read-only, on the user's own machine: it binds to loopback unless told otherwise, and then
only with a token that every request must carry (`?token=` once, then a same-site cookie).
On loopback it answers only requests addressed to a loopback name, so a web page elsewhere
cannot reach it through DNS rebinding. Nothing is fetched from anywhere: the page, its script
and its style ship in `static/`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from starfish.ui.queries import RECORD_STATUSES, Reader

__all__ = ["Charts", "is_loopback", "make_app"]

COOKIE = "starfish_ui_token"
_LOOPBACK_NAMES = ("localhost",)
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
READER: web.AppKey[Reader] = web.AppKey("reader", Reader)


def is_loopback(host: str) -> bool:
    """A name or address that only this machine reaches."""
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Charts:
    """Model responses per second per job, added up from the response cache in rowid order:
    each request reads only rows it has not read yet (at most a few hundred thousand)."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._last = 0
        self._seconds: dict[str, dict[int, list[Any]]] = {}
        self._lock = asyncio.Lock()

    async def series(self, job_id: str) -> dict[str, Any]:
        async with self._lock:
            for _ in range(3):
                part = await asyncio.to_thread(self._reader.chart, job_id, self._last)
                for owner, seconds in part["seconds"].items():
                    mine = self._seconds.setdefault(owner, {})
                    for second, (n, prompt, completion, usd) in seconds.items():
                        cell = mine.setdefault(second, [0, 0, 0, 0.0])
                        cell[0] += n
                        cell[1] += prompt
                        cell[2] += completion
                        cell[3] = None if usd is None or cell[3] is None else cell[3] + usd
                self._last = part["last_rowid"]
                if not part["more"]:
                    break
            points = sorted(self._seconds.get(job_id, {}).items())
        return {
            "points": [[t, n, p + c, usd] for t, (n, p, c, usd) in points],
            "complete": not part["more"],
        }


def make_app(path: Path, token: str | None = None, host: str = "127.0.0.1") -> web.Application:
    """The viewer of the job database at `path`; with `token`, every request must carry it."""
    reader = Reader(path)
    charts = Charts(reader)
    check_host = token is None

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if check_host and not is_loopback(request.url.host or ""):
            return _refuse(403, "starfish ui answers only requests addressed to this machine.")
        set_cookie = False
        if token is not None:
            given = request.query.get("token") or request.cookies.get(COOKIE) or ""
            bearer = request.headers.get("Authorization", "")
            if bearer.startswith("Bearer "):
                given = bearer[len("Bearer ") :]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _refuse(
                    401,
                    "starfish ui was started with --token: open the address it printed, "
                    "http://HOST:PORT/?token=THE_TOKEN (or send 'Authorization: Bearer "
                    "THE_TOKEN').",
                )
            set_cookie = request.query.get("token") is not None
        response: web.StreamResponse = await handler(request)
        response.headers.update(_HEADERS)
        if set_cookie and token is not None:
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    app = web.Application(middlewares=[guard])
    app[READER] = reader
    static = resources.files("starfish.ui") / "static"

    async def page(request: web.Request) -> web.StreamResponse:
        return _static(static, "index.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ("app.js", "style.css"):
            raise web.HTTPNotFound()
        return _static(static, name)

    async def jobs(request: web.Request) -> web.StreamResponse:
        return web.json_response(await asyncio.to_thread(reader.list_jobs))

    async def job(request: web.Request) -> web.StreamResponse:
        found = await asyncio.to_thread(reader.get_job, request.match_info["job_id"])
        if found is None:
            return web.json_response({"error": "no such job"}, status=404)
        return web.json_response(found)

    async def records(request: web.Request) -> web.StreamResponse:
        q = request.query
        status = q.get("status", "completed")
        if status not in RECORD_STATUSES:
            return web.json_response({"error": f"unknown status {status!r}"}, status=400)
        try:
            page = await asyncio.to_thread(
                reader.records,
                request.match_info["job_id"],
                status,
                q.get("after", "-1"),
                int(q.get("limit", "50")),
                q.get("q", "")[:200],
            )
        except KeyError:
            return web.json_response({"error": "no such job"}, status=404)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(page)

    async def record(request: web.Request) -> web.StreamResponse:
        m = request.match_info
        if m["status"] not in RECORD_STATUSES or not m["key"].isdigit():
            raise web.HTTPNotFound()
        found = await asyncio.to_thread(reader.record, m["job_id"], m["status"], m["key"])
        if found is None:
            return web.json_response({"error": "no such record"}, status=404)
        return web.json_response(found)

    async def chart(request: web.Request) -> web.StreamResponse:
        return web.json_response(await charts.series(request.match_info["job_id"]))

    async def quality(request: web.Request) -> web.StreamResponse:
        found = await asyncio.to_thread(reader.quality, request.match_info["job_id"])
        return web.json_response(found)

    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/api/jobs", jobs)
    app.router.add_get("/api/jobs/{job_id}", job)
    app.router.add_get("/api/jobs/{job_id}/records", records)
    app.router.add_get("/api/jobs/{job_id}/records/{status}/{key}", record)
    app.router.add_get("/api/jobs/{job_id}/chart", chart)
    app.router.add_get("/api/jobs/{job_id}/quality", quality)
    return app


def _static(folder: Any, name: str) -> web.Response:
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
    kind = types[Path(name).suffix]
    return web.Response(body=(folder / name).read_bytes(), content_type=kind, charset="utf-8")


def _refuse(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=_HEADERS)
