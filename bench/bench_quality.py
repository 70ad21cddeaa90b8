"""Quality benchmarks (issue 20), side by side in one run:

1. near-duplicate quality on a generated set with known answers: pairs whose true shingle
   Jaccard is >= 0.9 must be caught (recall), pairs <= 0.5 must not (false positives), at
   near=0.8;
2. speed and memory: Dedupe's per-record path (normalise, exact digest, MinHash, LSH query,
   verify, insert) over N records of about 40 words, against datasketch's own MinHashLSH
   insert-and-query of the same records. Each variant runs in a fresh process of its own and
   reports its own peak RSS (VmHWM: `ru_maxrss` would inherit the parent's peak across
   fork/exec). The records are made one at a time from a seeded generator, as a job streams
   them: the peak is the index's, not a list of inputs. `--before REV` adds the Dedupe of git
   revision REV (its src/ unpacked to a temporary directory) as a third variant;
3. cost: a 2,000-input job against the loopback OpenAI server whose generated records are 30 %
   duplicates (half of them exact up to case and punctuation, half with one word of 40
   changed), with `Dedupe("text", near=0.8)` and a `Judge` while it runs, against generating
   everything and judging afterwards (every record; or deduplicated afterwards, then judged).
   The server counts the requests. Run it where nothing but loopback exists:

    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/bench_quality.py'
        [--n 100000] [--pairs 2000] [--inputs 2000] [--before main] [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VOCAB = [f"w{i}" for i in range(5000)]

os.environ.setdefault("TELEMETRY_ENABLED", "false")
os.environ.setdefault("POSTHOG_HOST", "http://127.0.0.1:9")
os.environ.setdefault("STARFISH_LOCAL_STORAGE_DIR", tempfile.mkdtemp(prefix="starfish-bench-q-"))


def texts(n: int, seed: int = 1) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(n):
        yield " ".join(rng.choice(VOCAB) for _ in range(40))


def edit(text: str, k: int, rng: random.Random) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), k):
        words[i] = rng.choice(VOCAB) + "x"
    return " ".join(words)


def peak_rss_mb() -> float:
    """This process's own peak resident set (its address space's high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# 1. quality -----------------------------------------------------------------------------------
def quality(pairs: int) -> dict[str, float]:
    from starfish.quality._text import digest, minhash, normalize, shingles
    from starfish.quality.dedupe import _Index, _Keys

    rng = random.Random(7)
    caught_hi = n_hi = fp_lo = n_lo = 0
    for base in texts(pairs, seed=3):
        for k in (1, 2, 6, 10):  # ~0.9, ~0.81, ~0.53, ~0.33
            other = edit(base, k, rng)
            a, b = shingles(normalize(base)), shingles(normalize(other))
            j = len(a & b) / len(a | b)
            index = _Index(0.8, None)
            t = normalize(base)
            index.add(_Keys(digest(t), minhash(t)), 0)
            u = normalize(other)
            hit = index.find(_Keys(digest(u), minhash(u))) is not None
            if j >= 0.9:
                n_hi += 1
                caught_hi += hit
            elif j <= 0.5:
                n_lo += 1
                fp_lo += hit
    return {"pairs_ge_0.9": n_hi, "recall": round(caught_hi / n_hi, 4), "pairs_le_0.5": n_lo,
            "false_positive_rate": round(fp_lo / n_lo, 4)}  # fmt: skip


# 2. speed and memory (one variant per process) ------------------------------------------------
def speed(which: str, n: int) -> dict[str, Any]:
    import numpy  # noqa: F401  (both sides use it: imported before the clock starts)

    kept = 0
    if which == "datasketch":
        from datasketch import MinHash, MinHashLSH

        started = time.perf_counter()
        lsh = MinHashLSH(threshold=0.8, num_perm=128)
        for i, text in enumerate(texts(n)):
            words = text.split()
            m = MinHash(num_perm=128)
            m.update_batch([" ".join(words[j : j + 2]).encode() for j in range(len(words) - 1)])
            if not lsh.query(m):
                lsh.insert(i, m)
                kept += 1
    else:
        from starfish.quality._text import digest, minhash, normalize
        from starfish.quality.dedupe import _Index, _Keys

        started = time.perf_counter()
        index = _Index(0.8, None)
        for i, text in enumerate(texts(n)):
            t = normalize(text)
            keys = _Keys(digest(t), minhash(t))
            if index.find(keys) is None:
                index.add(keys, i)
                kept += 1
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 1), "kept": kept, "peak_rss_mb": round(peak_rss_mb(), 1)}


