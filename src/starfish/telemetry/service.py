"""capture -> in-memory queue -> (shortly after, or at exit) outbox + detached deliverer.

Why a detached process rather than a sender thread: a same-process sender must import posthog
(0.12-0.28 s) and then wait on the network before the interpreter may exit; an endpoint that
accepts and never answers would hold the exit for the whole timeout. Here the caller's thread
only appends to a deque (microseconds); at exit we append the pending events to the outbox and
spawn `starfish.telemetry._deliver` in its own session (a few milliseconds), which imports the
SDK, sends, and removes what the endpoint acknowledged. A long-running process (a notebook)
gets the same from a daemon thread that flushes about a second after a capture.
`bench/bench_telemetry.py` measures both costs.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starfish.paths import app_data_dir
from starfish.telemetry import outbox
from starfish.telemetry.schema import JOB_EVENT, Event, TelemetryData, clean_job, clean_properties
from starfish.telemetry.settings import (
    DEFAULT_ENDPOINT,
    POSTHOG_API_KEY,
    env_says_off,
    is_ci,
    os_name,
    resolve,
)

NOTICE_FILE = "telemetry_notice_shown"
NOTICE = (
    "Starfish collects anonymous usage data after each job: its settings, counts, duration, "
    "exception type names and your Python/OS versions; never inputs, outputs, messages, paths or "
    "names. It helps us decide what to improve. Opt out with TELEMETRY_ENABLED=false or "
    "`starfish telemetry disable`; see what is sent with `starfish telemetry log`."
)
MAX_QUEUE = outbox.MAX_OUTBOX
FLUSH_DELAY = 1.0  # batch a burst of captures into one delivery
COOLDOWN = 10.0  # a busy process spawns at most one background deliverer per this many seconds
EXIT_LOCK_WAIT = 0.1
OUTBOX_LOCK_WAIT = 0.05

# Runs the deliverer with a bare `starfish` package, so it imports only the telemetry
# subpackage (never the data factory, which it does not need).
_BOOTSTRAP = (
    "import sys,types;m=types.ModuleType('starfish');m.__path__=[sys.argv[1]];"
    "sys.modules['starfish']=m;from starfish.telemetry._deliver import main;main()"
)
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
_SAFE_PIPE_WRITE = 4096

_log = logging.getLogger(__name__)
_services: weakref.WeakSet[AnalyticsService] = weakref.WeakSet()
_process_hooks_installed = False
_notice_shown = False
_mp_finalizer_pid: int | None = None


@dataclass
class AnalyticsConfig:
    """How an AnalyticsService behaves; `from_environment()` applies the user's settings."""

    api_key: str
    active: bool = True
    verbose: bool = False
    endpoint: str | None = None
    local: bool = False  # record in the local log only, never send
    debug: bool = False  # print each payload to stderr instead of sending it
    ci: bool | None = None  # None: detect from the environment

    @classmethod
    def from_environment(cls) -> AnalyticsConfig:
        s = resolve()
        return cls(
            api_key=s.api_key,
            active=s.mode != "off",
            endpoint=s.endpoint,
            local=s.mode == "local",
            debug=s.debug,
            ci=s.is_ci,
        )


