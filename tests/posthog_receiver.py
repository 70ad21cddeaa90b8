"""A real HTTP server on 127.0.0.1 that speaks PostHog's ingestion API.

Tests point `POSTHOG_HOST` at it and assert on what arrived on the wire. Modes:
`ok` (200 `{"status": 1}`), `500`, `refuse` (nothing listens on the port),
`hang` (reads the request, never answers) and `blackhole` (the port listens, but no connection
is ever accepted or answered: a firewall that drops packets looks like this to the client).
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"


def decode_body(body: bytes, headers: dict[str, str]) -> Any:
    """Gunzip by header or by magic bytes, then parse JSON."""
    if headers.get("content-encoding", "").lower() == "gzip" or body[:2] == GZIP_MAGIC:
        body = gzip.decompress(body)
    return json.loads(body)


class PostHogReceiver:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.requests: list[dict[str, Any]] = []
        self.raw_bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._blackhole: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PostHogReceiver:
        if self.mode == "refuse":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            return self
        if self.mode == "blackhole":
            self._blackhole = socket.socket()
            self._blackhole.bind(("127.0.0.1", 0))
            self._blackhole.listen(128)
            self.port = self._blackhole.getsockname()[1]
            return self
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.raw_bodies.append(body)
                    receiver.requests.append(
                        {"path": self.path, "headers": headers, "json": decode_body(body, headers)}
                    )
                if receiver.mode == "hang":
                    receiver._release.wait(60)
                    return
                status = 500 if receiver.mode == "500" else 200
                reply = b'{"status": 1}' if status == 200 else b'{"error": "boom"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._blackhole is not None:
            self._blackhole.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def events(self) -> list[dict[str, Any]]:
        """Every event received on `/batch/`, in arrival order."""
        out: list[dict[str, Any]] = []
        with self._lock:
            for req in self.requests:
                if req["path"].rstrip("/").endswith("batch"):
                    out.extend(req["json"].get("batch", []))
        return out

    def wait_for_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if len(events) >= n:
                return events
            time.sleep(0.02)
        return self.events()