def store_rows(n: int, db: Path) -> dict[str, Any]:
    """The stored index of n kept records (one row each, as `Dedupe` writes them)."""
    from starfish.quality._text import digest, minhash, normalize
    from starfish.quality.dedupe import _Keys, _row
    from starfish.quality.store import QualityStore

    store = QualityStore(db)
    assert store._conn is not None
    batch: list[Any] = []
    for i, text in enumerate(texts(n)):
        t = normalize(text)
        batch.append(("bench", "dedupe(text)", *_row(i, [_Keys(digest(t), minhash(t))])))
        if len(batch) == 5000 or i == n - 1:
            store._conn.executemany("INSERT INTO quality_index VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
            batch.clear()
    store.close()
    return {"rows": n, "db_mb": round(db.stat().st_size / 2**20, 1)}


def restore(db: Path) -> dict[str, Any]:
    """Rebuild the index from the stored rows, as a resumed run does (Dedupe._restore)."""
    import numpy  # noqa: F401

    from starfish.quality.dedupe import _Index, _unrow
    from starfish.quality.store import QualityStore

    started = time.perf_counter()
    index = _Index(0.8, None)
    for row in QualityStore(db).index_rows("bench", "dedupe(text)"):
        for k in _unrow(row):
            index.add(k, row[0])
    seconds = time.perf_counter() - started
    assert index.lsh is not None
    return {"seconds": round(seconds, 1), "rows": len(index.lsh),
            "peak_rss_mb": round(peak_rss_mb(), 1)}  # fmt: skip


def unpack_src(rev: str) -> Path:
    """src/ of git revision `rev`, in a temporary directory (for the before variant)."""
    where = Path(tempfile.mkdtemp(prefix="starfish-bench-before-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    tar = where / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(where, filter="data")
    return where / "src"


def run_speed(
    which: str, n: int, src: Path | None = None, db: Path | None = None
) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    more = ["--db", str(db)] if db is not None else []
    out = subprocess.run(
        [sys.executable, __file__, "--one", which, "--n", str(n), *more],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


# 3. cost ----------------------------------------------------------------------------------------
RUBRIC = "Is the record a well-formed sentence of forty words?"
TOPIC = re.compile(r"topic (\d+)\b")


def corpus(inputs: int, share: float = 0.3, seed: int = 11) -> list[str]:
    """The record the model writes for each topic: `share` of them repeat an earlier one,
    half exactly (case and punctuation changed), half with one word of 40 changed."""
    rng = random.Random(seed)
    records: list[str] = []
    unique = list(texts(inputs, seed=seed))
    dups = set(rng.sample(range(1, inputs), round(share * inputs)))
    for i in range(inputs):
        if i not in dups:
            records.append(unique[i])
            continue
        original = rng.choice([r for j, r in enumerate(records[:i]) if j not in dups][-200:])
        if rng.random() < 0.5:
            records.append(original.upper() + "!")
        else:
            records.append(edit(original, 1, rng))
    return records


class Model:
    """The server's answers: a judge request gets a score of 5; a generation request the
    topic's record the first time, a new one when the topic is asked again (a retried input
    gets a new sample, as from a model at a temperature above 0). `asked` is cleared between
    the variants."""

    def __init__(self, records: list[str]) -> None:
        self.records = records
        self.asked: dict[int, int] = {}
        self.rng = random.Random(5)

    def __call__(self, body: dict[str, Any]) -> str:
        prompt = str(body["messages"][-1]["content"])
        if "Rubric:" in prompt:
            return json.dumps({"records": [{"score": 5, "reason": "forty words"}]})
        topic = int(TOPIC.search(prompt).group(1))  # type: ignore[union-attr]
        self.asked[topic] = self.asked.get(topic, 0) + 1
        if self.asked[topic] == 1:
            text = self.records[topic]
        else:
            text = " ".join(self.rng.choice(VOCAB) for _ in range(40))
        return json.dumps({"records": [{"text": text}]})


def cost(inputs: int) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    from tests.openai_server import OpenAIServer

    from starfish import StructuredLLM, data_factory
    from starfish.llm.endpoint import reset_endpoints
    from starfish.quality import Dedupe, Judge, summary

    records = corpus(inputs)
    rows = []
    model = Model(records)
    with OpenAIServer(reply=model) as server:

        def counts() -> tuple[int, int]:
            judged = sum("Rubric:" in str(b["messages"][-1]["content"]) for b in server.bodies)
            return len(server.bodies) - judged, judged

        def judge() -> Judge:
            return Judge(model="loopback-model", base_url=server.url, rubric=RUBRIC, min_score=4)

        llm = StructuredLLM(
            "loopback-model",
            prompt="Write one sentence of forty words about topic {{topic}}.",
            output_schema=[{"name": "text", "type": "str"}],
            base_url=server.url,
        )

        def generator(hooks: list[Any]) -> Any:
            @data_factory(max_concurrency=50, show_progress=False, llm_cache=False,
                          on_record_complete=hooks)  # fmt: skip
            async def gen(topic: int) -> list[dict[str, Any]]:
                return list((await llm.run(topic=topic)).data)

            return gen

        def passthrough(hooks: list[Any]) -> Any:
            @data_factory(max_concurrency=50, show_progress=False, llm_cache=False,
                          on_record_complete=hooks)  # fmt: skip
            async def again(text: str) -> dict[str, str]:
                return {"text": text}

            return again

        def texts_of(out: list[dict[str, Any]]) -> list[str]:
            return [str(r["text"]) for r in out]

        def row(name: str, out: list[Any], started: float, before: tuple[int, int]) -> None:
            gen_n, judge_n = counts()
            rows.append({"variant": name, "generation_requests": gen_n - before[0],
                         "judge_requests": judge_n - before[1], "records_out": len(out),
                         "unique_out": len({normalize_text(t) for t in texts_of(out)}),
                         "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip

        topics = list(range(inputs))
        # (a) while generating: a duplicate is dropped before it is judged
        reset_endpoints()
        model.asked.clear()
        before, started = counts(), time.perf_counter()
        gen = generator([Dedupe("text", near=0.8), judge()])
        out = gen.run(topic=topics)
        row("Dedupe + Judge while generating", out, started, before)
        found = summary(gen.job_id) or {}
        rows[-1]["duplicates_dropped"] = found.get("duplicates")
        rows[-1]["judged_is_kept"] = rows[-1]["judge_requests"] == found.get("kept") == len(out)
        # (b) generate everything, then judge every record, then deduplicate
        reset_endpoints()
        model.asked.clear()
        before, started = counts(), time.perf_counter()
        made = generator([]).run(topic=topics)
        judged = passthrough([judge()]).run(text=texts_of(made))
        kept = passthrough([Dedupe("text", near=0.8)]).run(text=texts_of(judged))
        row("generate, then judge all, then dedupe", kept, started, before)
        # (c) generate everything, then deduplicate, then judge what is left
        reset_endpoints()
        model.asked.clear()
        before, started = counts(), time.perf_counter()
        made = generator([]).run(topic=topics)
        unique = passthrough([Dedupe("text", near=0.8)]).run(text=texts_of(made))
        kept = passthrough([judge()]).run(text=texts_of(unique))
        row("generate, then dedupe, then judge", kept, started, before)
    return rows


def normalize_text(text: str) -> str:
    from starfish.quality._text import normalize

    return normalize(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--inputs", type=int, default=2000)
    ap.add_argument("--before", metavar="REV", help="also time the Dedupe of git revision REV")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument(
        "--one", choices=("datasketch", "dedupe", "store", "restore"), help=argparse.SUPPRESS
    )
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one in ("store", "restore"):
        result = store_rows(args.n, args.db) if args.one == "store" else restore(args.db)
        print(json.dumps(result))
        return
    if args.one:
        print(json.dumps(speed(args.one, args.n)))
        return
    print("quality at near=0.8:", json.dumps(quality(args.pairs)), flush=True)
    if not args.skip_speed:
        variants: list[tuple[str, str, Path | None]] = [
            ("datasketch MinHashLSH", "datasketch", None),
            ("Dedupe", "dedupe", None),
        ]
        if args.before:
            variants.append((f"Dedupe at {args.before}", "dedupe", unpack_src(args.before)))
        for name, which, src in variants:
            print(
                f"speed n={args.n} {name}:", json.dumps(run_speed(which, args.n, src)), flush=True
            )
        db = Path(tempfile.mkdtemp(prefix="starfish-bench-restore-")) / "jobs.db"
        print("stored index:", json.dumps(run_speed("store", args.n, db=db)), flush=True)
        print(
            f"restore n={args.n} Dedupe:",
            json.dumps(run_speed("restore", args.n, db=db)),
            flush=True,
        )
    for r in cost(args.inputs):
        print("cost:", json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
