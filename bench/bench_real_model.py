"""Starfish vs starfish-core 0.1.3 on a real model server, side by side in one run.

The server is llama-cpp-python 0.3.36 serving SmolLM2-135M-Instruct (tests/real_model: installed
once per machine by `python tests/real_model/provision.py`), started once on 127.0.0.1 and
answering one request at a time, its default. Each library gets the same 50 distinct topics at
concurrency 4, the prompt "Write one short question and its answer about {{topic}}." with the
two-field schema question/answer and `max_tokens` 256, in its own process, through its own
fresh recording proxy (tests/real_model/server.py `Recorder`) that counts every request the
server received:

- ours: a `@data_factory(max_concurrency=4)` job calling `StructuredLLM` (its defaults:
  `structured_output="auto"`, `task_runner_timeout=60`), with a fresh
  `STARFISH_LOCAL_STORAGE_DIR` so nothing comes from a cache;
- the peer: its `StructuredLLM` under `asyncio.Semaphore(4)` in its own venv
  (bench/peer_real_model.py), since its `data_factory` adds nothing a call needs here.

For each: inputs completed (the library's own count), inputs with a valid record (at least one
record whose question and answer are non-blank strings), dead inputs (ours: used up their
attempts; the peer: the call raised), requests the server received, the server's completion
tokens, and the wall time of the run (timed inside the child, after its imports). For ours also
the structured-output mode its answers came in. The order alternates between repetitions;
medians when `--reps` > 1.

Nothing may reach beyond loopback, so it refuses to run outside a network namespace holding
only `lo`. Install the peer first (that needs the package index), then, as root:

    .venv/bin/python bench/peer.py
    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/bench_real_model.py --write'

    [--reps N]  # default 1; each repetition takes a few minutes on 2 cores
    [--write]   # puts the table into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PEER_WORKLOAD = BENCH / "peer_real_model.py"
DOC = ROOT / "docs" / "benchmarks.md"
RAW = BENCH / "out" / "real_model.json"  # every sample of the last run (not committed)
START, END = "<!-- real-model:start -->", "<!-- real-model:end -->"
TITLE = "## A real model server (bench/bench_real_model.py)"
OURS, PEER = "Starfish", "starfish-core 0.1.3"
PROMPT = "Write one short question and its answer about {{topic}}."
SCHEMA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]
MAX_TOKENS = 256
TOPICS = [
    "rust", "sqlite", "tides", "volcanoes", "bees", "jazz", "chess", "coffee", "glaciers",
    "bridges", "owls", "tea", "comets", "deserts", "origami", "rivers", "violins", "kites",
    "lighthouses", "mushrooms", "penguins", "bicycles", "thunderstorms", "bread", "telescopes",
    "coral reefs", "windmills", "maps", "honey", "trains", "whales", "pottery", "caves",
    "rainbows", "saturn", "tulips", "castles", "sushi", "magnets", "sundials",
    "bamboo", "lightning", "chocolate", "submarines", "fireflies", "marathons", "compasses",
    "wolves", "snowflakes", "libraries",
]  # fmt: skip
MODES = ("json_schema", "json_object", "prompt")


# The child: our job, run by our python in its own process -------------------------------


def ours_child(url: str, model: str, topics: list[str], concurrency: int) -> None:
    """Run the job and print `BENCH {json}` (the counts, the model layer's counts)."""
    started = time.perf_counter()
    from starfish import StructuredLLM, data_factory, jobs
    from starfish.errors import OutputError

    import_s = time.perf_counter() - started
    fields = [f["name"] for f in SCHEMA]
    llm = StructuredLLM(
        model,
        prompt=PROMPT,
        output_schema=SCHEMA,
        base_url=url,
        model_kwargs={"max_tokens": MAX_TOKENS},
    )

    @data_factory(max_concurrency=concurrency, show_progress=False)
    async def qa(topic: str) -> list[dict[str, str]]:
        return [{**r, "topic": topic} for r in (await llm.run(topic=topic)).data]

    stopped = None
    t0 = time.perf_counter()
    try:
        out = qa.run(topic=topics)
    except OutputError as exc:  # JobStopped (the circuit breaker) or a job with no output
        out = list(getattr(exc, "records", []))
        stopped = f"{type(exc).__name__}: {str(exc)[:300]}"
    run_s = time.perf_counter() - t0
    by_topic: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in out:
        by_topic[r["topic"]].append(r)
    valid = sum(
        any(all(isinstance(r.get(f), str) and r[f].strip() for f in fields) for r in rs)
        for rs in by_topic.values()
    )
    info = jobs.load_job(qa.job_id)
    # Why attempts failed, in the library's words (numbers folded, so alike ones group).
    failures: collections.Counter[str] = collections.Counter(
        f"{f.get('error_type')}: {re.sub(r'[0-9]+', 'N', str(f.get('error')))[:160]}"
        for f in jobs.iter_records(qa.job_id, filter="failed")
    )
    invalid = [
        json.dumps(r)[:200]
        for r in out
        if not all(isinstance(r.get(f), str) and r[f].strip() for f in fields)
    ][:3]
    print(
        "BENCH "
        + json.dumps(
            {
                "inputs": len(topics),
                "completed": info.counts["completed"],
                "valid": valid,
                "records": len(out),
                "dead": info.counts["dead"],
                "failed_attempts": info.counts["failed"],
                "errors": info.error_summary,
                "failures": dict(failures),
                "invalid_samples": invalid,
                "status": info.status,
                "stopped": stopped,
                "llm": llm.counts,
                "run_s": run_s,
                "import_s": import_s,
                "version": __import__("starfish").__version__,
            }
        ),
        flush=True,
    )


# The parent --------------------------------------------------------------------------------


def loopback_only() -> bool:
    """True in a network namespace whose only interface is `lo` (`unshare -n`)."""
    try:  # /proc/self/net is this process's namespace (/sys/class/net may be the host's)
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":", 1)[0].strip() for line in lines] == ["lo"]


