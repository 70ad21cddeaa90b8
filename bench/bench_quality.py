"""Quality benchmarks (issue 20), side by side in one run:

1. near-duplicate quality on a generated set with known answers: pairs whose true shingle
   Jaccard is >= 0.9 must be caught (recall), pairs <= 0.5 must not (false positives), at
   near=0.8;
2. speed: Dedupe's per-record path (normalise, exact digest, MinHash, LSH query, verify,
   insert) over N records of about 40 words, against datasketch's own MinHashLSH
   insert-and-query of the same records; peak RSS of each, in its own process;

    python bench/bench_quality.py [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

VOCAB = [f"w{i}" for i in range(5000)]


def texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB) for _ in range(40)) for _ in range(n)]


def edit(text: str, k: int, rng: random.Random) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), k):
        words[i] = rng.choice(VOCAB) + "x"
    return " ".join(words)


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
    return {"pairs_ge_0.9": n_hi, "recall": caught_hi / n_hi, "pairs_le_0.5": n_lo,
            "false_positive_rate": fp_lo / n_lo}  # fmt: skip


def speed(which: str, n: int) -> dict[str, float]:
    data = texts(n)
    started = time.perf_counter()
    kept = 0
    if which == "datasketch":
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=0.8, num_perm=128)
        for i, text in enumerate(data):
            words = text.split()
            m = MinHash(num_perm=128)
            m.update_batch([" ".join(words[j : j + 2]).encode() for j in range(len(words) - 1)])
            if not lsh.query(m):
                lsh.insert(i, m)
                kept += 1
    else:
        from starfish.quality._text import digest, minhash, normalize
        from starfish.quality.dedupe import _Index, _Keys

        index = _Index(0.8, None)
        for i, text in enumerate(data):
            t = normalize(text)
            keys = _Keys(digest(t), minhash(t))
            if index.find(keys) is None:
                index.add(keys, i)
                kept += 1
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(seconds, 2), "kept": kept, "peak_rss_mb": round(rss, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--one", choices=("datasketch", "dedupe"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(speed(args.one, args.n)))
        return
    print("quality at near=0.8:", json.dumps(quality(args.pairs)))
    for which in ("datasketch", "dedupe"):
        out = subprocess.run(
            [sys.executable, __file__, "--one", which, "--n", str(args.n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        print(f"speed {which:10} n={args.n}:", out.stdout.strip())


if __name__ == "__main__":
    main()
