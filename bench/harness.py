"""The harness: run one workload as a whole child process, alternate the libraries, keep samples.

What each workload measures is in bench/suite.py, the targets in bench/targets.py and the
written report in bench/report.py; this module knows none of them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKLOAD = BENCH / "workload.py"
OURS_PYTHON = Path(sys.executable)
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# One turn at a workload: its sample, or why it failed; a Measure takes that turn for a library.
Outcome = tuple[dict[str, Any] | None, str | None]
Measure = Callable[[str], Outcome]


@dataclass
class Sizes:
    """Workload sizes: the issue's figures, or tiny ones for the smoke run."""

    job_small: int = 20
    overhead: int = 10_000
    concurrencies: tuple[int, ...] = (50, 1000)
    io_n: int = 2_000
    io_concurrency: int = 100
    io_sleep: float = 0.01
    resume_n: int = 10_000
    resume_fresh: int = 3_000
    state_n: int = 20_000
    scale_n: int = 1_000_000
    scale_concurrency: int = 50
    telemetry_calls: int = 100_000
    telemetry_runs: int = 5
    large_rows: int = 1_000_000
    stored_jobs: int = 1_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            overhead=300,
            concurrencies=(50,),
            io_n=200,
            resume_n=500,
            resume_fresh=150,
            state_n=500,
            scale_n=20_000,
            telemetry_calls=2_000,
            telemetry_runs=1,
            large_rows=5_000,
            stored_jobs=50,
        )


@dataclass
class Proc:
    """One finished child: its wall time, peak RSS, exit status and `BENCH` result line."""

    wall_s: float
    maxrss_mb: float
    returncode: int
    result: dict[str, Any] | None
    tail: str
    timed_out: bool = False

    @property
    def error(self) -> str | None:
        if self.result and "error" in self.result:
            # The peer logs the real cause and then fails on something else at cleanup.
            logged = [ln for ln in self.tail.splitlines() if "Error occurred:" in ln]
            if not logged:
                return str(self.result["error"])
            cause = logged[-1].split("Error occurred:")[1].strip()
            return f"{self.result['error']} (logged before it: {cause})"
        if self.result is None:
            why = "timed out" if self.timed_out else f"exit {self.returncode}"
            return f"no result ({why}): {self.tail[-300:]}"
        return None


