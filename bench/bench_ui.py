"""Viewer and Arrow benchmarks (issue 21) over one job of 1,000,000 stored records:

1. `starfish ui` answers (a real server, timed over HTTP on loopback): the jobs list, the job
   page, records pages at the start, middle and end (keyset), the dead inputs, failed
   attempts, a text search; each the slowest of 5 requests. Target: every one under 0.5 s.
2. The live counts of a running job of that size (what the jobs page reads each second).
3. `to_arrow()` in its own process: peak RSS above the process before the call, against the
   resulting table's size. Target: under 2x. The libraries it loads are imported before the
   call, pandas among them when installed: pyarrow imports it on its first conversion of
   Python values (about 55 MB, once a process); the figure is printed beside.

    python bench/bench_ui.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

MAKE = """
import asyncio
from starfish import data_factory

@data_factory(max_concurrency=200, show_progress=False, dead_queue_threshold=1,
              stop_threshold=0, job_run_stop_threshold=0)
async def rows(i: int):
    if i % 1000 == 999:
        raise ValueError(f"input {i} was unlucky")
    return [{"i": i, "text": f"row {i} of the benchmark", "tags": ["a", "b"]}]

try:
    rows.run(i=list(range(N)))
except Exception:
    pass
print(rows.job_id)
"""

ARROW = """
import json, resource, sys
from starfish import jobs
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
import pyarrow, pyarrow.parquet  # the libraries to_arrow loads: code, not conversion memory
start = rss()
try:  # pyarrow imports pandas, when installed, on its first conversion of Python values
    import pandas
except ImportError:
    pass
libraries = rss() - start
job = jobs.load_job(sys.argv[1])
before = rss()
t0 = __import__("time").perf_counter()
table = job.to_arrow()
took = __import__("time").perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rows": table.num_rows, "table_bytes": table.nbytes, "before": before,
                  "peak": peak, "seconds": took, "pandas_import": libraries}))
"""


def timed(url: str, runs: int = 5) -> float:
    worst = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        worst = max(worst, time.perf_counter() - t0)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    n = parser.parse_args().n
    folder = tempfile.mkdtemp(prefix="starfish-bench-ui-")
    env = {**os.environ, "STARFISH_LOCAL_STORAGE_DIR": folder, "TELEMETRY_ENABLED": "false"}
    t0 = time.perf_counter()
    made = subprocess.run(
        [sys.executable, "-c", f"N = {n}\n" + MAKE], env=env, capture_output=True, text=True
    )
    job_id = made.stdout.strip().splitlines()[-1]
    print(f"stored a job of {n:,} inputs in {time.perf_counter() - t0:.1f} s: {job_id}")
    port = 18765
    ui = subprocess.Popen(
        [sys.executable, "-m", "starfish", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/api/jobs", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        rec = f"{base}/api/jobs/{job_id}/records?limit=50"
        rows = {
            "jobs list": f"{base}/api/jobs",
            "job page": f"{base}/api/jobs/{job_id}",
            "records, first page": rec,
            "records, from input 500,000": rec + "&after=500000",
            "records, last page": rec + f"&after={n - 40}",
            "dead inputs, first page": rec + "&status=dead",
            "dead inputs, from 900,000": rec + "&status=dead&after=900000",
            "failed attempts, from 600,000": rec + "&status=failed&after=600000.0",
            "search 'row 777777 ', one window": rec + "&q=row%20777777%20",
        }
        results = {name: timed(url) for name, url in rows.items()}
    finally:
        ui.send_signal(2)
        ui.wait(timeout=30)
    for name, took in results.items():
        print(f"  {name:<36} {took * 1000:7.1f} ms (slowest of 5)")
    sys.path.insert(0, os.getcwd())
    os.environ["STARFISH_LOCAL_STORAGE_DIR"] = folder
    from starfish.ui.queries import Reader, _live_counts, database_path

    reader = Reader(database_path())
    with reader._db() as conn:
        assert conn is not None
        (jid,) = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        t0 = time.perf_counter()
        counts, _ = _live_counts(conn, jid)
        live = time.perf_counter() - t0
    print(f"  live counts of the running-job path   {live * 1000:7.1f} ms ({counts})")
    arrow = subprocess.run(
        [sys.executable, "-c", ARROW, job_id], env=env, capture_output=True, text=True
    )
    if arrow.returncode != 0:
        print(arrow.stderr)
        return
    a = json.loads(arrow.stdout)
    grown, size = a["peak"] - a["before"], a["table_bytes"]
    print(
        f"  to_arrow: {a['rows']:,} rows in {a['seconds']:.1f} s; table {size / 1e6:.0f}"
        f" MB; peak RSS above the start {grown / 1e6:.0f} MB = "
        f"{grown / a['table_bytes']:.2f}x the table (pandas, imported before: "
        f"{a['pandas_import'] / 1e6:.0f} MB)"
    )
    print(f"  (self: max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB)")


if __name__ == "__main__":
    main()
