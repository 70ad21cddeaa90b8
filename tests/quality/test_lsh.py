"""The compact MinHash LSH index under Dedupe(near=): its band table is a true multimap
through growth, its bands are datasketch's, and it finds, verifies and forgets rows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from starfish.quality._lsh import SignatureIndex, _Table, bands
from starfish.quality._text import NUM_PERM, minhash, normalize


def test_the_band_table_returns_every_value_of_a_key_through_growth():
    rng = random.Random(3)
    table, expected = _Table(bits=4), {}
    for batch in range(40):  # small inserts one key at a time, then a large one all at once
        n = 5 if batch < 39 else 3000
        keys = [
            rng.randrange(1, 200) if rng.random() < 0.3 else rng.randrange(1, 2**32)
            for _ in range(n)
        ]
        vals = [rng.randrange(2**32) for _ in range(n)]
        table.insert(np.array(keys, dtype=np.uint32), np.array(vals, dtype=np.uint32))
        for k, v in zip(keys, vals, strict=True):
            expected.setdefault(k, set()).add(v)
    assert 2 * table.count <= len(table.keys)
    for key, values in expected.items():
        assert table.get([key]) == values
    absent = next(k for k in range(1000, 2000) if k not in expected)
    assert table.get([absent]) == set()


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9, 0.95])
def test_the_bands_are_datasketchs_choice(threshold):
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=(0.05, 0.95))
    assert bands(threshold, NUM_PERM, (0.05, 0.95)) == (lsh.b, lsh.r)


def test_a_near_row_is_found_verified_and_forgotten_when_removed():
    words = [f"w{i}" for i in range(40)]
    base = " ".join(words)
    near = " ".join([*words[:20], "other", *words[21:]])  # shingle Jaccard 0.90
    far = " ".join(reversed(words))
    index = SignatureIndex(0.8, NUM_PERM, (0.05, 0.95))
    for i in range(50):  # unrelated rows around it
        index.add(minhash(normalize(" ".join(f"x{i}y{j}" for j in range(40)))))
    row = index.add(minhash(base))
    found = index.query(minhash(near))
    assert found is not None and found[1] == row and 0.8 <= found[0] < 1
    assert index.query(minhash(far)) is None
    index.remove(row)
    assert index.query(minhash(near)) is None and len(index) == 50