PERF = re.compile(r"llama_perf_context_print:\s+(prompt eval|eval|total) time =\s+([0-9.]+) ms")


def server_time(log: str) -> dict[str, float]:
    """The server's own timings over a stretch of its log (llama.cpp prints them after each
    answer): seconds busy answering, generating tokens, reading prompts, and the rest (for a
    grammar-constrained answer mostly the grammar's sampling, done outside `eval`)."""
    sums = {"prompt eval": 0.0, "eval": 0.0, "total": 0.0}
    for what, ms in PERF.findall(log):
        sums[what] += float(ms) / 1000
    other = sums["total"] - sums["eval"] - sums["prompt eval"]
    return {
        "busy_s": sums["total"],
        "eval_s": sums["eval"],
        "prompt_s": sums["prompt eval"],
        "other_s": other,
    }


def run_variant(
    name: str, server_url: str, log: Path, tmp: Path, topics: list[str], concurrency: int
) -> dict[str, Any]:
    """One library's run through a fresh recorder: its sample, with the server's side added."""
    from tests.real_model.server import MODEL, Recorder

    from harness import child_env, run_proc
    from peer import PEER_PYTHON

    class Counting(Recorder):
        """The recorder, also counting the requests it is still forwarding."""

        in_flight = 0

        async def _forward(self, request: Any) -> Any:
            self.in_flight += 1
            try:
                return await super()._forward(request)
            finally:
                self.in_flight -= 1

    recorder = Counting(server_url.removesuffix("/v1")).start()
    log_from = log.stat().st_size
    app = Path(tempfile.mkdtemp(dir=tmp))  # a fresh storage dir: nothing cached
    if name == OURS:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-ours", recorder.url]
        cmd += ["--model", MODEL, "--topics", json.dumps(topics)]
        cmd += ["--concurrency", str(concurrency)]
    else:
        cmd = [str(PEER_PYTHON), str(PEER_WORKLOAD), "--url", recorder.url, "--model", MODEL]
        cmd += ["--topics", json.dumps(topics), "--concurrency", str(concurrency)]
        cmd += ["--prompt", PROMPT, "--schema", json.dumps(SCHEMA)]
        cmd += ["--max-tokens", str(MAX_TOKENS)]
    try:
        proc = run_proc(cmd, child_env(app), timeout=3600, cwd=tmp)
        # A request the client gave up on may still be queued at the server, which generates
        # it anyway: wait for it, so it is counted here and does not slow the next run.
        deadline = time.monotonic() + 600
        while recorder.in_flight and time.monotonic() < deadline:
            time.sleep(0.2)
        lingering = recorder.in_flight
        time.sleep(0.5)  # the server's log line of the last answer
        with log.open("rb") as f:
            f.seek(log_from)
            server_log = f.read().decode(errors="replace")
        answers = list(recorder.answers)
    finally:
        recorder.stop()
    if proc.error:
        raise RuntimeError(f"{name} failed: {proc.error}")
    assert proc.result is not None
    sample = dict(proc.result)
    sample["process_s"] = proc.wall_s
    sample["lingering"] = lingering
    sample["server"] = server_time(server_log)
    sample["server_requests"] = len(answers)
    sample["server_statuses"] = dict(collections.Counter(str(a["status"]) for a in answers))
    sample["server_formats"] = dict(
        collections.Counter(
            ((a["body"].get("response_format") or {}).get("type") or "none") for a in answers
        )
    )
    sample["server_format_statuses"] = dict(
        collections.Counter(
            f"{(a['body'].get('response_format') or {}).get('type') or 'none'} {a['status']}"
            for a in answers
        )
    )
    sample["server_completion_tokens"] = sum(
        (a["usage"] or {}).get("completion_tokens", 0) for a in answers if a["status"] == 200
    )
    sample["server_prompt_tokens"] = sum(
        (a["usage"] or {}).get("prompt_tokens", 0) for a in answers if a["status"] == 200
    )
    return sample


