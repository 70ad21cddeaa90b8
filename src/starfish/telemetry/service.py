"""capture -> outbox (a finished job) or in-memory queue -> a detached deliverer.

Why a detached process rather than a sender thread: a same-process sender must import posthog
(0.12-0.28 s) and then wait on the network before the interpreter may exit; an endpoint that
accepts and never answers would hold the exit for the whole timeout. Here a finished job's event
is appended to the outbox on the caller's thread (one small write, so it survives `os._exit`);
at exit, or about a second after a capture in a long-running process, we start
`starfish.telemetry._deliver` in its own session (a few milliseconds), which imports the SDK,
sends, and removes what the endpoint acknowledged. At most one deliverer runs per app data dir:
when one is alive, it sends our events too. A frozen app (`sys.frozen`) is never re-executed:
there a daemon thread delivers, and what it could not send waits in the outbox.
`bench/bench_telemetry.py` measures both costs.
"""

from __future__ import annotations

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starfish.paths import app_data_dir
from starfish.telemetry import outbox
from starfish.telemetry.schema import (
    EVENTS,
    JOB_EVENT,
    Event,
    TelemetryData,
    clean_job,
    clean_properties,
)
from starfish.telemetry.settings import (
    DEFAULT_ENDPOINT,
    POSTHOG_API_KEY,
    config_dir,
    env_says_off,
    is_ci,
    os_name,
    resolve,
)

__all__ = ["NOTICE", "AnalyticsConfig", "AnalyticsService", "capture_job_event", "default_service"]

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
# subpackage (never the data factory, which it does not need). It runs isolated (`-I`: no
# working directory or PYTHON* variables on its path, so no `posthog.py` lying around can shadow
# the SDK); the user's site-packages, which `-I` leaves out, are added back when the parent used
# them, since that is where `pip install --user` put posthog.
_BOOTSTRAP = (
    "import sys,site,types;[site.addsitedir(p) for p in sys.argv[2:]];"
    "m=types.ModuleType('starfish');m.__path__=[sys.argv[1]];"
    "sys.modules['starfish']=m;from starfish.telemetry._deliver import main;main()"
)
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
_SAFE_PIPE_WRITE = 4096

