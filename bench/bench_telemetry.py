"""Telemetry costs: capture on the caller's thread, and the exit time it adds to a process.

(a) `capture_event` / `capture_job_event` cost per call, median and p99 over `--calls` calls,
    plus the first call of a process (settings are read then). With sending on, a finished
    job's event is appended to the outbox on the caller's thread (so `os._exit` cannot lose it);
    in local mode (the default while no project key is configured) it is only queued.
(b) Added exit wall time of a whole process that captures one job event, against a loopback
    PostHog receiver that answers ok / refuses / answers 500 / accepts and never answers, versus
    the same process with telemetry off: medians over `--runs` runs. For comparison, the same
    with a plain in-process posthog client (the "sender thread" design we did not choose).

    .venv/bin/python bench/bench_telemetry.py [--calls 100000] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
JOB_ID = "0b9f6a36-6f5b-4d5e-9d0c-2f6e8e3a0a11"
# Sending needs a project key; this one only ever reaches the loopback receiver or a dead port.
BENCH_KEY = "phc_benchLoopbackOnly"

OURS = f"""
import time
from starfish.telemetry import TelemetryData
from starfish.telemetry.service import capture_job_event
capture_job_event(TelemetryData(job_id={JOB_ID!r}, num_inputs=20, target_reached=True,
    config={{"max_concurrency": 50}}, error_summary={{"ValueError": 1}}))
print(time.time(), flush=True)
"""

# The alternative: a same-process sender (posthog's own consumer thread, flushed at exit).
PLAIN_POSTHOG = f"""
import os, time, logging
logging.getLogger("posthog").disabled = True
from posthog import Posthog
client = Posthog("phc_bench", host=os.environ["POSTHOG_HOST"], disable_geoip=True)
client.capture("data_factory_job_complete", distinct_id={JOB_ID!r},
    properties={{"num_inputs": 20, "$process_person_profile": False}})
print(time.time(), flush=True)
"""


def _receiver_class() -> Any:
    path = ROOT / "tests" / "posthog_receiver.py"
    spec = importlib.util.spec_from_file_location("_bench_rx", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PostHogReceiver


def _quantiles(samples_ns: list[int]) -> dict[str, float]:
    samples_ns.sort()
    n = len(samples_ns)
    return {
        "median_us": samples_ns[n // 2] / 1000,
        "p99_us": samples_ns[min(n - 1, int(n * 0.99))] / 1000,
    }


def bench_capture(calls: int) -> dict[str, Any]:
    """Per-call cost on the caller's thread, telemetry on (dead endpoint) and off."""
    from starfish.telemetry import Event, TelemetryData
    from starfish.telemetry import service as service_module
    from starfish.telemetry.schema import JOB_EVENT
    from starfish.telemetry.service import capture_job_event

    data = TelemetryData(
        job_id=JOB_ID,
        target_reached=True,
        num_inputs=20,
        config={"max_concurrency": 50, "batch_size": 1},
        error_summary={"ValueError": 2},
    )
    event = Event(JOB_EVENT, data.to_dict(), client_id=JOB_ID)
    clock = time.perf_counter_ns
    results: dict[str, Any] = {}
    service_module._reset_default_service()
    svc = service_module.default_service()
    cases = [
        ("capture_event (on)", lambda: svc.capture_event(event)),
        ("capture_job_event (on)", lambda: capture_job_event(data)),
    ]
    for name, call in cases:
        samples = []
        for _ in range(calls):
            start = clock()
            call()
            samples.append(clock() - start)
        svc._queue.clear()
        results[name] = _quantiles(samples)
    os.environ["TELEMETRY_ENABLED"] = "local"
    service_module._reset_default_service()
    local = service_module.default_service()
    samples = []
    for _ in range(calls):
        start = clock()
        capture_job_event(data)
        samples.append(clock() - start)
    local._queue.clear()
    results["capture_job_event (local)"] = _quantiles(samples)
    service_module._reset_default_service()
    os.environ["TELEMETRY_ENABLED"] = "false"
    samples = []
    for _ in range(calls):
        start = clock()
        capture_job_event(data)
        samples.append(clock() - start)
    results["capture_job_event (off)"] = _quantiles(samples)
    os.environ["TELEMETRY_ENABLED"] = "true"
    return results


def bench_first_call(runs: int, env: dict[str, str]) -> dict[str, float]:
    code = (
        "import time\nfrom starfish.telemetry import TelemetryData\n"
        "from starfish.telemetry.service import capture_job_event\n"
        "d = TelemetryData(num_inputs=1)\nt = time.perf_counter_ns()\ncapture_job_event(d)\n"
        "print((time.perf_counter_ns() - t) / 1000)\n"
    )
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        samples.append(float(out.stdout.split()[-1]))
    return {"median_us": statistics.median(samples)}


