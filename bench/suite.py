"""The workloads of the suite: what each one runs, for which library, and which samples it keeps.

Each is a function of the harness (bench/harness.py) that records its samples under named keys;
bench/targets.py turns those into the rows of the results table. `WORKLOADS` lists them in the
order they run, under the names `--workloads` takes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from typing import Any

from harness import BENCH, OURS_PYTHON, Bench, Outcome, child_env, run_proc


def cold_start(bench: Bench) -> None:
    bench.commands["import"] = (
        'python -c "import starfish" (whole process); python bench/workload.py import'
    )

    def imp(lib: str) -> Outcome:
        p = run_proc(
            [str(bench.libs[lib]), "-c", "import starfish"],
            child_env(bench.appdir()),
            bench.timeout,
            bench.tmp,
        )
        q = bench.workload(lib, ["import"])
        if p.returncode or q.error:
            return None, q.error or p.tail
        assert q.result is not None
        return {
            "wall_s": p.wall_s,
            "import_s": q.result["import_s"],
            "version": q.result["version"],
        }, None

    bench.alternate("import", imp)
    n = bench.sizes.job_small
    args = ["job", "--n", str(n), "--concurrency", "10"]
    bench.commands[f"job{n}"] = "python bench/workload.py " + " ".join(args)

    def job(lib: str) -> Outcome:
        p = bench.workload(lib, args)
        if p.error:
            return None, p.error
        return {"wall_s": p.wall_s, "maxrss_mb": p.maxrss_mb}, None

    bench.alternate(f"job{n}", job)


def throughput(bench: Bench) -> None:
    n = bench.sizes.overhead
    for storage in ("local", "in_memory"):
        for c in bench.sizes.concurrencies:
            args = ["job", "--n", str(n), "--concurrency", str(c), "--storage", storage]
            key = f"noop_{storage}_c{c}"
            bench.commands[key] = "python bench/workload.py " + " ".join(args)
            bench.alternate(key, bench.job_sample(args, n))


def io_bound(bench: Bench) -> None:
    s = bench.sizes
    args = [
        "io",
        "--n",
        str(s.io_n),
        "--concurrency",
        str(s.io_concurrency),
        "--sleep",
        str(s.io_sleep),
    ]
    bench.commands["io"] = "python bench/workload.py " + " ".join(args)
    floor = ["floor-io", *args[1:]]
    bench.commands["io_floor"] = "python bench/workload.py " + " ".join(floor)
    library, bare = bench.job_sample(args, s.io_n), bench.job_sample(floor, s.io_n)

    def measure(lib: str) -> Outcome:
        """Ours' turn also runs the plain-asyncio floor, so both see the same load."""
        if lib == "ours":
            bench.record("io_floor", "asyncio", *bare(lib))
        return library(lib)

    bench.alternate("io", measure)


def state(bench: Bench) -> None:
    """The dedupe hook of examples/qa_pairs.py keeping one state key per question: local
    storage against in memory, alternating within each repetition (ours only)."""
    n = bench.sizes.state_n
    for storage in ("local", "in_memory"):
        args = ["dedupe", "--n", str(n), "--storage", storage]
        bench.commands[f"state_{storage}"] = "python bench/workload.py " + " ".join(args)
    expected = n - n // 20  # every 20th input repeats a question and ends dead

    def measure(storage: str) -> Outcome:
        p = bench.workload("ours", ["dedupe", "--n", str(n), "--storage", storage])
        if p.error:
            return None, p.error
        assert p.result is not None
        if p.result["records"] != expected:
            return None, f"returned {p.result['records']} records, expected {expected}"
        return {"run_s": p.result["run_s"], "wall_s": p.wall_s}, None

    for rep in range(bench.reps):
        order = ("local", "in_memory") if rep % 2 == 0 else ("in_memory", "local")
        for storage in order:
            bench.record(f"state_{storage}", "ours", *measure(storage))


def jobs_list(bench: Bench) -> None:
    """`starfish jobs list` as a whole process over many stored jobs (ours only): the jobs are
    stored once, the listing is timed `reps` times after one untimed run that compiles it."""
    n = bench.sizes.stored_jobs
    bench.commands["jobs_list"] = (
        f"python bench/workload.py store-jobs --n {n}, then starfish jobs list"
    )
    appdir = bench.appdir()
    stored = bench.workload("ours", ["store-jobs", "--n", str(n)], appdir=appdir)
    if stored.error:
        bench.record("jobs_list", "ours", None, stored.error)
        return
    cli = OURS_PYTHON.with_name("starfish")
    cmd = [str(cli)] if cli.exists() else [str(OURS_PYTHON), "-m", "starfish"]
    cmd += ["jobs", "list"]
    env = child_env(appdir)
    run_proc(cmd, env, bench.timeout, bench.tmp)
    for _ in range(bench.reps):
        p = run_proc(cmd, env, bench.timeout, bench.tmp)
        last = p.tail.strip().splitlines()[-1:] or [""]
        if p.returncode or not re.fullmatch(r"[0-9a-f]{32}", last[0].split(" ")[0]):
            bench.record("jobs_list", "ours", None, f"exit {p.returncode}: {p.tail[-300:]}")
            return
        bench.record("jobs_list", "ours", {"wall_s": p.wall_s, "maxrss_mb": p.maxrss_mb}, None)
    shutil.rmtree(appdir, ignore_errors=True)