def mode_used(sample: dict[str, Any]) -> str:
    llm = sample.get("llm") or {}
    used = [f"{m} ({llm[f'answers_{m}']})" for m in MODES if llm.get(f"answers_{m}")]
    return ", ".join(used) or "none"


def structured_modes(ss: list[dict[str, Any]]) -> str:
    """The modes our answers came in, and the formats the server refused, over all runs."""
    answers: collections.Counter[str] = collections.Counter()
    refused: collections.Counter[str] = collections.Counter()
    for s in ss:
        llm = s.get("llm") or {}
        answers.update({m: llm.get(f"answers_{m}", 0) for m in MODES})
        for key, v in s["server_format_statuses"].items():
            fmt, status = key.rsplit(" ", 1)
            if status != "200":
                refused[f"`{fmt}` got HTTP {status}"] += v
    total = sum(answers.values())
    used = [
        f"`{m}` for every answer" if c == total else f"`{m}` for {c} of {total} answers"
        for m, c in answers.items()
        if c
    ]
    per_run = f" ({len(ss)} runs)" if len(ss) > 1 else ""
    tried = [f"{k} {'once' if v == 1 else f'{v} times'}{per_run}" for k, v in refused.items()]
    return "; ".join(used + tried) or "none"


def _med(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(s[key]) for s in samples)


def _num(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) else f"{x:,.1f}"