def _deliverers_alive(directory: str) -> bool:
    needle = f"STARFISH_LOCAL_STORAGE_DIR={directory}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                mine = needle in (entry / "environ").read_bytes().split(b"\0")
                if mine and "\nState:\tZ" not in (entry / "status").read_text():
                    return True
            except OSError:
                continue
    return False


def _wait_quiet(directory: str, limit: float = 10.0) -> None:
    """Let the previous run's detached deliverer finish, so it does not steal the next run's CPU."""
    if not Path("/proc/self/environ").exists():
        time.sleep(1.0)
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and _deliverers_alive(directory):
        time.sleep(0.02)


def _one_run(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(whole wall time, exit time after the last statement) of one process."""
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    gone = time.time()
    if proc.returncode != 0 or proc.stderr.strip():
        raise RuntimeError(f"bench process failed: {proc.stderr.strip()[-500:]}")
    return gone - start, gone - float(proc.stdout.split()[-1])


def bench_exit(runs: int) -> dict[str, Any]:
    receiver_cls = _receiver_class()
    receivers = {mode: receiver_cls(mode).start() for mode in ("ok", "refuse", "500", "hang")}
    base = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "CI": "1",
        "STARFISH_TELEMETRY_API_KEY": BENCH_KEY,
    }
    base.pop("TELEMETRY_DEBUG", None)
    base.pop("DO_NOT_TRACK", None)
    variants: dict[str, tuple[str, dict[str, str]]] = {
        "off": (OURS, {"TELEMETRY_ENABLED": "false", "POSTHOG_HOST": receivers["ok"].url})
    }
    for mode, rec in receivers.items():
        variants[f"ours, {mode}"] = (OURS, {"TELEMETRY_ENABLED": "true", "POSTHOG_HOST": rec.url})
    for mode in ("ok", "refuse", "hang"):
        variants[f"plain posthog, {mode}"] = (PLAIN_POSTHOG, {"POSTHOG_HOST": receivers[mode].url})
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    try:
        for _ in range(runs):  # alternate variants within each round, so drift hits all alike
            for name, (code, extra) in variants.items():
                with tempfile.TemporaryDirectory() as appdir:
                    env = {
                        **base,
                        **extra,
                        "STARFISH_LOCAL_STORAGE_DIR": appdir,
                        "STARFISH_CONFIG_DIR": appdir,
                    }
                    samples[name].append(_one_run(code, env))
                    _wait_quiet(appdir)
    finally:
        for rec in receivers.values():
            rec.stop()
    off_wall = statistics.median(s[0] for s in samples["off"])
    off_exit = statistics.median(s[1] for s in samples["off"])
    out = {}
    for name, runs_ in samples.items():
        wall = statistics.median(s[0] for s in runs_)
        exit_ = statistics.median(s[1] for s in runs_)
        out[name] = {
            "wall_s": wall,
            "exit_s": exit_,
            "added_wall_s": wall - off_wall,
            "added_exit_s": exit_ - off_exit,
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="capture calls to time")
    parser.add_argument("--runs", type=int, default=5, help="whole-process runs per variant")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as appdir:
        os.environ.update(
            STARFISH_LOCAL_STORAGE_DIR=appdir,
            STARFISH_CONFIG_DIR=appdir,  # never the user's saved choice
            STARFISH_TELEMETRY_API_KEY=BENCH_KEY,
            TELEMETRY_ENABLED="true",
            POSTHOG_HOST="http://127.0.0.1:9",
            CI="1",
        )
        sys.path.insert(0, str(ROOT / "src"))
        capture = bench_capture(args.calls)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        capture["first call of a process (on)"] = bench_first_call(args.runs, env)
        from starfish.telemetry import service as service_module

        service_module.default_service()._queue.clear()
        _wait_quiet(appdir)
    exits = bench_exit(args.runs)
    result = {"calls": args.calls, "runs": args.runs, "capture": capture, "exit": exits}
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"capture cost on the caller's thread ({args.calls:,} calls)")
    print(f"  {'':34}{'median':>10}{'p99':>10}")
    for name, q in capture.items():
        p99 = f"{q['p99_us']:8.1f}µs" if "p99_us" in q else f"{'':>10}"
        print(f"  {name:34}{q['median_us']:8.1f}µs{p99}")
    print(f"\nexit time of a whole process capturing one event (median of {args.runs} runs)")
    print(f"  {'':26}{'wall':>9}{'+wall':>9}{'exit':>9}{'+exit':>9}")
    for name, r in exits.items():
        print(
            f"  {name:26}{r['wall_s']:8.3f}s{r['added_wall_s']:+8.3f}s"
            f"{r['exit_s']:8.3f}s{r['added_exit_s']:+8.3f}s"
        )
    print("\n  +wall/+exit: added over telemetry off; exit: last statement to process end.")
    return result


if __name__ == "__main__":
    main()