def resume(bench: Bench) -> None:
    s = bench.sizes
    kill_at = int(s.resume_n * 0.7)
    start_args = ["resume-start", "--n", str(s.resume_n), "--concurrency", "50"]
    fresh_args = ["job", "--n", str(s.resume_fresh), "--concurrency", "50"]
    bench.commands["resume"] = (
        f"BENCH_KILL_AT={kill_at} python bench/workload.py {' '.join(start_args)}  "
        "(at that call the job freezes, the stored count settles, and the process "
        "SIGKILLs itself: bench/_bench_hook.py), then "
        "python bench/workload.py resume-finish --job-id ID; against "
        f"python bench/workload.py {' '.join(fresh_args)}"
    )

    def measure(lib: str) -> Outcome:
        appdir = bench.appdir()
        id_file = appdir / "job_id"
        env = {"BENCH_KILL_AT": str(kill_at), "BENCH_JOB_ID_FILE": str(id_file)}
        first = bench.workload(lib, start_args, appdir=appdir, env=env)
        if first.returncode != -signal.SIGKILL or not id_file.exists():
            return None, f"the job was not killed: {first.error or first.returncode}"
        killed = json.loads(id_file.read_text())
        job_id = killed["job_id"]
        durable = {k: killed[k] for k in ("stored_at_call", "stored_at_kill")}
        bench.record("resume_kill", lib, durable, None)
        # Capped: starfish-core hung at exit after a failed resume (an aiosqlite thread).
        second = bench.workload(
            lib, ["resume-finish", "--job-id", job_id], appdir=appdir, timeout=60
        )
        fresh = bench.workload(lib, fresh_args)
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

    bench.alternate("resume", measure)
    if "peer" in bench.libs and "resume" in bench.errors and "peer" in bench.errors["resume"]:
        # Without a resume the fresh run of the rest is still the peer's only way to finish.
        key = "resume_fresh_only"
        bench.alternate(key, bench.job_sample(fresh_args, s.resume_fresh))


def scale(bench: Bench) -> None:
    s = bench.sizes
    args = ["job", "--n", str(s.scale_n), "--concurrency", str(s.scale_concurrency)]
    bench.commands["scale"] = "python bench/workload.py " + " ".join(args)
    for _ in range(bench.reps):  # one sample would make the 80 % check a coin toss
        appdir = bench.appdir()
        p = bench.workload("ours", args, appdir=appdir, timeout=1800)
        if p.error:
            bench.record("scale", "ours", None, p.error)
        else:
            assert p.result is not None
            bench.record(
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
            bench.commands["export"] = (
                "python bench/workload.py export --job-id ID --out FILE.jsonl"
            )
            e = bench.workload("ours", ex_args, appdir=appdir, timeout=1800)
            if e.error:
                bench.record("export", "ours", None, e.error)
            else:
                assert e.result is not None
                size_mb = out.stat().st_size / 2**20
                sample = {
                    "records": e.result["records"],
                    "run_s": e.result["run_s"],
                    "maxrss_mb": e.maxrss_mb,
                }
                bench.record("export", "ours", {**sample, "file_mb": size_mb}, None)
        shutil.rmtree(appdir, ignore_errors=True)
    if "peer" in bench.libs and bench.peer_scale_cap > 0:
        _peer_scale_attempt(bench, args, bench.peer_scale_cap)


def _peer_scale_attempt(bench: Bench, args: list[str], cap: float) -> None:
    """The peer cannot finish 1,000,000 inputs in 10 minutes: run it for `cap` seconds,
    count what it stored, and project."""
    appdir = bench.appdir()
    p = bench.workload("peer", args, appdir=appdir, timeout=cap)
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
        "projected_s": (bench.sizes.scale_n / rate) if rate else None,
        "maxrss_mb": p.maxrss_mb,
    }
    bench.record("scale", "peer", sample, None)
    shutil.rmtree(appdir, ignore_errors=True)


def telemetry(bench: Bench) -> None:
    script = BENCH / "bench_telemetry.py"
    if not script.exists():
        bench.errors["telemetry"] = {"ours": "bench/bench_telemetry.py is not there yet"}
        return
    s = bench.sizes
    args = ["--calls", str(s.telemetry_calls), "--runs", str(s.telemetry_runs), "--json"]
    bench.commands["telemetry"] = "python bench/bench_telemetry.py " + " ".join(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARFISH_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(bench.tmp / "pycache")
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
        bench.record("telemetry", "ours", None, (proc.stderr or proc.stdout)[-300:])
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
    bench.record("telemetry", "ours", sample, None)
    bench.samples["telemetry"]["raw"] = [data]


def large_input(bench: Bench) -> None:
    """`starfish run` over a generated JSONL file (bench/large_input.py), ours only."""
    n = bench.sizes.large_rows
    bench.commands["large_input"] = f"python bench/large_input.py --rows {n}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARFISH_")}
    for _ in range(bench.reps):
        proc = subprocess.run(
            [str(OURS_PYTHON), str(BENCH / "large_input.py"), "--rows", str(n)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
        if proc.returncode or not lines:
            bench.record("large_input", "ours", None, (proc.stderr or proc.stdout)[-300:])
            return
        result = json.loads(lines[-1][len("BENCH ") :])
        sample = {
            "maxrss_mb": result["ours_maxrss_mb"],
            "wall_s": result["ours_wall_s"],
            "file_mb": result["file_mb"],
        }
        bench.record("large_input", "ours", sample, None)


# name -> (what runs it, whether it measures ours only: skipped under `--only peer`), in run order
WORKLOADS: dict[str, tuple[Callable[[Bench], None], bool]] = {
    "cold": (cold_start, False),
    "throughput": (throughput, False),
    "io": (io_bound, False),
    "resume": (resume, False),
    "state": (state, True),
    "jobs_list": (jobs_list, True),
    "scale": (scale, True),
    "telemetry": (telemetry, True),
    "large_input": (large_input, True),
}
