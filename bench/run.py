"""Benchmark Starfish against the original library, starfish-core 0.1.3, on this machine.

Every workload runs as a whole process (bench/workload.py) in the right venv, with telemetry off,
a dead loopback PostHog host and a fresh app data dir. Ours and the peer alternate within each
repetition, so drifting load on a shared machine hits both alike. Medians and ratios go to the
terminal, to docs/benchmarks.md and to a PNG chart of the ratios.

    .venv/bin/python bench/run.py                    # everything, 3 repetitions
    .venv/bin/python bench/run.py --quick --only ours --no-write   # the smoke run of `make test`

This file is the command line only: bench/harness.py runs the children, bench/suite.py holds the
workloads, bench/targets.py the table of targets, bench/report.py the table, chart and doc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from harness import OURS_PYTHON, ROOT, Bench, Sizes
from report import CHART, DOC, draw_chart, machine, render_table, write_doc, write_raw
from suite import WORKLOADS
from targets import build_rows


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
        help=f"comma-separated subset of {','.join(WORKLOADS)} "
        "(default: all; --quick leaves out scale and large_input)",
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
        from peer import ensure_peer  # only now: it may create the peer's venv

        libs["peer"] = ensure_peer()
    reps = 1 if args.quick and "--reps" not in argv_used else args.reps
    bench = Bench(sizes=sizes, reps=reps, libs=libs, timeout=args.timeout)
    bench.peer_scale_cap = 0 if args.quick else args.peer_scale_cap
    chosen = set(args.workloads.split(",") if args.workloads else WORKLOADS)
    if args.skip_scale or (args.quick and args.workloads is None):
        chosen.discard("scale")
        chosen.discard("large_input")
    load = os.getloadavg()
    print(
        f"libraries: {', '.join(libs)}; repetitions: {reps}; load average {load[0]:.2f}", flush=True
    )
    try:
        bench.warm_up()
        for name, (run, ours_only) in WORKLOADS.items():
            if name in chosen and ("ours" in libs or not ours_only):
                run(bench)
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
        write_raw(bench)
        chart = draw_chart(rows, CHART)
        write_doc(bench, rows, machine(), argv_used, chart)
        print(
            f"\nwrote {DOC.relative_to(ROOT)}"
            + (f" and {CHART.relative_to(ROOT)}" if chart else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
