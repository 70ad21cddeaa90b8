"""The I/O-bound row side by side with another tree of this repository (issue 18).

    git worktree add /tmp/old111 111a79a        # or: git archive 111a79a | tar -x -C /tmp/old111
    .venv/bin/python bench/bench_io.py --vs /tmp/old111/src [--label 111a79a] [--pairs 9] [--write]

`bench/workload.py io` (2,000 × 10 ms sleeps at concurrency 100) runs with this venv's Python,
once with `PYTHONPATH=<this tree>/src` and once with `PYTHONPATH=<--vs>`, the order alternating
from pair to pair, in the main suite's environment (`harness.child_env`: no telemetry, a fresh
app dir, bytecode compiled once into a cache outside the tree by an untimed warm-up). Each pair
runs every mode: local storage as in the suite's row (imports before the timer), the same as the
process's first job (`--first-job`: what that job imports is timed too), and in memory. The
plain-asyncio floor runs once per pair. Figures are `run()` as timed inside the process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from harness import OURS_PYTHON, ROOT, WORKLOAD, child_env, run_proc, write_doc_block

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- io-vs-tree:start -->", "<!-- io-vs-tree:end -->"
TITLE = "## The I/O-bound row against an older tree (bench/bench_io.py)"
MODES = {
    "local": ("local storage, imports before the timer (the suite's row)", ["--storage", "local"]),
    "first": ("local storage, the process's first job (its imports timed)", ["--first-job"]),
    "memory": ("in memory, imports before the timer", ["--storage", "in_memory"]),
}


def run_once(src: str, args: list[str], tmp: Path) -> float:
    """One whole process; its `run()` seconds."""
    appdir = Path(os.path.join(tmp, f"app{os.urandom(4).hex()}"))
    appdir.mkdir()
    env = child_env(appdir, {"PYTHONPATH": src})
    p = run_proc([str(OURS_PYTHON), str(WORKLOAD), *args], env, 120, tmp)
    if p.error:
        raise SystemExit(f"{src}: {' '.join(args)}: {p.error}")
    assert p.result is not None
    return float(p.result["run_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vs", required=True, help="the other tree's src directory")
    parser.add_argument("--label", default=None, help="its name in the table (a commit)")
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=0.01)
    parser.add_argument("--write", action="store_true", help="write the doc block")
    args = parser.parse_args()

    import tempfile

    from report import machine

    tmp = Path(tempfile.mkdtemp(prefix="starfish-bench-io-"))
    ours, other = str(ROOT / "src"), str(Path(args.vs).resolve())
    label = args.label or other
    io = ["io", "--n", str(args.n), "--concurrency", str(args.concurrency)]
    io += ["--sleep", str(args.sleep)]
    ideal = args.n / args.concurrency * args.sleep
    load = os.getloadavg()[0]
    for src in (ours, other):  # compile both trees' bytecode into the cache, untimed
        run_once(src, [*io[:2], "5", *io[3:]], tmp)
    times: dict[str, dict[str, list[float]]] = {m: {"ours": [], "other": []} for m in MODES}
    floor: list[float] = []
    for i in range(args.pairs):
        for mode, (_, extra) in MODES.items():
            order = [("ours", ours), ("other", other)]
            for who, src in order if i % 2 == 0 else order[::-1]:
                times[mode][who].append(run_once(src, [*io, *extra], tmp))
        floor.append(run_once(ours, ["floor-io", *io[1:]], tmp))
        shown = {m: f"{t['other'][-1]:.3f}/{t['ours'][-1]:.3f}" for m, t in times.items()}
        print(f"pair {i + 1}: (other/ours) {shown} floor {floor[-1]:.3f}", flush=True)

    info = machine()
    head = (
        f"| {args.n:,} × {args.sleep * 1000:g} ms sleeps, c={args.concurrency} (ideal "
        f"{ideal:g} s) | {label} | this tree | this tree / {label} (median of pairs) "
        "| this tree vs ideal |"
    )
    lines = [head, "|---|---|---|---|---|"]
    for mode, (what, _) in MODES.items():
        t = times[mode]
        ratio = statistics.median(o / b for o, b in zip(t["ours"], t["other"], strict=True))
        mine = statistics.median(t["ours"])
        lines.append(
            f"| {what} | {statistics.median(t['other']):.3f} s | {mine:.3f} s | "
            f"{ratio:.2f}× | {mine / ideal:.2f}× |"
        )
    lines.append(
        f"| the same sleeps in plain asyncio (no library) | | {statistics.median(floor):.3f} s "
        f"| | {statistics.median(floor) / ideal:.2f}× |"
    )
    runs: list[str] = []
    for mode, (what, _) in MODES.items():
        pairs = ", ".join(
            f"{b:.3f}/{o:.3f}"
            for b, o in zip(times[mode]["other"], times[mode]["ours"], strict=True)
        )
        runs.append(f"- {what}, each pair ({label}/this tree): {pairs}")
    runs.append("- plain asyncio: " + ", ".join(f"{f:.3f}" for f in floor))
    body: list[Any] = [
        f"Measured {_now()} on {info.get('cpu', 'this machine')} ({info['cores']} cores, "
        f"{info['ram']}, shared with other work; load {load:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end), Python {info['python']}; this tree at "
        f"{info['commit']}. Command: `.venv/bin/python bench/bench_io.py --vs <{label} src> "
        f"--pairs {args.pairs}`: medians of {args.pairs} alternating pairs, `run()` timed "
        "inside each process.",
        "",
        *lines,
        "",
        *runs,
    ]
    table = "\n".join(str(x) for x in body)
    print(table)
    if args.write:
        write_doc_block(DOC, START, END, TITLE, table)
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


if __name__ == "__main__":
    main()