_log = logging.getLogger(__name__)
_services: weakref.WeakSet[AnalyticsService] = weakref.WeakSet()
_process_hooks_installed = False
_notice_shown = False
_mp_finalizer_pid: int | None = None
_exiting = False  # at exit no thread may start; a spawned child is reaped by init instead


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


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _new_uuid() -> str:
    """A random (version 4) UUID string without importing `uuid` on the hot path.

    `import uuid` pulls in `platform`: 15 ms here, against the bench_telemetry row "first
    call of a process (on)" of about 0.6 ms.
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # compact ASCII, one line


def _start_daemon(target: Callable[..., Any], *args: Any) -> None:
    threading.Thread(target=target, args=args, name="starfish-telemetry", daemon=True).start()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class AnalyticsService:
    """Captures events without ever blocking or raising; delivers them off the caller's path.

    Active: events go through the allow-list; a finished job's event, when sending is on, goes
    straight to the outbox (one append), anything else into a bounded queue that `flush` hands
    to the outbox (or, in local mode, the log). `flush` then starts the deliverer (which holds
    the real posthog client) unless one is alive. Inactive: a no-op.
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
        self._writer: outbox.OutboxWriter | None = None
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._queue: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUE)
        self._wake = threading.Event()
        self._signalled = False
        self._thread_started = False
        self._flush_lock = threading.Lock()
        self._last_spawn = float("-inf")
        self._closed = False
        self._pending = False  # our events wait in the outbox; no deliverer started for them
        self._delivering = False  # frozen app: the delivery thread is running

    # -- capture (the caller's thread) -------------------------------------------------------

    def capture_event(self, event: Event) -> None:
        """Record an event and return at once; never raises."""
        if not self.active or self._closed:
            if self.settings.verbose:
                self._say_not_sent(getattr(event, "name", "?"), "telemetry is off")
            return
        try:
            props = clean_properties(event.name, event.data)
            if props is not None:
                self._record(event.name, props, event.client_id)
            elif self.settings.verbose:
                self._say_not_sent(event.name, _refusal(event.name))
        except Exception:
            _log.debug("telemetry capture failed", exc_info=True)

    def capture_job(self, data: TelemetryData) -> None:
        """`capture_event` for a finished job: straight into the outbox when sending is on."""
        if not self.active or self._closed:
            if self.settings.verbose:
                self._say_not_sent(JOB_EVENT, "telemetry is off")
            return
        try:
            props = clean_job(data)
            if self.mode == "on" and not self.settings.debug:
                props.update(self._context)
                if self.settings.verbose:
                    print(
                        f"[telemetry] Captured event: {JOB_EVENT} with data: {props}",
                        file=sys.stderr,
                    )
                if not self._save_job(props):
                    self._enqueue(JOB_EVENT, props, None)
                return
            self._record(JOB_EVENT, props, None)
        except Exception:
            _log.debug("telemetry capture failed", exc_info=True)

    def _save_job(self, props: dict[str, Any]) -> bool:
        """Append the event to the outbox now, so it outlives this process whatever happens."""
        line = {"event": JOB_EVENT, "uuid": _new_uuid(), "t": time.time(), "properties": props}
        writer = self._writer
        if writer is None:
            writer = self._writer = outbox.OutboxWriter(self.directory)
        if not writer.append((_ENCODE(line) + "\n").encode(), OUTBOX_LOCK_WAIT):
            return False
        self._pending = True
        if not self._signalled:
            self._signal()
        return True

    @staticmethod
    def _say_not_sent(name: str, why: str) -> None:
        print(f"[telemetry] Not sent: event {name!r}: {why}", file=sys.stderr)

    def _record(self, name: str, props: dict[str, Any], client_id: str | None) -> None:
        props.update(self._context)
        if self.settings.verbose:
            where = " (local mode: kept in the local log, not sent)" if self.mode == "local" else ""
            print(f"[telemetry] Captured event: {name} with data: {props}{where}", file=sys.stderr)
        self._enqueue(name, props, client_id)

    def _enqueue(self, name: str, props: dict[str, Any], client_id: str | None) -> None:
        item = {
            "event": name,
            "t": time.time(),
            "properties": props,
            "distinct_id": client_id,
        }
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
            _start_daemon(self._background)
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
        """Hand pending events to the outbox and a deliverer; never raises.

        `timeout` bounds only the wait for a concurrent flush; the network is never awaited.
        """
        if not self.active or not self._flush_lock.acquire(timeout=timeout):
            return
        try:
            items = []
            while self._queue:
                items.append(self._queue.popleft())
            unsaved: list[dict[str, Any]] = []
            if items:
                unsaved = self._deliver([self._finalize(i) for i in items])
            if self.mode == "on" and (self._pending or unsaved):
                self._start_delivery(unsaved)
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

    def _deliver(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Local mode: log them. On: add them to the outbox; returns those it could not save."""
        directory = self.directory
        if self.mode == "local":
            entries = [{"status": "local", "logged_at": _now_iso(), "event": e} for e in events]
            try:
                outbox.append_log(directory, entries, timeout=OUTBOX_LOCK_WAIT * 4)
            except OSError:
                _log.debug("local telemetry log not writable")
            return []
        try:
            if outbox.append_outbox(directory, events, timeout=OUTBOX_LOCK_WAIT):
                self._pending = True
                return []
        except OSError:
            pass
        return events

    def _start_delivery(self, unsaved: list[dict[str, Any]]) -> None:
        """Start the one deliverer of this app data dir, unless one is alive (it sends ours)."""
        self._pending = False
        _show_notice_once(self.directory, bool(self._context["is_ci"]))
        if not _can_spawn():
            if not _exiting:
                self._deliver_in_thread(unsaved)
            return  # at exit: the outbox keeps them for a later run
        lock_fd = outbox.try_delivery_lock(self.directory)
        if lock_fd is None and not unsaved:
            return
        if lock_fd is not None and os.name == "nt":  # no handing over there: the child locks
            outbox.release_delivery_lock(lock_fd)
            lock_fd = None
        try:
            self._spawn(lock_fd, unsaved)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)  # the child holds the lock now (same open file)

    def _orders(self, lock_fd: int | None) -> dict[str, Any]:
        return {
            "api_key": self.settings.api_key or POSTHOG_API_KEY,
            "endpoint": self.endpoint,
            "app_dir": str(self.directory),
            "lock_fd": lock_fd,
        }

    def _deliver_in_thread(self, unsaved: list[dict[str, Any]]) -> None:
        if self._delivering:
            return
        self._delivering = True
        _start_daemon(self._thread_delivery, unsaved)

    def _thread_delivery(self, unsaved: list[dict[str, Any]]) -> None:
        try:
            from starfish.telemetry import _deliver

            lock_fd = outbox.try_delivery_lock(self.directory)
            released = False
            try:
                released = _deliver.deliver(self._orders(lock_fd), unsaved, lock_fd)
            finally:
                if lock_fd is not None and not released:
                    outbox.release_delivery_lock(lock_fd)
        except BaseException:  # interpreter shutdown tears modules down under a daemon thread
            _log.debug("telemetry delivery thread failed", exc_info=True)
        finally:
            self._delivering = False

    def _spawn(self, lock_fd: int | None, unsaved: list[dict[str, Any]]) -> None:
        import subprocess

        data = "".join(json.dumps(x) + "\n" for x in [self._orders(lock_fd), *unsaved]).encode()
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = (
                subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
            )
        else:
            kwargs["start_new_session"] = True
            if lock_fd is not None:
                kwargs["pass_fds"] = (lock_fd,)
        cwd = self.directory if self.directory.is_dir() else Path(os.path.abspath(os.sep))
        child = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOTSTRAP, _PACKAGE_DIR, *_user_site()],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            cwd=cwd,
            **kwargs,
        )
        self._last_spawn = time.monotonic()
        if not _exiting:  # reap it when it ends: no zombie in a long-running process
            _start_daemon(_reap, child)
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

    def _after_fork_in_child(self) -> None:
        """The parent keeps and sends its own pending events; the child starts empty."""
        if self._writer is not None:
            self._writer.forget()
        self._reset_runtime()


def _refusal(name: str) -> str:
    if name in EVENTS:
        return "its data is not a mapping of allow-listed fields"
    allowed = ", ".join(sorted(EVENTS))
    return f"not on the allow-list (allowed: {allowed}; see docs/telemetry.md)"


def _can_spawn() -> bool:
    """Whether `sys.executable` is a Python we may start; a frozen app's is the app itself."""
    if getattr(sys, "frozen", False) or not sys.executable:
        return False
    name = os.path.basename(sys.executable).lower()
    return name.startswith(("python", "pypy"))


def _user_site() -> list[str]:
    import site

    user_site = site.USER_SITE if site.ENABLE_USER_SITE else None
    return [user_site] if user_site and user_site in sys.path else []


def _reap(child: Any) -> None:
    with contextlib.suppress(BaseException):
        child.wait()


def _show_notice_once(directory: Path, ci: bool) -> None:
    """Once per user (the marker is in the user config dir), not once per storage dir."""
    global _notice_shown
    if _notice_shown or ci:
        return
    _notice_shown = True
    try:
        marker = config_dir() / NOTICE_FILE
        if marker.exists() or (directory / NOTICE_FILE).exists():  # or shown by 0.2
            return
    except Exception:
        return
    with contextlib.suppress(Exception):  # a closed stderr at exit
        print(NOTICE, file=sys.stderr)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
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
    global _exiting
    _exiting = True
    for service in list(_services):
        service.flush(timeout=EXIT_LOCK_WAIT)


def _after_fork_in_child() -> None:
    outbox.after_fork_in_child()
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
