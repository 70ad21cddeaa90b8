"""Benchmark Starfish against the original library, starfish-core 0.1.3, on this machine.

Every workload runs as a whole process (bench/workload.py) in the right venv, with telemetry off,
a dead loopback PostHog host and a fresh app data dir. Ours and the peer alternate within each
repetition, so drifting load on a shared machine hits both alike. Medians and ratios go to the
terminal, to docs/benchmarks.md and to a PNG chart of the ratios.

    .venv/bin/python bench/run.py                    # everything, 3 repetitions
    .venv/bin/python bench/run.py --quick --only ours --no-write   # the smoke run of `make test`
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
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
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
RAW = BENCH / "out" / "results.json"
OURS_PYTHON = Path(sys.executable)
ANALYSIS_START = "<!-- analysis:start -->"
LLM_START, LLM_END = "<!-- llm:start -->", "<!-- llm:end -->"
ANALYSIS_END = "<!-- analysis:end -->"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


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

    def alternate(
        self, key: str, measure: Callable[[str], tuple[dict[str, Any] | None, str | None]]
    ) -> None:
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

    def cold_start(self) -> None:
        self.commands["import"] = (
            'python -c "import starfish" (whole process); python bench/workload.py import'
        )

        def imp(lib: str) -> tuple[dict[str, Any] | None, str | None]:
            p = run_proc(
                [str(self.libs[lib]), "-c", "import starfish"],
                child_env(self.appdir()),
                self.timeout,
                self.tmp,
            )
            q = self.workload(lib, ["import"])
            if p.returncode or q.error:
                return None, q.error or p.tail
            assert q.result is not None
            return {
                "wall_s": p.wall_s,
                "import_s": q.result["import_s"],
                "version": q.result["version"],
            }, None

        self.alternate("import", imp)
        n = self.sizes.job_small
        args = ["job", "--n", str(n), "--concurrency", "10"]
        self.commands[f"job{n}"] = "python bench/workload.py " + " ".join(args)

        def job(lib: str) -> tuple[dict[str, Any] | None, str | None]:
            p = self.workload(lib, args)
            if p.error:
                return None, p.error
            return {"wall_s": p.wall_s, "maxrss_mb": p.maxrss_mb}, None

        self.alternate(f"job{n}", job)

    def throughput(self) -> None:
        n = self.sizes.overhead
        for storage in ("local", "in_memory"):
            for c in self.sizes.concurrencies:
                args = ["job", "--n", str(n), "--concurrency", str(c), "--storage", storage]
                key = f"noop_{storage}_c{c}"
                self.commands[key] = "python bench/workload.py " + " ".join(args)
                self.alternate(key, self._job_sample(args, n))

    def io_bound(self) -> None:
        s = self.sizes
        args = [
            "io",
            "--n",
            str(s.io_n),
            "--concurrency",
            str(s.io_concurrency),
            "--sleep",
            str(s.io_sleep),
        ]
        self.commands["io"] = "python bench/workload.py " + " ".join(args)
        floor = ["floor-io", *args[1:]]
        self.commands["io_floor"] = "python bench/workload.py " + " ".join(floor)
        library, bare = self._job_sample(args, s.io_n), self._job_sample(floor, s.io_n)

        def measure(lib: str) -> tuple[dict[str, Any] | None, str | None]:
            """Ours' turn also runs the plain-asyncio floor, so both see the same load."""
            if lib == "ours":
                self.record("io_floor", "asyncio", *bare(lib))
            return library(lib)

        self.alternate("io", measure)

    def _job_sample(
        self, args: list[str], n: int
    ) -> Callable[[str], tuple[dict[str, Any] | None, str | None]]:
        def measure(lib: str) -> tuple[dict[str, Any] | None, str | None]:
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

    def state(self) -> None:
        """The dedupe hook of examples/qa_pairs.py keeping one state key per question: local
        storage against in memory, alternating within each repetition (ours only)."""
        n = self.sizes.state_n
        if "ours" not in self.libs:
            return
        for storage in ("local", "in_memory"):
            args = ["dedupe", "--n", str(n), "--storage", storage]
            self.commands[f"state_{storage}"] = "python bench/workload.py " + " ".join(args)
        expected = n - n // 20  # every 20th input repeats a question and ends dead

        def measure(storage: str) -> tuple[dict[str, Any] | None, str | None]:
            p = self.workload("ours", ["dedupe", "--n", str(n), "--storage", storage])
            if p.error:
                return None, p.error
            assert p.result is not None
            if p.result["records"] != expected:
                return None, f"returned {p.result['records']} records, expected {expected}"
            return {"run_s": p.result["run_s"], "wall_s": p.wall_s}, None

        for rep in range(self.reps):
            order = ("local", "in_memory") if rep % 2 == 0 else ("in_memory", "local")
            for storage in order:
                self.record(f"state_{storage}", "ours", *measure(storage))

    def resume(self) -> None:
        s = self.sizes
        kill_at = int(s.resume_n * 0.7)
        start_args = ["resume-start", "--n", str(s.resume_n), "--concurrency", "50"]
        fresh_args = ["job", "--n", str(s.resume_fresh), "--concurrency", "50"]
        self.commands["resume"] = (
            f"BENCH_KILL_AT={kill_at} python bench/workload.py {' '.join(start_args)}  "
            "(at that call the job freezes, the stored count settles, and the process "
            "SIGKILLs itself: bench/_bench_hook.py), then "
            "python bench/workload.py resume-finish --job-id ID; against "
            f"python bench/workload.py {' '.join(fresh_args)}"
        )

        def measure(lib: str) -> tuple[dict[str, Any] | None, str | None]:
            appdir = self.appdir()
            id_file = appdir / "job_id"
            env = {"BENCH_KILL_AT": str(kill_at), "BENCH_JOB_ID_FILE": str(id_file)}
            first = self.workload(lib, start_args, appdir=appdir, env=env)
            if first.returncode != -signal.SIGKILL or not id_file.exists():
                return None, f"the job was not killed: {first.error or first.returncode}"
            killed = json.loads(id_file.read_text())
            job_id = killed["job_id"]
            durable = {k: killed[k] for k in ("stored_at_call", "stored_at_kill")}
            self.record("resume_kill", lib, durable, None)
            # Capped: starfish-core hung at exit after a failed resume (an aiosqlite thread).
            second = self.workload(
                lib, ["resume-finish", "--job-id", job_id], appdir=appdir, timeout=60
            )
            fresh = self.workload(lib, fresh_args)
            if fresh.error:
                return None, fresh.error
            assert fresh.result is not None
            if second.error:
                stored = f"{killed['stored_at_kill']:,} of {s.resume_n:,} were stored"
                return None, f"resume after kill -9 ({stored}) failed: {second.error}"
            assert second.result is not None
            if second.result["records"] != s.resume_n:
                return None, f"resume returned {second.result['records']} of {s.resume_n} records"
            return {
                "resume_s": second.result["run_s"],
                "resume_calls": second.result["calls"],
                "resume_wall_s": second.wall_s,
                "fresh_s": fresh.result["run_s"],
                "fresh_wall_s": fresh.wall_s,
            }, None

        self.alternate("resume", measure)
        if "peer" in self.libs and "resume" in self.errors and "peer" in self.errors["resume"]:
            # Without a resume the fresh run of the rest is still the peer's only way to finish.
            key = "resume_fresh_only"
            self.alternate(key, self._job_sample(fresh_args, s.resume_fresh))

    def scale(self, peer_cap: float) -> None:
        s = self.sizes
        args = ["job", "--n", str(s.scale_n), "--concurrency", str(s.scale_concurrency)]
        self.commands["scale"] = "python bench/workload.py " + " ".join(args)
        for _ in range(self.reps):  # one sample would make the 80 % check a coin toss
            appdir = self.appdir()
            p = self.workload("ours", args, appdir=appdir, timeout=1800)
            if p.error:
                self.record("scale", "ours", None, p.error)
            else:
                assert p.result is not None
                self.record(
                    "scale",
                    "ours",
                    {
                        "records": p.result["records"],
                        "run_s": p.result["run_s"],
                        "records_per_s": p.result["records_per_s"],
                        "wall_s": p.wall_s,
                        "maxrss_mb": p.maxrss_mb,
                    },
                    None,
                )
                out = appdir / "export.jsonl"
                ex_args = ["export", "--job-id", p.result["job_id"], "--out", str(out)]
                self.commands["export"] = (
                    "python bench/workload.py export --job-id ID --out FILE.jsonl"
                )
                e = self.workload("ours", ex_args, appdir=appdir, timeout=1800)
                if e.error:
                    self.record("export", "ours", None, e.error)
                else:
                    assert e.result is not None
                    size_mb = out.stat().st_size / 2**20
                    sample = {
                        "records": e.result["records"],
                        "run_s": e.result["run_s"],
                        "maxrss_mb": e.maxrss_mb,
                    }
                    self.record("export", "ours", {**sample, "file_mb": size_mb}, None)
            shutil.rmtree(appdir, ignore_errors=True)
        if "peer" in self.libs and peer_cap > 0:
            self._peer_scale_attempt(args, peer_cap)

    def _peer_scale_attempt(self, args: list[str], cap: float) -> None:
        """The peer cannot finish 1,000,000 inputs in 10 minutes: run it for `cap` seconds,
        count what it stored, and project."""
        appdir = self.appdir()
        p = self.workload("peer", args, appdir=appdir, timeout=cap)
        db = appdir / "db" / "metadata.db"
        done = 0
        if db.exists():
            with sqlite3.connect(db) as conn:
                done = conn.execute(
                    "SELECT count(*) FROM Records WHERE status = 'completed'"
                ).fetchone()[0]
        rate = done / p.wall_s if p.wall_s else 0.0
        sample = {
            "capped_at_s": cap,
            "completed": done,
            "records_per_s": rate,
            "projected_s": (self.sizes.scale_n / rate) if rate else None,
            "maxrss_mb": p.maxrss_mb,
        }
        self.record("scale", "peer", sample, None)
        shutil.rmtree(appdir, ignore_errors=True)

    def telemetry(self) -> None:
        script = BENCH / "bench_telemetry.py"
        if not script.exists():
            self.errors["telemetry"] = {"ours": "bench/bench_telemetry.py is not there yet"}
            return
        s = self.sizes
        args = ["--calls", str(s.telemetry_calls), "--runs", str(s.telemetry_runs), "--json"]
        self.commands["telemetry"] = "python bench/bench_telemetry.py " + " ".join(args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STARFISH_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.tmp / "pycache")
        proc = subprocess.run(
            [str(OURS_PYTHON), str(script), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            self.record("telemetry", "ours", None, (proc.stderr or proc.stdout)[-300:])
            return
        capture = data.get("capture", {})
        exits = data.get("exit", {})
        sample: dict[str, Any] = {}
        if "capture_event (on)" in capture:
            sample["capture_median_us"] = capture["capture_event (on)"]["median_us"]
            sample["capture_p99_us"] = capture["capture_event (on)"].get("p99_us")
        for name in ("ours, refuse", "ours, hang"):
            if name in exits:
                sample[f"exit_added_s ({name.split(', ')[1]})"] = exits[name]["added_exit_s"]
        self.record("telemetry", "ours", sample, None)
        self.samples["telemetry"]["raw"] = [data]

    def large_input(self) -> None:
        """`starfish run` over a generated JSONL file (bench/large_input.py), ours only."""
        n = self.sizes.large_rows
        self.commands["large_input"] = f"python bench/large_input.py --rows {n}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STARFISH_")}
        for _ in range(self.reps):
            proc = subprocess.run(
                [str(OURS_PYTHON), str(BENCH / "large_input.py"), "--rows", str(n)],
                env=env,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
            if proc.returncode or not lines:
                self.record("large_input", "ours", None, (proc.stderr or proc.stdout)[-300:])
                return
            result = json.loads(lines[-1][len("BENCH ") :])
            sample = {
                "maxrss_mb": result["ours_maxrss_mb"],
                "wall_s": result["ours_wall_s"],
                "file_mb": result["file_mb"],
            }
            self.record("large_input", "ours", sample, None)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def med(bench: Bench, key: str, lib: str, metric: str) -> float | None:
    values = [
        s[metric] for s in bench.samples.get(key, {}).get(lib, []) if s.get(metric) is not None
    ]
    return statistics.median(values) if values else None


@dataclass
class Row:
    """One line of the results table."""

    workload: str
    ours: float | None
    peer: float | None
    unit: str
    higher_is_better: bool
    target: str = ""
    passed: bool | None = None
    miss: str = ""
    peer_note: str = "—"

    @property
    def ratio(self) -> float | None:
        """How many times better ours is: peer/ours for times, ours/peer for rates."""
        if not self.ours or not self.peer:
            return None
        return self.ours / self.peer if self.higher_is_better else self.peer / self.ours


def _at_most(row: Row, limit: float, strict: bool = True) -> None:
    """Ours must stay under an absolute limit."""
    if row.ours is None:
        return
    row.passed = row.ours < limit if strict else row.ours <= limit
    if not row.passed:

        def show(v: float) -> str:
            return f"{v * 1000:.1f} ms" if row.unit == "s" and v < 10 else _val(v, row.unit)

        over = row.ours - limit
        row.miss = (
            f"{show(row.ours)} against {show(limit)}: "
            f"over by {show(over)} ({row.ours / limit:.3f}× the limit)"
        )


def _at_least(row: Row, floor: float) -> None:
    """Ours must reach an absolute rate."""
    if row.ours is None:
        return
    row.passed = row.ours >= floor
    if not row.passed:
        row.miss = (
            f"{_val(row.ours, row.unit)} against {_val(floor, row.unit)} "
            f"({row.ours / floor:.0%} of the target)"
        )


def _ratio_at_least(row: Row, want: float) -> None:
    """Ours must beat the peer by a factor; a failed check overrides an earlier pass."""
    if row.ratio is None or row.passed is False:
        return
    row.passed = row.ratio >= want
    if not row.passed:
        row.miss = f"{row.ratio:.1f}× the peer against {want:g}× ({want / row.ratio:.2f}× short)"


def build_rows(bench: Bench) -> list[Row]:
    s = bench.sizes
    rows: list[Row] = []

    def add(key: str, metric: str, title: str, unit: str, higher: bool, target: str = "") -> Row:
        row = Row(
            title,
            med(bench, key, "ours", metric),
            med(bench, key, "peer", metric),
            unit,
            higher,
            target,
        )
        if "peer" in bench.errors.get(key, {}):
            row.peer_note = "fails (below)"
        rows.append(row)
        return row

    _at_most(
        add("import", "wall_s", "`import starfish` (whole process)", "s", False, "< 0.1 s"), 0.1
    )
    add("import", "import_s", "`import starfish` (in process)", "s", False)
    row = add(
        f"job{s.job_small}",
        "wall_s",
        f"{s.job_small}-input job, whole process",
        "s",
        False,
        "< 0.25 s and ≥ 25× peer",
    )
    _at_most(row, 0.25)
    _ratio_at_least(row, 25)
    for c in s.concurrencies:
        row = add(
            f"noop_local_c{c}",
            "records_per_s",
            f"{s.overhead:,} no-op, local, c={c}",
            "/s",
            True,
            "≥ 60× peer",
        )
        if row.peer is None:
            row.target = "≥ 24,000/s (60× the peer's 400/s)"
            _at_least(row, 24_000)
        _ratio_at_least(row, 60)
    for c in s.concurrencies:
        row = add(
            f"noop_in_memory_c{c}",
            "records_per_s",
            f"{s.overhead:,} no-op, in memory, c={c}",
            "/s",
            True,
            "≥ 50,000/s",
        )
        _at_least(row, 50_000)
    ideal = s.io_n / s.io_concurrency * s.io_sleep
    title = f"{s.io_n:,} × {s.io_sleep * 1000:g} ms sleep, c={s.io_concurrency}"
    row = add("io", "run_s", title, "s", False, f"≤ 1.25 × ideal {ideal:g} s = {1.25 * ideal:g} s")
    _at_most(row, 1.25 * ideal, strict=False)
    floor = med(bench, "io_floor", "asyncio", "run_s")
    if floor is not None:
        rows.append(Row("the same sleeps in plain asyncio (no library)", floor, None, "s", False))
    row = add("resume", "resume_s", f"resume {s.resume_n:,} killed at 70 % (the rest)", "s", False)
    fresh = med(bench, "resume", "ours", "fresh_s")
    if fresh is not None:
        row.target = f"≤ fresh {s.resume_fresh:,} ({fresh:.3f} s) + 0.2 s"
        _at_most(row, fresh + 0.2, strict=False)
    add("resume", "resume_calls", f"inputs the resume ran (of {s.resume_n:,})", "calls", False)
    title = f"completed inputs durable at call {int(s.resume_n * 0.7):,} (no settling)"
    add("resume_kill", "stored_at_call", title, "calls", True)
    peer_fresh = med(bench, "resume_fresh_only", "peer", "run_s") or med(
        bench, "resume", "peer", "fresh_s"
    )
    rows.append(Row(f"fresh {s.resume_fresh:,}-input job", fresh, peer_fresh, "s", False))
    title = f"{s.state_n:,} inputs, dedupe hook keeping state"
    in_memory = add("state_in_memory", "run_s", f"{title}, in memory", "s", False)
    row = add("state_local", "run_s", f"{title}, local", "s", False)
    if in_memory.ours is not None:
        row.target = f"≤ 3 × in memory ({in_memory.ours:.3f} s)"
        _at_most(row, 3 * in_memory.ours, strict=False)
    if "scale" in bench.samples:
        base = med(bench, f"noop_local_c{s.scale_concurrency}", "ours", "records_per_s")
        row = add(
            "scale",
            "records_per_s",
            f"{s.scale_n:,} no-op, local, c={s.scale_concurrency}",
            "/s",
            True,
            f"≥ 80 % of the {s.overhead:,} figure",
        )
        # The peer cannot finish in 10 minutes: its rate is the better of its capped 1M attempt
        # (startup included) and its 10,000-input run, which flatters it.
        peer_rates = [
            med(bench, "scale", "peer", "records_per_s"),
            med(bench, f"noop_local_c{s.scale_concurrency}", "peer", "records_per_s"),
        ]
        peer_rate = max((r for r in peer_rates if r), default=None)
        row.peer = peer_rate
        if base:
            row.target = f"≥ 80 % of {base:,.0f}/s"
            _at_least(row, 0.8 * base)
        _at_most(
            add(
                "scale",
                "maxrss_mb",
                f"{s.scale_n:,} no-op: peak RSS (peer: at its cap)",
                "MB",
                False,
                "< 400 MB",
            ),
            400,
        )
        row = add("scale", "run_s", f"{s.scale_n:,} no-op: run time (peer projected)", "s", False)
        row.peer = s.scale_n / peer_rate if peer_rate else None
    add("export", "maxrss_mb", f"export {s.scale_n:,} records to JSONL: peak RSS", "MB", False)
    add("export", "run_s", f"export {s.scale_n:,} records to JSONL: time", "s", False)
    title = f"`starfish run` over a {s.large_rows:,}-row JSONL file"
    _at_most(add("large_input", "maxrss_mb", f"{title}: peak RSS", "MB", False, "< 300 MB"), 300)
    add("large_input", "wall_s", f"{title}: time", "s", False)
    _at_most(
        add("telemetry", "capture_median_us", "`capture_event` median", "µs", False, "< 20 µs"), 20
    )
    add("telemetry", "capture_p99_us", "`capture_event` p99", "µs", False)
    for name in ("refuse", "hang"):
        add(
            "telemetry",
            f"exit_added_s ({name})",
            f"exit time added, endpoint down ({name})",
            "s",
            False,
        )
    return rows


def render_table(rows: list[Row], peer: bool) -> str:
    head = ["Workload", "Ours (median)", "Peer (median)", "Ours vs peer", "Target", "Result"]
    if not peer:
        head.remove("Peer (median)")
        head.remove("Ours vs peer")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        result = {True: "PASS", False: "MISS", None: ""}[r.passed]
        cells = [r.workload, _val(r.ours, r.unit)]
        if peer:
            ratio = f"{r.ratio:,.1f}×" if r.ratio else ""
            cells += [r.peer_note if r.peer is None else _val(r.peer, r.unit), ratio]
        cells += [r.target, result]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _val(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "µs":
        return f"{v:.1f} µs"
    if unit == "calls":
        return f"{v:,.0f}"
    return f"{v:.3f} s" if v < 100 else f"{v:,.0f} s"


def machine() -> dict[str, str]:
    info = {"python": platform.python_version(), "os": f"{platform.system()} {platform.release()}"}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        info["cpu"] = platform.processor()
    info["cores"] = str(os.cpu_count())
    with open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
    info["ram"] = f"{kb / 2**20:.1f} GiB"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    info["commit"] = commit.stdout.strip()
    return info


def draw_chart(rows: list[Row], path: Path) -> bool:
    """A bar per workload with a peer figure: how many times better ours is (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(r.workload.replace("`", ""), r.ratio, r.target) for r in rows if r.ratio]
    if not data:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(data) + 1.6))
    names = [d[0] for d in data][::-1]
    ratios = [d[1] for d in data][::-1]
    bars = ax.barh(names, ratios, color="#2a7ab9")
    ax.set_xscale("log")
    ax.axvline(1, color="grey", lw=1)
    for bar, (_, ratio, target) in zip(bars, data[::-1], strict=True):
        ax.text(
            ratio * 1.08,
            bar.get_y() + bar.get_height() / 2,
            f"{ratio:,.1f}×" if ratio < 10 else f"{ratio:,.0f}×",
            va="center",
            fontsize=9,
        )
        if "×" in target and "≥" in target:
            want = float(target.split("≥ ")[1].split("×")[0])
            y = bar.get_y()
            ax.plot([want, want], [y, y + bar.get_height()], color="#d62728", lw=2)
    ax.set_xlim(0.5, max(ratios) * 4)
    ax.set_xlabel("times better than starfish-core 0.1.3 (log scale; red mark: target)")
    ax.set_title("Starfish vs starfish-core 0.1.3, same machine, same run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_doc(
    bench: Bench, rows: list[Row], info: dict[str, str], argv: list[str], chart: bool
) -> None:
    analysis = f"{ANALYSIS_START}\n_No analysis yet._\n{ANALYSIS_END}"
    llm_block = None  # written by bench/bench_llm.py; kept as it is
    if DOC.exists():
        text = DOC.read_text()
        if ANALYSIS_START in text and ANALYSIS_END in text:
            analysis = text[
                text.index(ANALYSIS_START) : text.index(ANALYSIS_END) + len(ANALYSIS_END)
            ]
        if LLM_START in text and LLM_END in text:
            llm_block = text[text.index(LLM_START) : text.index(LLM_END) + len(LLM_END)]
    ours_v = (bench.samples.get("import", {}).get("ours") or [{}])[0].get("version", "?")
    peer_v = (bench.samples.get("import", {}).get("peer") or [{}])[0].get("version", "?")
    misses = [r for r in rows if r.passed is False]
    peer_line = (
        f"starfish-core {peer_v} from PyPI in its own venv (`bench/peer/.venv`)"
        if "peer" in bench.libs
        else "starfish-core not run (`--only ours`)"
    )
    lines = [
        "# Benchmarks: Starfish vs starfish-core",
        "",
        "Written by `bench/run.py` (`make bench`); the analysis section is kept between runs.",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {info.get('cpu', '?')}, {info['cores']} cores, {info['ram']} RAM, "
        f"{info['os']}; "
        "shared with other work while measured, so figures are medians of alternating runs",
        f"- Python {info['python']}; Starfish {ours_v} (commit {info['commit']}); {peer_line}",
        f"- Load average (1 min) at start and end: {bench.load[0]:.2f} / {os.getloadavg()[0]:.2f}",
        f"- Command: `.venv/bin/python {' '.join(['bench/run.py', *argv])}`"
        + f"; repetitions per workload and library: {bench.reps}",
        "- Every workload is a whole process with `TELEMETRY_ENABLED=false`, "
        "`POSTHOG_HOST=http://127.0.0.1:9`, a fresh `STARFISH_LOCAL_STORAGE_DIR`, and "
        "`LITELLM_LOCAL_MODEL_COST_MAP=True` (the peer's litellm otherwise fetches a price list "
        "at import). Bytecode is compiled once by a warm-up run into a cache outside the tree "
        "(`PYTHONPYCACHEPREFIX`), as an installed package would be. Peak RSS is the child's own "
        "`ru_maxrss` from `wait4`. Ratios say how many times better ours is (time: peer / ours; "
        "rate: ours / peer).",
        "",
    ]
    if chart:
        lines += [f"![Starfish vs starfish-core]({CHART.name})", ""]
    lines += ["## Results", "", render_table(rows, "peer" in bench.libs), ""]
    if misses:
        lines += ["### Targets missed", ""]
        lines += [f"- **{r.workload}**: {r.miss}." for r in misses]
        lines.append("")
    if bench.errors:
        lines += ["### Runs that failed", ""]
        for key, by_lib in bench.errors.items():
            for lib, err in by_lib.items():
                lines.append(f"- `{key}`, {lib}: {err[:400]}")
        lines.append("")
    if llm_block:
        lines += ["## The model layer (bench/bench_llm.py)", "", llm_block, ""]
    lines += ["## Analysis", "", analysis, "", "## Running it", ""]
    lines += [
        "`make bench` installs the `bench` extra (matplotlib) and runs `bench/run.py`, which",
        "creates `bench/peer/.venv` with starfish-core on first use (`bench/peer.py`). Options:",
        "`--reps N`, `--only ours|peer|both`, `--skip-scale`, `--peer-scale-cap SECONDS`,",
        "`--workloads cold,throughput,io,resume,state,scale,telemetry,large_input`, `--quick`",
        "(tiny sizes, the smoke run of `make test`: `tests/test_bench_smoke.py`), `--no-write`",
        "(print only).",
        "Raw samples of the last writing run are in `bench/out/results.json` (not committed).",
        "",
        "## Exact workload commands",
        "",
    ]
    lines += [
        "Each runs with `.venv/bin/python` for ours and `bench/peer/.venv/bin/python` for the",
        "peer, from a scratch directory, in the environment described at the top.",
        "",
    ]
    lines += [f"- `{k}`: `{v}`" for k, v in bench.commands.items()]
    lines.append("")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per workload and library")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    parser.add_argument("--only", choices=["ours", "peer", "both"], default="both")
    parser.add_argument("--skip-scale", action="store_true", help="skip the 1,000,000-input run")
    parser.add_argument(
        "--peer-scale-cap",
        type=float,
        default=60.0,
        help="seconds for the peer's 1M attempt (0: none)",
    )
    parser.add_argument(
        "--workloads",
        default=None,
        help="comma-separated subset of cold,throughput,io,resume,state,scale,telemetry,"
        "large_input (default: all; --quick leaves out scale and large_input)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only: no docs, no chart")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds before a child is killed"
    )
    args = parser.parse_args(argv)
    argv_used = list(argv if argv is not None else sys.argv[1:])

    sizes = Sizes.quick() if args.quick else Sizes()
    libs: dict[str, Path] = {}
    if args.only in ("ours", "both"):
        libs["ours"] = OURS_PYTHON
    if args.only in ("peer", "both"):
        sys.path.insert(0, str(BENCH))
        from peer import ensure_peer

        libs["peer"] = ensure_peer()
    reps = 1 if args.quick and "--reps" not in argv_used else args.reps
    bench = Bench(sizes=sizes, reps=reps, libs=libs, timeout=args.timeout)
    everything = "cold,throughput,io,resume,state,scale,telemetry,large_input"
    chosen = set((args.workloads or everything).split(","))
    if args.skip_scale or (args.quick and args.workloads is None):
        chosen.discard("scale")
        chosen.discard("large_input")
    load = os.getloadavg()
    print(
        f"libraries: {', '.join(libs)}; repetitions: {reps}; load average {load[0]:.2f}", flush=True
    )
    try:
        bench.warm_up()
        if "cold" in chosen:
            bench.cold_start()
        if "throughput" in chosen:
            bench.throughput()
        if "io" in chosen:
            bench.io_bound()
        if "resume" in chosen:
            bench.resume()
        if "state" in chosen:
            bench.state()
        if "scale" in chosen and "ours" in libs:
            bench.scale(args.peer_scale_cap if not args.quick else 0)
        if "telemetry" in chosen and "ours" in libs:
            bench.telemetry()
        if "large_input" in chosen and "ours" in libs:
            bench.large_input()
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)

    rows = [r for r in build_rows(bench) if r.ours is not None or r.peer is not None]
    print()
    print(render_table(rows, "peer" in libs))
    for r in rows:
        if r.passed is False:
            print(f"MISS {r.workload}: {r.miss}")
    if args.quick:
        print("(quick sizes: fixed costs dominate, so PASS/MISS here says nothing of the targets)")
    if not args.no_write:
        RAW.parent.mkdir(parents=True, exist_ok=True)
        raw = {"samples": bench.samples, "errors": bench.errors, "commands": bench.commands}
        RAW.write_text(json.dumps(raw, indent=1))
        chart = draw_chart(rows, CHART)
        write_doc(bench, rows, machine(), argv_used, chart)
        print(
            f"\nwrote {DOC.relative_to(ROOT)}"
            + (f" and {CHART.relative_to(ROOT)}" if chart else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
