"""A compact MinHash LSH index: the near-duplicate test of `Dedupe` over 100,000s of records.

A `MinHash` object per record in datasketch's `MinHashLSH` (a dict per band from a bytes key
to a set of record keys) came to about 7 kB a record (3.5 kB for `MinHashLSH` alone, measured
in bench/bench_quality.py). Here a record costs its signature (128 uint32 values, 512 bytes,
in fixed blocks that are never copied as they grow) and, per band, one uint32 key and one
uint32 row number in a single open-addressing table kept between a quarter and half full
(256 to 512 bytes at 16 bands): about 1 kB. The bands are datasketch's choice for the same
threshold and weights; a band key is a 32-bit hash of the band's values, so a rare collision
only adds a candidate, which is verified by its estimated Jaccard similarity anyway.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["SignatureIndex", "bands", "jaccard"]

_BLOCK = 4096
"""Signatures per block: 2 MB at 128 permutations; growing never copies the ones stored."""
_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x27D4EB2F165667C5, 0x94D049BB133111EB],
    dtype=np.uint64,
)  # fmt: skip
"""Odd 64-bit multipliers: a band's values, each times its own, summed, make its hash."""


def jaccard(a: Any, b: Any) -> float:
    """The estimated Jaccard similarity of two signatures: the share of equal values."""
    return float(np.count_nonzero(a == b)) / len(a)


@lru_cache(maxsize=16)
def bands(threshold: float, num_perm: int, weights: tuple[float, float]) -> tuple[int, int]:
    """(bands, rows per band) minimising weights[0] x false positives + weights[1] x false
    negatives over Jaccard similarities below and above `threshold`: datasketch's
    `_optimal_param`, integrated on a fine grid instead of with scipy."""
    grid = (np.arange(4000) + 0.5) / 4000  # midpoints on [0, 1]
    low, high = grid[grid < threshold], grid[grid >= threshold]
    best, choice = float("inf"), (1, 1)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = (1 - (1 - low**r) ** b).sum() / len(grid)
            fn = (1 - high**r) ** b
            error = weights[0] * fp + weights[1] * fn.sum() / len(grid)
            if error < best:
                best, choice = error, (b, r)
    return choice


class _Table:
    """A multimap from nonzero uint32 keys to uint32 values: open addressing, linear probing,
    at most half full, no deletion (a dead row is filtered by its owner). A record's few keys
    go through memoryviews (a numpy call per key costs more than the probe); a rebuild places
    them all at once (`_place`)."""

    def __init__(self, bits: int = 12) -> None:
        self.count = 0
        self._allocate(1 << bits)

    def _allocate(self, size: int) -> None:
        self.keys = np.zeros(size, dtype=np.uint32)
        self.vals = np.zeros(size, dtype=np.uint32)
        self._k, self._v = self.keys.data, self.vals.data
        self._mask = size - 1

    def insert(self, keys: Any, vals: Any) -> None:
        """Add the pairs (uint32 arrays)."""
        need = self.count + len(keys)
        if 2 * need > len(self.keys):
            self._grow(need)
        self.count = need
        if len(keys) > 256:  # a restored index: all at once
            _place(self.keys, self.vals, keys, vals)
            return
        tk, tv, mask = self._k, self._v, self._mask
        for key, val in zip(keys.tolist(), vals.tolist(), strict=True):
            slot = key & mask
            while tk[slot]:
                slot = (slot + 1) & mask
            tk[slot] = key
            tv[slot] = val

    def get(self, keys: list[int]) -> set[int]:
        """Every value stored under any of `keys`."""
        tk, tv, mask = self._k, self._v, self._mask
        found: set[int] = set()
        for key in keys:
            slot = key & mask
            while stored := tk[slot]:  # a chain ends at an empty slot
                if stored == key:
                    found.add(tv[slot])
                slot = (slot + 1) & mask
        return found

    def _grow(self, need: int) -> None:
        size = len(self.keys)
        while 2 * need > size:
            size *= 2
        used = self.keys != 0
        keys, vals = self.keys[used], self.vals[used]
        del used
        self._k.release()
        self._v.release()
        del self.keys, self.vals  # freed before the new ones are made
        self._allocate(size)
        _place(self.keys, self.vals, keys, vals)