def _new_uuid() -> str:
    """A random (version 4) UUID string without importing `uuid` (10 ms) on the hot path."""
    n = int.from_bytes(os.urandom(16), "big")
    n = (n & ~(0xF000 << 64)) | (0x4000 << 64)
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class AnalyticsService:
    """Captures events without ever blocking or raising; delivers them off the caller's path.

    Active: events go through the allow-list into a bounded queue; `flush` hands them to the
    outbox and a detached deliverer (which holds the real posthog client). Inactive: a no-op.
    """

    def __init__(self, settings: AnalyticsConfig) -> None:
        self.settings = settings
        self.active = bool(settings.active)
        self.mode = "off" if not self.active else ("local" if settings.local else "on")
        self.endpoint = (settings.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        ci = is_ci() if settings.ci is None else settings.ci
        self._context = {
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "os": os_name(),
            "is_ci": ci,
        }
        # Bound once, so a late background flush writes where this service's events belong.
        self.directory = app_data_dir()
        self._client_id: str | None = None
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._queue: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUE)
        self._wake = threading.Event()
        self._signalled = False
        self._thread_started = False
        self._flush_lock = threading.Lock()
        self._children: list[Any] = []
        self._last_spawn = float("-inf")
        self._closed = False

    # -- capture (the caller's thread) -------------------------------------------------------

    def capture_event(self, event: Event) -> None:
        """Record an event and return at once; never raises."""
        if not self.active or self._closed:
            return
        try:
            props = clean_properties(event.name, event.data)
            if props is not None:
                self._record(event.name, props, event.client_id)
        except Exception:
            _log.debug("telemetry capture failed", exc_info=True)

    def capture_job(self, data: TelemetryData) -> None:
        """`capture_event` for a finished job, skipping the generic path's copies."""
        if not self.active or self._closed:
            return
        try:
            self._record(JOB_EVENT, clean_job(data), None)
        except Exception:
            _log.debug("telemetry capture failed", exc_info=True)

    def _record(self, name: str, props: dict[str, Any], client_id: str | None) -> None:
        props.update(self._context)
        item = {
            "event": name,
            "t": time.time(),
            "properties": props,
            "distinct_id": client_id,
        }
        if self.settings.verbose:
            print(f"[telemetry] Captured event: {name} with data: {props}", file=sys.stderr)
        if self.settings.debug:
            payload = json.dumps(self._finalize(item), sort_keys=True)
            print(f"[telemetry] {payload}", file=sys.stderr)
            if self.mode == "on":
                return
        self._queue.append(item)
        if not self._signalled:
            self._signal()

    def _signal(self) -> None:
        self._signalled = True
        _install_process_hooks(self)
        _flush_when_multiprocessing_child_exits()
        if not self._thread_started:
            self._thread_started = True
            # The low-level start does not wait for the thread to run: 50 µs instead of 250.
            _thread.start_new_thread(self._background, ())
        self._wake.set()

    # -- delivery (a daemon thread, or atexit) -----------------------------------------------

    def _background(self) -> None:
        try:
            while True:
                self._wake.wait()
                time.sleep(max(FLUSH_DELAY, self._last_spawn + COOLDOWN - time.monotonic()))
                self._wake.clear()
                self._signalled = False
                self.flush(timeout=5.0)
        except BaseException:  # interpreter shutdown tears modules down under a daemon thread
            return

    def flush(self, timeout: float = 1.0) -> None:
        """Hand pending events to the outbox and a detached deliverer; never raises.

        `timeout` bounds only the wait for a concurrent flush; the network is never awaited.
        """
        if not self.active or not self._flush_lock.acquire(timeout=timeout):
            return
        try:
            self._reap()
            items = []
            while self._queue:
                items.append(self._queue.popleft())
            if items:
                self._deliver([self._finalize(i) for i in items])
        except Exception:
            _log.debug("telemetry flush failed", exc_info=True)
        finally:
            self._flush_lock.release()

    def shutdown(self, timeout: float = 1.0) -> None:
        """Flush, then ignore further captures."""
        self.flush(timeout)
        self._closed = True

    def _finalize(self, item: dict[str, Any]) -> dict[str, Any]:
        if item["distinct_id"] is None:
            item["distinct_id"] = self._get_client_id()
        stamp = datetime.fromtimestamp(item["t"], timezone.utc).isoformat()
        if "uuid" not in item:
            item["uuid"] = _new_uuid()
        return {
            "event": item["event"],
            "uuid": item["uuid"],
            "timestamp": stamp,
            "distinct_id": item["distinct_id"],
            "properties": item["properties"],
        }

    def _get_client_id(self) -> str:
        if self._client_id is None:
            from starfish.telemetry.identity import TelemetryConfig

            self._client_id = str(TelemetryConfig.generate_client_id(self.directory))
        return self._client_id

    def _deliver(self, events: list[dict[str, Any]]) -> None:
        directory = self.directory
        if self.mode == "local":
            entries = [{"status": "local", "logged_at": _now_iso(), "event": e} for e in events]
            try:
                outbox.append_log(directory, entries, timeout=OUTBOX_LOCK_WAIT * 4)
            except OSError:
                _log.debug("local telemetry log not writable")
            return
        _show_notice_once(directory, bool(self._context["is_ci"]))
        saved = False
        usable = True
        try:
            saved = outbox.append_outbox(directory, events, timeout=OUTBOX_LOCK_WAIT)
        except OSError:
            usable = False
        self._spawn(directory if usable else None, [] if saved else events)

    def _spawn(self, directory: Path | None, unsaved: list[dict[str, Any]]) -> None:
        import subprocess

        if not sys.executable:
            return
        orders = {
            "api_key": self.settings.api_key or POSTHOG_API_KEY,
            "endpoint": self.endpoint,
            "app_dir": str(directory) if directory is not None else None,
        }
        data = "".join(json.dumps(x) + "\n" for x in [orders, *unsaved]).encode()
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = (
                subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
            )
        else:
            kwargs["start_new_session"] = True
        child = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, _PACKAGE_DIR],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            **kwargs,
        )
        self._last_spawn = time.monotonic()
        self._children.append(child)
        assert child.stdin is not None
        fd = child.stdin.fileno()
        try:
            try:
                os.set_blocking(fd, False)  # never wait on the child: what fits in the pipe goes
            except (OSError, AttributeError):  # pipes on Windows before 3.12
                if len(data) > _SAFE_PIPE_WRITE:  # a blocking write this small cannot block
                    data = data[: data.index(b"\n") + 1]
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            pass
        finally:
            child.stdin.close()

    def _reap(self) -> None:
        self._children = [c for c in self._children if c.poll() is None]

    def _after_fork_in_child(self) -> None:
        """The parent keeps and sends its own pending events; the child starts empty."""
        self._reset_runtime()


