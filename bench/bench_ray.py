"""The Ray executor on this machine: overhead against ideal, batched throughput, start-up.

Ray must run in a network namespace with only loopback (it probes outside addresses and binds
every interface otherwise), so this script re-runs itself under `unshare -n` (root needed).

    .venv/bin/python bench/bench_ray.py [--reps 3]

Prints one JSON line per measurement and a summary with medians; the figures and the machine
go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

STARTUP = re.compile(r"Ray workers ready in ([0-9.]+) s")


class _Startup(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = STARTUP.search(record.getMessage())
        if match:
            self.seconds.append(float(match.group(1)))


def _in_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def sleeps(executor: str, n: int, concurrency: int, seconds: float) -> float:
    from starfish import data_factory

    @data_factory(executor=executor, max_concurrency=concurrency, show_progress=False)
    async def nap(i: int) -> dict[str, int]:
        import asyncio

        await asyncio.sleep(seconds)
        return {"i": i}

    start = time.perf_counter()
    assert len(nap.run(i=list(range(n)))) == n
    return time.perf_counter() - start


def noops(executor: str, n: int, concurrency: int) -> float:
    from starfish import data_factory

    @data_factory(executor=executor, max_concurrency=concurrency, show_progress=False)
    async def noop(i: int) -> dict[str, int]:
        return {"i": i}

    start = time.perf_counter()
    assert len(noop.run(i=list(range(n)))) == n
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not _in_namespace():
        cmd = " ".join([sys.executable, *sys.argv])
        return subprocess.call(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {cmd}"])

    os.environ.setdefault("TELEMETRY_ENABLED", "false")
    os.environ["STARFISH_LOCAL_STORAGE_DIR"] = tempfile.mkdtemp(prefix="starfish-bench-ray-")
    handler = _Startup()
    logging.getLogger("starfish").addHandler(handler)
    logging.getLogger("starfish").setLevel(logging.INFO)
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray_init = time.perf_counter() - started
    n_sleep, n_noop = (200, 2000) if args.quick else (2000, 20000)
    rows: dict[str, list[float]] = {}
    for _ in range(args.reps):
        for executor in ("local", "ray"):
            wall = sleeps(executor, n_sleep, 100, 0.01)
            startup = handler.seconds.pop() if executor == "ray" else 0.0
            rows.setdefault(f"sleeps_{executor}_s", []).append(wall - startup)
            rows.setdefault(f"startup_{executor}_s", []).append(startup)
            wall = noops(executor, n_noop, 1000)
            startup = handler.seconds.pop() if executor == "ray" else 0.0
            rows.setdefault(f"noop_{executor}_per_s", []).append(n_noop / (wall - startup))
    ray.shutdown()
    summary = {k: statistics.median(v) for k, v in rows.items()}
    summary["ray_init_s"] = ray_init
    summary["ideal_sleeps_s"] = n_sleep * 0.01 / 100
    summary["sleeps_ray_over_ideal"] = summary["sleeps_ray_s"] / summary["ideal_sleeps_s"]
    summary["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python "
    summary["machine"] += platform.python_version()
    print(json.dumps({"reps": rows}, indent=None))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
