"""OpenAI-compatible chat completions over aiohttp: one pooled session per event loop.

aiohttp, not httpx: against the same loopback server at concurrency 200 a bare aiohttp loop
did ~1,750 calls/s and httpx ~80 (issue 11). The session is closed when its loop shuts down
(`asyncio.run` closes open async generators, and one holds each session).
"""

from __future__ import annotations

import asyncio
import errno
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

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


async def post_json(
    url: str, headers: dict[str, str], payload: bytes, timeout: float
) -> tuple[int, Any, Any, str]:
    """POST `payload`; return (status, headers, parsed JSON body or the text if not JSON, the
    body as text, decoded by its charset)."""
    import aiohttp

    client = await session()
    limit = _timeouts.get(timeout)
    if limit is None:
        limit = _timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
    try:
        async with client.post(url, data=payload, headers=headers, timeout=limit) as resp:
            chunks = []
            size = 0
            async for chunk in resp.content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > MAX_BODY:
                    raise BodyTooLarge(
                        f"answered HTTP {resp.status} with a body over {MAX_BODY >> 20} MB"
                    )
                chunks.append(chunk)
            raw = b"".join(chunks)
            status, resp_headers, charset = resp.status, resp.headers, resp.charset
    except aiohttp.ClientConnectorError as exc:
        if getattr(exc.os_error, "errno", None) in (errno.EMFILE, errno.ENFILE):
            raise TooManyOpenFiles(str(exc.os_error.strerror)) from None
        raise ConnectFailed(type(exc).__name__) from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise TransportFailed(type(exc).__name__) from None
    text = decode(raw, charset)
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return status, resp_headers, body, text


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


async def probe(url: str, headers: dict[str, str], timeout: float) -> int | None:
    """GET `url` and return its HTTP status once the headers arrive (any status: something
    answers), or None if nothing did within `timeout`; `ConnectFailed` if nothing listens."""
    import aiohttp

    client = await session()
    try:
        async with client.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            return int(resp.status)
    except aiohttp.ClientConnectorError as exc:
        raise ConnectFailed(type(exc).__name__) from None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
