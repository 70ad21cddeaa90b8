"""The report: the results table, the machine it ran on, the chart and docs/benchmarks.md.

The doc is rewritten on every writing run except four blocks kept as they are: the analysis
(between the `analysis` markers, written by hand), the model layer's figures (between the
`llm` markers, written by bench/bench_llm.py), the real model server's (between the
`real-model` markers, written by bench/bench_real_model.py) and the quality layer's (between
the `quality` markers, from bench/bench_quality.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

from harness import BENCH, ROOT, Bench, cpu_name
from targets import Row, value_cell

DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
RAW = BENCH / "out" / "results.json"
ANALYSIS_START = "<!-- analysis:start -->"
ANALYSIS_END = "<!-- analysis:end -->"
LLM_START = "<!-- llm:start -->"
LLM_END = "<!-- llm:end -->"
REAL_START = "<!-- real-model:start -->"
REAL_END = "<!-- real-model:end -->"
QUALITY_START = "<!-- quality:start -->"
QUALITY_END = "<!-- quality:end -->"


def render_table(rows: list[Row], peer: bool) -> str:
    """The Markdown table of the terminal and the doc; without a peer, no peer columns."""
    head = ["Workload", "Ours (median)", "Peer (median)", "Ours vs peer", "Target", "Result"]
    if not peer:
        head.remove("Peer (median)")
        head.remove("Ours vs peer")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        result = {True: "PASS", False: "MISS", None: ""}[r.passed]
        cells = [r.workload, value_cell(r.ours, r.unit)]
        if peer:
            ratio = f"{r.ratio:,.1f}×" if r.ratio else ""
            cells += [r.peer_note if r.peer is None else value_cell(r.peer, r.unit), ratio]
        cells += [r.target, result]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """What the figures were measured on, for the doc's header."""
    info = {"python": platform.python_version(), "os": f"{platform.system()} {platform.release()}"}
    info["cpu"] = cpu_name()
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
    """Rewrite docs/benchmarks.md, keeping the analysis, the model layer's block and the real
    model server's as they are (each of the last two only when its script has written one)."""
    text = DOC.read_text() if DOC.exists() else ""
    analysis = _kept(text, ANALYSIS_START, ANALYSIS_END) or (
        f"{ANALYSIS_START}\n_No analysis yet._\n{ANALYSIS_END}"
    )
    llm = _kept(text, LLM_START, LLM_END)
    real = _kept(text, REAL_START, REAL_END)
    quality = _kept(text, QUALITY_START, QUALITY_END)
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
    if llm:
        lines += ["## The model layer (bench/bench_llm.py)", "", llm, ""]
    if real:
        lines += ["## A real model server (bench/bench_real_model.py)", "", real, ""]
    if quality:
        lines += [quality, ""]
    lines += ["## Analysis", "", analysis, "", "## Running it", ""]
    lines += [
        "`make bench` installs the `bench` extra (matplotlib) and runs `bench/run.py`, which",
        "creates `bench/peer/.venv` with starfish-core on first use (`bench/peer.py`). Options:",
        "`--reps N`, `--only ours|peer|both`, `--skip-scale`, `--peer-scale-cap SECONDS`,",
        "`--workloads cold,throughput,io,resume,state,jobs_list,scale,telemetry,large_input`,",
        "`--quick`",
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


def _kept(text: str, start: str, end: str) -> str | None:
    """The block between two markers, markers included, as the last run left it."""
    if start not in text or end not in text:
        return None
    return text[text.index(start) : text.index(end) + len(end)]


def write_raw(bench: Bench) -> None:
    """Every sample of this run, for a look behind the medians (not committed)."""
    RAW.parent.mkdir(parents=True, exist_ok=True)
    raw = {"samples": bench.samples, "errors": bench.errors, "commands": bench.commands}
    RAW.write_text(json.dumps(raw, indent=1))