def render(
    samples: dict[str, list[dict[str, Any]]], reps: int, n: int, concurrency: int, load: float
) -> str:
    ours = samples[OURS][0] if samples[OURS] else {}
    peer = samples[PEER][0] if samples[PEER] else {}
    from harness import measured_on

    lines = [
        measured_on(load) + "; "
        f"Starfish {ours.get('version', '?')}, starfish-core {peer.get('version', '?')} "
        f"(litellm {peer.get('litellm', '?')}) in its own venv. Server: llama-cpp-python 0.3.36 "
        "serving SmolLM2-135M-Instruct (Q4_1 GGUF) on 127.0.0.1 with `--n_threads 2`, one "
        "request at a time (its default), the same server process for both. Command: "
        f"`.venv/bin/python bench/bench_real_model.py --reps {reps}"
        + (f" --inputs {n}" if n != len(TOPICS) else "")
        + "`, in a network namespace "
        "holding only loopback (`unshare -n`).",
        "",
        f"**{n} distinct topics at concurrency {concurrency}**, prompt `{PROMPT}`, schema "
        f"question/answer (two strings), `max_tokens` {MAX_TOKENS}"
        + (f" (median of {reps}, alternating order)" if reps > 1 else "")
        + ".",
        "",
        "| Library | Completed | Valid | Dead | Requests the server received | "
        "Completion tokens generated | Wall (the run) | Structured output used | Runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in (OURS, PEER):
        ss = samples[name]
        if not ss:
            lines.append(f"| {name} | failed (below) | | | | | | | |")
            continue
        runs = "; ".join(
            f"{s['completed']}/{s['dead']}/{s['server_requests']}/{s['run_s']:.0f} s" for s in ss
        )
        statuses = collections.Counter[str]()
        for s in ss:
            statuses.update(s["server_statuses"])
        non200 = {k: v for k, v in statuses.items() if k != "200"}
        req = _num(_med(ss, "server_requests"))
        if non200:
            req += " (" + ", ".join(f"{v} × HTTP {k}" for k, v in sorted(non200.items()))
            req += " in all runs)" if reps > 1 else ")"
        if name == OURS:
            mode = structured_modes(ss)
        else:
            mode = "none sent (schema written into the prompt)"
        lines.append(
            f"| {name} | {_num(_med(ss, 'completed'))} of {n} | {_num(_med(ss, 'valid'))} | "
            f"{_num(_med(ss, 'dead'))} | {req} | {_num(_med(ss, 'server_completion_tokens'))} | "
            f"{_med(ss, 'run_s'):.1f} s | {mode} | {runs} |"
        )
    lines += [
        "",
        "Completed: the library's own count (ours: the job's `completed`; the peer: calls whose "
        "`data` was a non-empty list). Valid: inputs with at least one record whose question and "
        "answer are non-blank strings. Dead: ours, inputs that used up their attempts; the "
        "peer, calls that raised. Requests: what the model server received, counted by a "
        "recording proxy in front of it (a fresh one per run). Wall: the run, timed inside each "
        "library's process after its imports. Runs: completed/dead/requests/wall of each run.",
    ]
    lines += [
        "",
        "Where the server's time went, from its own log (llama.cpp's timings after each answer; "
        "medians of the runs' sums): busy is the time it spent answering this library's "
        "requests; outside generation is what the server spent beyond reading the prompt and "
        "generating tokens, for a grammar-constrained answer mostly the grammar's sampling.",
        "",
        "| Library | Server busy | Generating tokens | Per token | Reading prompts | "
        "Outside generation | Per token |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in (OURS, PEER):
        ss = samples[name]
        if not ss:
            continue
        srv = [s["server"] for s in ss]
        tok = _med(ss, "server_completion_tokens")

        def m(k: str, srv: list[dict[str, float]] = srv) -> float:
            return statistics.median(x[k] for x in srv)

        lines.append(
            f"| {name} | {m('busy_s'):.1f} s | {m('eval_s'):.1f} s | "
            f"{m('eval_s') / tok * 1000:.1f} ms | {m('prompt_s'):.1f} s | {m('other_s'):.1f} s | "
            f"{m('other_s') / tok * 1000:.1f} ms |"
        )
    notes = []
    for name in (OURS, PEER):
        for i, s in enumerate(samples[name], 1):
            bits = []
            if s.get("errors"):
                bits.append(
                    "errors " + ", ".join(f"{k} × {v}" for k, v in sorted(s["errors"].items()))
                )
            for k, msg in sorted((s.get("error_samples") or {}).items()):
                bits.append(f"{k}, e.g. `{msg[:200]}`")
            if s.get("failures"):
                bits.append(
                    "failed attempts: "
                    + ", ".join(f"{v} × {k}" for k, v in sorted(s["failures"].items()))
                )
            if s.get("invalid_samples"):
                bits.append(
                    "records not valid, e.g. " + " / ".join(f"`{x}`" for x in s["invalid_samples"])
                )
            if s.get("stopped"):
                bits.append(f"stopped: {s['stopped']}")
            if name == OURS:
                llm = s.get("llm") or {}
                shown = {k: v for k, v in llm.items() if k not in ("cost_usd",)}
                bits.append("model-layer counts " + json.dumps(shown, sort_keys=True))
            if name == PEER:
                bits.append(
                    f"returned no data (an answer it could not parse) {s['no_data']} of "
                    f"{s['inputs']}"
                )
            bits.append("formats sent " + json.dumps(s["server_formats"], sort_keys=True))
            notes.append(f"- {name}, run {i}: " + "; ".join(bits) + ".")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--inputs", type=int, default=len(TOPICS), help="at most 50")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--child-ours", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--topics", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_ours:
        ours_child(args.child_ours, args.model, json.loads(args.topics), args.concurrency)
        return
    if not loopback_only():
        sys.exit(
            "refusing to run: this benchmark must not reach beyond loopback. Run it in a "
            "network namespace holding only `lo` (install the peer first):\n"
            "  .venv/bin/python bench/peer.py\n"
            "  unshare -n sh -c 'ip link set lo up && "
            ".venv/bin/python bench/bench_real_model.py --write'"
        )
    sys.path[:0] = [str(BENCH), str(ROOT)]
    from tests.real_model.server import ModelServer

    from harness import child_env, run_proc
    from peer import PEER_PYTHON

    if not PEER_PYTHON.exists():
        sys.exit("the peer is not installed: run `.venv/bin/python bench/peer.py` first")
    topics = TOPICS[: args.inputs]
    load0 = os.getloadavg()[0]
    # A SIGTERM ends the run through `finally`, so the model server is stopped with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="starfish-bench-real-model-"))
    # Compile both libraries' bytecode once (one cache for every run), untimed.
    for python in (sys.executable, str(PEER_PYTHON)):
        run_proc([python, "-c", "import starfish"], child_env(tmp / "warm"), 600, tmp)
    server = ModelServer(tmp / "server.log").start()
    print(f"model server at {server.url}; log {tmp / 'server.log'}", file=sys.stderr)
    samples: dict[str, list[dict[str, Any]]] = {OURS: [], PEER: []}
    failures: list[str] = []
    try:
        for rep in range(args.reps):
            order = [OURS, PEER] if rep % 2 == 0 else [PEER, OURS]
            for name in order:
                try:
                    s = run_variant(name, server.url, server.log, tmp, topics, 4)
                except RuntimeError as exc:
                    failures.append(f"- {name}, repetition {rep + 1}: {str(exc)[:600]}")
                    print(failures[-1], file=sys.stderr)
                    continue
                samples[name].append(s)
                print(
                    f"  {name}: completed {s['completed']}, valid {s['valid']}, dead "
                    f"{s['dead']}, requests {s['server_requests']} {s['server_statuses']}, "
                    f"{s['run_s']:.1f} s; errors {s.get('errors')}"
                    + (f"; mode {mode_used(s)}" if name == OURS else ""),
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        server.stop()
    table = render(samples, args.reps, len(topics), 4, load0)
    if failures:
        table += "\n\nRuns that failed:\n\n" + "\n".join(failures)
    print(table)
    RAW.parent.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps(samples, indent=1))
    print(f"raw samples in {RAW.relative_to(ROOT)}", file=sys.stderr)
    if args.write:
        from harness import write_doc_block

        write_doc_block(DOC, START, END, TITLE, table)
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