def _show_notice_once(directory: Path, ci: bool) -> None:
    global _notice_shown
    if _notice_shown or ci:
        return
    marker = directory / NOTICE_FILE
    try:
        if marker.exists():
            _notice_shown = True
            return
    except OSError:
        pass
    _notice_shown = True
    with contextlib.suppress(Exception):  # a closed stderr at exit
        print(NOTICE, file=sys.stderr)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        marker.write_text(_now_iso() + "\n")
    except OSError:
        pass


def _install_process_hooks(service: AnalyticsService) -> None:
    """On first use (never at import): flush at exit, and split state cleanly on fork."""
    global _process_hooks_installed
    _services.add(service)
    if _process_hooks_installed:
        return
    _process_hooks_installed = True
    atexit.register(_flush_all_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_when_multiprocessing_child_exits() -> None:
    """A multiprocessing child ends with `os._exit` (no atexit) after running its finalizers."""
    global _mp_finalizer_pid
    if _mp_finalizer_pid == os.getpid():
        return
    _mp_finalizer_pid = os.getpid()
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        from multiprocessing import util

        util.Finalize(None, _flush_all_at_exit, exitpriority=0)


def _flush_all_at_exit() -> None:
    for service in list(_services):
        service.flush(timeout=EXIT_LOCK_WAIT)


def _after_fork_in_child() -> None:
    for service in list(_services):
        service._after_fork_in_child()


_default: AnalyticsService | None = None
_default_lock = threading.Lock()


def default_service() -> AnalyticsService:
    """The process-wide service, built from the settings on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = AnalyticsService(AnalyticsConfig.from_environment())
    return _default


def capture_job_event(data: TelemetryData) -> None:
    """Record one finished job; never raises, costs microseconds, nothing at all when off."""
    try:
        if env_says_off():
            return
        (_default or default_service()).capture_job(data)
    except Exception:
        _log.debug("telemetry capture failed", exc_info=True)


def _reset_default_service() -> None:
    """Forget the process-wide service so the next capture re-reads the settings (tests)."""
    global _default
    with _default_lock:
        _default = None
