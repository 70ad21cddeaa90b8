"""The HTTP seam of the model layer: `Transport.send(request) -> response`.

One method, the shape of httpx's transports, so that the logic above it (modes, retries,
limits, counts) can be tested with an in-process fake (`FakeTransport` in the tests) while the
HTTP behaviour is tested against a loopback server. `AiohttpTransport` is the real one: one
pooled session per event loop, closed when its loop shuts down (`asyncio.run` closes open async
generators, and one holds each session). aiohttp, not httpx: against the same loopback server
at concurrency 200 a bare aiohttp loop did ~1,750 calls/s and httpx ~80 (issue 11).

What `send` may raise says what happened on the wire: `ConnectFailed` (nothing accepted the
connection), `TransportFailed` (the request went out, no answer came back), `TooManyOpenFiles`
(a local limit), `BodyTooLarge`. Any HTTP status is an answer, not an exception.
"""

from __future__ import annotations

import asyncio
import errno
import json
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "AiohttpTransport",
    "BodyTooLarge",
    "ConnectFailed",
    "Request",
    "Response",
    "TooManyOpenFiles",
    "Transport",
    "TransportFailed",
    "decode",
]


@dataclass(frozen=True)
class Request:
    method: str  # GET or POST
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None
    timeout: float = 120.0  # seconds for the whole exchange
    max_body: int | None = None  # bytes the answer may hold (None: `MAX_BODY`)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""  # the body, decoded by its charset

    def data(self) -> Any:
        """The body parsed as JSON, or the text when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return self.text


class Transport(Protocol):
    async def send(self, request: Request) -> Response: ...


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = (
    weakref.WeakKeyDictionary()
)


_timeouts: dict[float, Any] = {}


class ConnectFailed(Exception):
    """Nothing accepted the connection (refused, DNS): the base URL may be wrong."""


class TransportFailed(Exception):
    """The request went out but no answer came back (timeout, reset, dropped connection)."""


class TooManyOpenFiles(Exception):
    """This process ran out of file descriptors: a local limit, not the server's fault."""


def connection_limit() -> int:
    """Connections the session may open: half of this process's file-descriptor limit, so a
    job at `max_concurrency=10000` under `ulimit -n 1024` waits for a connection instead of
    failing every call with "too many open files" (0: no limit)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 0
    return max(8, soft // 2)


class BodyTooLarge(Exception):
    """The answer is larger than `MAX_BODY`: no chat completion is that big."""


MAX_BODY = 16 * 1024 * 1024
"""Bytes of an answer read at most: a server streaming without end cannot fill the memory
(or the cache)."""


async def _hold(session: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await session.close()


async def session() -> Any:
    loop = asyncio.get_running_loop()
    held = _sessions.get(loop)
    if held is not None and not held[0].closed:
        return held[0]
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connection_limit(), ttl_dns_cache=300)
    client = aiohttp.ClientSession(connector=connector, json_serialize=json.dumps)
    keeper = _hold(client)
    await keeper.__anext__()  # registered with the loop: closed by shutdown_asyncgens()
    _sessions[loop] = (client, keeper)
    return client


class AiohttpTransport:
    """HTTP over the event loop's pooled aiohttp session."""

    async def send(self, request: Request) -> Response:
        import aiohttp

        client = await session()
        limit = _timeouts.get(request.timeout)
        if limit is None:
            limit = _timeouts[request.timeout] = aiohttp.ClientTimeout(total=request.timeout)
        try:
            async with client.request(
                request.method,
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=limit,
            ) as resp:
                chunks = []
                size = 0
                most = request.max_body or MAX_BODY
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if size > most:
                        raise BodyTooLarge(
                            f"answered HTTP {resp.status} with a body over {most >> 20} MB"
                        )
                    chunks.append(chunk)
                raw = b"".join(chunks)
                status, headers, charset = resp.status, resp.headers, resp.charset
        except aiohttp.ClientConnectorError as exc:
            if getattr(exc.os_error, "errno", None) in (errno.EMFILE, errno.ENFILE):
                raise TooManyOpenFiles(str(exc.os_error.strerror)) from None
            raise ConnectFailed(type(exc).__name__) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise TransportFailed(type(exc).__name__) from None
        return Response(int(status), headers, decode(raw, charset))


def decode(raw: bytes, charset: str | None) -> str:
    """The body as text: by its declared charset, else UTF-8, else JSON's own detection
    (UTF-16/32 by their byte patterns); never an exception."""
    for encoding in (charset, "utf-8", json.detect_encoding(raw)):
        if encoding:
            try:
                return raw.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
    return raw.decode("utf-8", "replace")