def child_env(appdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: no telemetry, no network, its own app data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STARFISH_", "BENCH_"))}
    env.pop("PYTHONPATH", None)
    # Users run from compiled bytecode: compile once (warm-up) into a cache outside the tree,
    # rather than from source in every process, which PYTHONDONTWRITEBYTECODE=1 would force.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(appdir.parent / "pycache")
    env.update(
        TELEMETRY_ENABLED="false",
        DO_NOT_TRACK="1",
        POSTHOG_HOST="http://127.0.0.1:9",
        STARFISH_LOCAL_STORAGE_DIR=str(appdir),
        # litellm (imported by the peer) fetches a price list at import unless told not to.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra or {})
    return env


def run_proc(
    cmd: list[str],
    env: dict[str, str],
    timeout: float,
    cwd: Path,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Proc:
    """Run one child to its end (or SIGKILL it at `timeout`); wait4 gives its own peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        waited: dict[str, Any] = {}

        def reap() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            waited.update(end=time.perf_counter(), status=status, usage=usage)

        reaper = threading.Thread(target=reap, daemon=True)
        reaper.start()
        if on_start:
            on_start(proc)
        reaper.join(timeout)
        timed_out = reaper.is_alive()
        if timed_out:
            os.kill(proc.pid, signal.SIGKILL)
            reaper.join()
        proc.returncode = os.waitstatus_to_exitcode(waited["status"])
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    result = None
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH "):
            result = json.loads(line[len("BENCH ") :])
            break
    stdout, stderr = ANSI.sub("", stdout), ANSI.sub("", stderr)
    return Proc(
        wall_s=waited["end"] - start,
        maxrss_mb=waited["usage"].ru_maxrss / 1024,
        returncode=proc.returncode,
        result=result,
        tail=(stderr or stdout)[-2000:],
        timed_out=timed_out,
    )


@dataclass
class Bench:
    """Runs workloads for each library and keeps every sample."""

    sizes: Sizes
    reps: int
    libs: dict[str, Path]
    timeout: float
    samples: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="starfish-bench-")))
    load: tuple[float, float, float] = field(default_factory=os.getloadavg)
    peer_scale_cap: float = 0.0  # seconds for the peer's 1M attempt (0: none)

    def appdir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.tmp))

    def workload(self, lib: str, args: list[str], **kw: Any) -> Proc:
        cmd = [str(self.libs[lib]), str(WORKLOAD), *args]
        appdir = kw.pop("appdir", None) or self.appdir()
        return run_proc(
            cmd,
            child_env(appdir, kw.pop("env", None)),
            kw.pop("timeout", self.timeout),
            self.tmp,
            **kw,
        )

    def record(self, key: str, lib: str, sample: dict[str, Any] | None, error: str | None) -> None:
        if error:
            self.errors.setdefault(key, {})[lib] = error
            print(f"  {key:<34} {lib:<5} ERROR {error[:160]}", flush=True)
            return
        assert sample is not None
        self.samples.setdefault(key, {}).setdefault(lib, []).append(sample)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sample.items() if k != "job_id")
        print(f"  {key:<34} {lib:<5} {shown}", flush=True)

    def alternate(self, key: str, measure: Measure) -> None:
        """Each repetition runs every library once, the first one alternating; a library
        whose run fails is not run again for this workload (the peer has broken paths)."""
        libs = list(self.libs)
        for rep in range(self.reps):
            order = libs if rep % 2 == 0 else libs[::-1]
            for lib in order:
                if lib in self.errors.get(key, {}):
                    continue
                sample, error = measure(lib)
                self.record(key, lib, sample, error)

    def warm_up(self) -> None:
        """Compile both libraries' bytecode once so no repetition pays for it."""
        for lib in self.libs:
            self.workload(lib, ["import"])
            self.workload(lib, ["job", "--n", "5"])
            self.workload(lib, ["io", "--n", "5", "--storage", "in_memory"])

    def job_sample(self, args: list[str], n: int) -> Measure:
        """A job workload's turn: its rate and times, failed unless it returned all `n`."""

        def measure(lib: str) -> Outcome:
            p = self.workload(lib, args)
            if p.error:
                return None, p.error
            assert p.result is not None
            if p.result["records"] != n:
                return None, f"returned {p.result['records']} records for {n} inputs"
            return {
                "run_s": p.result["run_s"],
                "records_per_s": p.result["records_per_s"],
                "wall_s": p.wall_s,
                "maxrss_mb": p.maxrss_mb,
            }, None

        return measure


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def write_doc_block(doc: Path, start: str, end: str, title: str, table: str) -> None:
    """Put `table` between the `start` and `end` markers of `doc`, or, the first time, as a
    section `title` before the analysis: each benchmark rewrites only its own block."""
    text = doc.read_text()
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        section = f"{title}\n\n{block}\n\n"
        at = text.find("## Analysis")
        text = text[:at] + section + text[at:] if at >= 0 else text + "\n" + section
    doc.write_text(text)


def cpu_name() -> str:
    """The processor's model name, for the line that says where figures were measured."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "this machine"


def measured_on(load_at_start: float) -> str:
    """`Measured <UTC time> on <CPU> (<n> cores, shared; load <x> at start, <y> at end),
    Python <v>`: the head of every benchmark block (the machines are shared and noisy)."""
    import datetime as dt
    import platform

    return (
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()}"
        f" ({os.cpu_count()} cores, shared; load {load_at_start:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end), Python {platform.python_version()}"
    )


class ServedProcess:
    """A loopback server of the tests run as its own process (`python -m tests.<module>`), so
    that it does not share the measured process's GIL: its first line is its URL, and it
    answers `stats` on its standard input with one line of JSON."""

    def __init__(self, module: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)
