"""`Dedupe`: an `on_record_complete` hook that marks a record `duplicate` when it repeats one
already kept in this job (exactly, nearly, or in meaning), while the job runs.

Per job run the hook holds an index of the kept records: a dict of exact digests, a compact
MinHash LSH index of word-shingle signatures (`near=`, `_lsh.py`), a matrix of unit embedding
vectors (`semantic=`).
It is rebuilt from the job database when a run starts (a resume, another process), so what was
kept before a kill -9 is still seen. A record being checked *reserves* its keys until the
runner says what came of it (`settle`): a second identical record completing meanwhile waits
for that answer instead of racing it, so exactly one of two is kept, and a reservation whose
record was filtered by a later hook (the judge) is given back.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starfish.errors import OptionsError
from starfish.quality._text import NUM_PERM, digest, key_text, minhash, normalize
from starfish.quality.embeddings import Embeddings
from starfish.quality.store import IndexRow, store_for

__all__ = ["Dedupe"]

logger = logging.getLogger("starfish")
LSH_WEIGHTS = (0.05, 0.95)
"""Weights of false positives and false negatives when the bands are picked: recall first (a
candidate is verified by its estimated Jaccard anyway). At near=0.8, 16 bands of 8 find a pair
at 0.8 with p=0.95, at 0.9 with p=0.9999."""
_KEEP_RUNS = 8
"""Job runs whose index one Dedupe keeps in memory (the newest): one per job run at once."""


@dataclass
class _Keys:
    """What one record is compared by."""

    digest: bytes
    minhash: Any = None  # MinHash signature, NUM_PERM uint32 values (near=)
    vector: Any = None  # unit numpy vector (semantic=)


@dataclass
class _Hit:
    kind: str  # exact | near | semantic
    similarity: float
    of: Any  # the input index it repeats, or {"job": id, "index": i} for `against`


@dataclass
class _Reservation:
    keys: list[_Keys]
    ref: Any
    done: asyncio.Future[None]


@dataclass
class _Index:
    near: float | None
    threshold: float | None
    exact: dict[bytes, Any] = field(default_factory=dict)
    lsh: Any = None  # _lsh.SignatureIndex (near=)
    near_refs: list[Any] = field(default_factory=list)  # per signature row: whose it is
    vectors: Any = None  # (capacity, d) float32, first `rows` used
    vector_refs: list[Any] = field(default_factory=list)
    pending: dict[int, _Reservation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.near is not None:
            from starfish.quality._lsh import SignatureIndex  # numpy: when first needed

            self.lsh = SignatureIndex(self.near, NUM_PERM, LSH_WEIGHTS)

    def find(self, keys: _Keys) -> _Hit | None:
        """The kept record `keys` repeats, the most telling test first."""
        ref = self.exact.get(keys.digest)
        if ref is not None:
            return _Hit("exact", 1.0, ref)
        if keys.minhash is not None and self.lsh is not None:
            found = self.lsh.query(keys.minhash)
            if found is not None:
                return _Hit("near", found[0], self.near_refs[found[1]])
        if keys.vector is not None and self.vector_refs:
            sims = self.vectors[: len(self.vector_refs)] @ keys.vector
            i = int(sims.argmax())
            if float(sims[i]) >= (self.threshold or 1.0):
                return _Hit("semantic", float(sims[i]), self.vector_refs[i])
        return None

    def find_pending(self, keys: _Keys) -> _Reservation | None:
        """A record being checked now that `keys` would repeat if it is kept."""
        for reservation in self.pending.values():
            if any(_same(keys, o, self.near, self.threshold) for o in reservation.keys):
                return reservation
        return None

    def add(self, keys: _Keys, ref: Any) -> list[tuple[str, Any]]:
        """Keep `keys` as a record of `ref`; returns what `remove` would take back."""
        added: list[tuple[str, Any]] = []
        if keys.digest not in self.exact:
            self.exact[keys.digest] = ref
            added.append(("exact", keys.digest))
        if keys.minhash is not None and self.lsh is not None:
            added.append(("near", self.lsh.add(keys.minhash)))
            self.near_refs.append(ref)
        if keys.vector is not None:
            added.append(("semantic", len(self.vector_refs)))
            self._add_vector(keys.vector, ref)
        return added

    def remove(self, added: list[tuple[str, Any]]) -> None:
        """Take back what `add` kept (its records could not be stored after all)."""
        for kind, key in added:
            if kind == "exact":
                self.exact.pop(key, None)
            elif kind == "near" and self.lsh is not None:
                self.lsh.remove(key)
                self.near_refs[key] = None
            else:
                self.vectors[key] = 0.0  # a zero vector matches nothing

    def _add_vector(self, vector: Any, ref: Any) -> None:
        import numpy as np

        n = len(self.vector_refs)
        if self.vectors is None or n == len(self.vectors):
            grown = np.zeros((max(64, 2 * n), len(vector)), dtype=np.float32)
            if self.vectors is not None:
                grown[:n] = self.vectors
            self.vectors = grown
        self.vectors[n] = vector
        self.vector_refs.append(ref)


def _same(a: _Keys, b: _Keys, near: float | None, threshold: float | None) -> bool:
    from starfish.quality._lsh import jaccard

    if a.digest == b.digest:
        return True
    if (
        near is not None
        and a.minhash is not None
        and b.minhash is not None
        and jaccard(a.minhash, b.minhash) >= near
    ):
        return True
    if threshold is not None and a.vector is not None and b.vector is not None:
        return float(a.vector @ b.vector) >= threshold
    return False


class Dedupe:
    """`on_record_complete` hook: `duplicate` when a record repeats one kept in this job.

    `fields`: the fields compared (all string fields when none are named). `near` (0.5-1.0):
    also a near duplicate at that estimated Jaccard similarity of word shingles. `semantic`:
    also a duplicate at `Embeddings.threshold` cosine similarity. `against`: job ids whose
    kept records count as seen too.
    """

    def __init__(
        self,
        *fields: str,
        near: float | None = None,
        semantic: Embeddings | None = None,
        against: Sequence[str] = (),
    ) -> None:
        for f in fields:
            if not isinstance(f, str) or not f:
                raise OptionsError(f"Dedupe fields are field names (strings), not {f!r}")
        if near is not None and (
            isinstance(near, bool) or not isinstance(near, (int, float)) or not 0.5 <= near <= 1
        ):
            raise OptionsError(
                f"Dedupe(near={near!r}): near is an estimated Jaccard similarity from 0.5 to "
                "1.0 (0.8 catches a few changed words); below 0.5 unrelated texts match."
            )
        if semantic is not None and not isinstance(semantic, Embeddings):
            raise OptionsError(
                f"Dedupe(semantic=...) takes Embeddings(model=..., threshold=...), not "
                f"{type(semantic).__name__}"
            )
        if isinstance(against, str):
            against = (against,)
        self.fields = tuple(fields)
        self.near = float(near) if near is not None else None
        self.semantic = semantic
        self.against = tuple(against)
        self.name = "dedupe(" + ",".join(self.fields) + ")"
        self._runs: dict[str, tuple[Any, _Index]] = {}
        self._held: dict[tuple[str, int, int], tuple[_Reservation, list[_Keys]]] = {}
        self._dups: dict[tuple[str, int, int], list[Any]] = {}
        self._last_kept: tuple[tuple[str, int, int], list[Any]] | None = None

    def __repr__(self) -> str:
        args = [repr(f) for f in self.fields]
        if self.near is not None:
            args.append(f"near={self.near:g}")
        if self.semantic is not None:
            args.append(f"semantic={self.semantic!r}")
        if self.against:
            args.append(f"against={list(self.against)!r}")
        return f"Dedupe({', '.join(args)})"

    # a job stores its hooks: the settings, never an index
    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("fields", "near", "semantic", "against")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["fields"], **{k: state[k] for k in ("near", "semantic", "against")})  # type: ignore[misc]

    # the hook --------------------------------------------------------------------------------
    async def __call__(self, records: list[dict[str, Any]], state: Any) -> str | None:
        from starfish.data_factory.context import current_call

        call = current_call()
        if call is None:
            raise OptionsError("Dedupe is an on_record_complete hook of a @data_factory job")
        job = call.job
        index = self._index_for(job)
        texts = [normalize(key_text(r, self.fields, repr(self))) for r in records]
        keys = [_Keys(digest(t), minhash(t) if self.near is not None else None) for t in texts]
        if self.semantic is not None and keys:
            for k, v in zip(keys, await self.semantic.vectors(texts), strict=True):
                k.vector = v
        slot = (job.job_id, call.index, call.attempt)
        while True:
            hits = [index.find(k) for k in keys]
            if any(hits):
                self._dups[slot] = [
                    None
                    if h is None
                    else {"duplicate": h.kind, "similarity": round(h.similarity, 4), "of": h.of}
                    for h in hits
                ]
                return "duplicate"
            waiting = next((r for k in keys if (r := index.find_pending(k))), None)
            if waiting is None:
                break
            await asyncio.shield(waiting.done)  # kept, or given back: look again
        loop = asyncio.get_running_loop()
        reservation = _Reservation(keys, call.index, loop.create_future())
        index.pending[id(reservation)] = reservation
        self._held[slot] = (reservation, keys)
        return None

    def settle(self, records: list[dict[str, Any]], outcome: str, state: Any) -> None:
        """What came of the records this hook saw: kept ones join the index (stored first),
        a duplicate's finding is stored beside it, anything else gives its keys back."""
        from starfish.data_factory.context import current_call

        call = current_call()
        if call is None:
            return
        job = call.job
        slot = (job.job_id, call.index, call.attempt)
        store = store_for(job.db_path)
        dups = self._dups.pop(slot, None)
        if dups is not None and outcome == "duplicate":
            store.put(job.job_id, self.name, quality=(call.index, call.attempt, outcome, dups))
        run = self._runs.get(job.job_id)
        index = run[1] if run is not None else None
        held = self._held.pop(slot, None)
        if held is None:
            last, self._last_kept = self._last_kept, None
            if outcome == "failed" and last is not None and last[0] == slot and index:
                # kept, then the runner could not store the records: take them back
                index.remove(last[1])
                store.put(job.job_id, self.name, drop_index=call.index)
            return
        reservation, keys = held
        if index is not None:
            index.pending.pop(id(reservation), None)
            if outcome == "completed":
                store.put(job.job_id, self.name, index=_row(call.index, keys))
                added = [entry for k in keys for entry in index.add(k, call.index)]
                self._last_kept = (slot, added)
        if not reservation.done.done():
            reservation.done.set_result(None)

    # the index of a job run ------------------------------------------------------------------
    def _index_for(self, job: Any) -> _Index:
        """This run's index: rebuilt from the database when the run is new to this hook."""
        run = self._runs.get(job.job_id)
        if run is not None and run[0]() is job:
            return run[1]
        index = _Index(self.near, self.semantic.threshold if self.semantic else None)
        self._restore(index, job.job_id, None)
        for other in self.against:
            self._restore(index, other, other)
        self._runs.pop(job.job_id, None)
        self._runs[job.job_id] = (weakref.ref(job), index)
        while len(self._runs) > _KEEP_RUNS:
            self._runs.pop(next(iter(self._runs)))
        return index

    def _restore(self, index: _Index, job_id: str, against: str | None) -> None:
        """Add the kept records of `job_id`: from its stored index rows where it has them
        (only inputs stored completed), else recomputed from its records (exact and near)."""
        from starfish.data_factory.storage import locate_job

        try:
            storage, full_id = locate_job(job_id)
        except Exception as exc:
            if against is None:
                return  # a new job: nothing kept yet
            raise OptionsError(f"{self!r}: against job {job_id!r}: {exc}") from None
        completed = set(storage.indices(full_id, "completed"))
        path = getattr(storage, "path", None)
        indexed: set[int] = set()
        for row in store_for(path).index_rows(full_id, self.name):  # streamed, a page at a time
            idx = row[0]
            indexed.add(idx)
            if idx in completed:
                ref = idx if against is None else {"job": full_id, "index": idx}
                for k in _unrow(row):
                    index.add(k, ref)
        missing = completed - indexed
        if not missing:
            return
        if self.semantic is not None:
            logger.warning(
                "starfish: %r: %d kept inputs of job %s have no stored embeddings; they are "
                "checked exactly and nearly only",
                self,
                len(missing),
                full_id,
            )
        for idx, _, records in storage.iter_outcomes(full_id, "completed"):
            if idx in missing:
                ref = idx if against is None else {"job": full_id, "index": idx}
                for r in records:
                    t = normalize(key_text(r, self.fields, repr(self)))
                    index.add(_Keys(digest(t), minhash(t) if self.near else None), ref)


def _row(idx: int, keys: list[_Keys]) -> IndexRow:
    import numpy as np

    exact = b"".join(k.digest for k in keys)
    sigs = vecs = None
    if keys and keys[0].minhash is not None:
        sigs = b"".join(np.asarray(k.minhash, dtype=np.uint32).tobytes() for k in keys)
    if keys and keys[0].vector is not None:
        vecs = b"".join(np.asarray(k.vector, dtype=np.float32).tobytes() for k in keys)
    return (idx, len(keys), exact, sigs, vecs)


def _unrow(row: IndexRow) -> list[_Keys]:
    import numpy as np

    _, n, exact, sigs, vecs = row
    keys = [_Keys((exact or b"")[16 * i : 16 * i + 16]) for i in range(n)]
    if sigs:
        values = np.frombuffer(sigs, dtype=np.uint32).reshape(n, NUM_PERM)
        for k, hv in zip(keys, values, strict=True):
            k.minhash = hv
    if vecs:
        matrix = np.frombuffer(vecs, dtype=np.float32).reshape(n, -1)
        for k, vec in zip(keys, matrix, strict=True):
            k.vector = vec.copy()
    return keys