def _place(table: Any, values: Any, keys: Any, vals: Any) -> None:
    """Put each key at the first free slot from its home on, all at once: per round, every
    key whose slot is free and first among those claiming it takes it, the rest move on. So
    the slots between a key's home and its place are all taken, as `get` needs."""
    mask = len(table) - 1
    slots = keys.astype(np.intp) & mask
    todo = np.arange(len(keys))
    while todo.size:
        free = table[slots] == 0
        _, first = np.unique(slots[free], return_index=True)
        won = np.flatnonzero(free)[first]
        table[slots[won]] = keys[todo[won]]
        values[slots[won]] = vals[todo[won]]
        left = np.ones(len(todo), dtype=bool)
        left[won] = False
        todo, slots = todo[left], (slots[left] + 1) & mask


class SignatureIndex:
    """Rows of MinHash signatures, found by LSH bands and verified by estimated Jaccard."""

    def __init__(self, threshold: float, num_perm: int, weights: tuple[float, float]) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        self.b, self.r = bands(threshold, num_perm, weights)
        self._blocks: list[Any] = []
        self._rows = 0
        self._dead: set[int] = set()
        self._table = _Table()
        # a band's number is mixed into its key, so one table serves every band
        self._salt = (np.arange(self.b, dtype=np.uint64) + np.uint64(1)) * _MIX[0]

    def __len__(self) -> int:
        return self._rows - len(self._dead)

    def _band_keys(self, signatures: Any) -> Any:
        """(n, b) nonzero uint32 keys of the signatures' bands."""
        n = len(signatures)
        values = signatures[:, : self.b * self.r].reshape(n, self.b, self.r).astype(np.uint64)
        h = (values * _MIX[np.arange(self.r) % len(_MIX)]).sum(axis=2, dtype=np.uint64)
        h ^= self._salt
        h ^= h >> np.uint64(29)
        h *= _MIX[4]
        h ^= h >> np.uint64(32)
        keys = h.astype(np.uint32)
        keys[keys == 0] = 1  # 0 marks an empty slot
        return keys

    def signature(self, row: int) -> Any:
        return self._blocks[row // _BLOCK][row % _BLOCK]

    def add(self, signatures: Any) -> int:
        """Store the signatures (n, num_perm) as rows; returns the first row's number."""
        signatures = np.asarray(signatures, dtype=np.uint32).reshape(-1, self.num_perm)
        first = self._rows
        for i, sig in enumerate(signatures):
            row = first + i
            if row // _BLOCK == len(self._blocks):
                self._blocks.append(np.empty((_BLOCK, self.num_perm), dtype=np.uint32))
            self._blocks[row // _BLOCK][row % _BLOCK] = sig
        self._rows += len(signatures)
        rows = np.arange(first, self._rows, dtype=np.uint32)
        self._table.insert(self._band_keys(signatures).ravel(), np.repeat(rows, self.b))
        return first

    def remove(self, row: int) -> None:
        """`row` matches nothing from now on."""
        self._dead.add(row)

    def query(self, signature: Any) -> tuple[float, int] | None:
        """(similarity, row) of the most similar live row at `threshold` or above."""
        signature = np.asarray(signature, dtype=np.uint32)
        found = self._table.get(self._band_keys(signature.reshape(1, -1)).ravel().tolist())
        best: tuple[float, int] | None = None
        for row in found - self._dead:
            sim = jaccard(self.signature(row), signature)
            if sim >= self.threshold and (best is None or sim > best[0]):
                best = (sim, row)
        return best
