"""What the quality hooks found, read back: a job's summary (`jobs show`) and its records with
`quality.*` columns (`jobs export --with-quality`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from starfish.quality.store import existing_store

__all__ = ["iter_with_quality", "quality_line", "summary", "tally"]


def _located(job_id: str) -> tuple[Any, str, Any]:
    from starfish.data_factory.storage import locate_job

    storage, full_id = locate_job(job_id)
    return storage, full_id, existing_store(getattr(storage, "path", None))


def summary(job_id: str) -> dict[str, Any] | None:
    """Kept inputs, duplicates by kind, judged records with their mean score, share under
    `min_score` and histogram; None when no quality hook ran in the job."""
    storage, full_id, store = _located(job_id)
    if store is None:
        return None
    found = tally((outcome, data) for _, _, _, outcome, data in store.quality_rows(full_id))
    if found is None:
        return None
    counts, _ = storage.live_counts(full_id)
    row = storage.get_job(full_id) or {}
    return {
        "kept": counts["completed"],
        "inputs": row.get("num_inputs"),
        "duplicate_attempts": counts["duplicate"],
        **found,
    }


def tally(rows: Iterable[tuple[str, list[Any]]]) -> dict[str, Any] | None:
    """Duplicates by kind and the judge's figures from (outcome, per-record dicts) rows; None
    when there are none. Shared with the viewer, which reads the rows itself (read-only)."""
    duplicates: Counter[str] = Counter()
    scores: Counter[int] = Counter()
    under = judged = 0
    min_score = None
    seen = False
    for outcome, data in rows:
        seen = True
        for item in data:
            if not item:
                continue
            if "duplicate" in item and outcome == "duplicate":
                duplicates[item["duplicate"]] += 1
            if "score" in item:
                judged += 1
                scores[item["score"]] += 1
                min_score = item.get("min_score")
                under += min_score is not None and item["score"] < min_score
    if not seen:
        return None
    total = sum(n * s for s, n in scores.items())
    return {
        "duplicates": {k: duplicates[k] for k in ("exact", "near", "semantic")},
        "judged": judged,
        "mean_score": round(total / judged, 3) if judged else None,
        "min_score": min_score,
        "under_min_score": under,
        "score_histogram": {str(s): scores[s] for s in sorted(scores)},
    }


def quality_line(q: dict[str, Any]) -> str:
    """`kept 9,188 of 10,000 · duplicates 812 (exact 500, near 300, semantic 12) · judged
    9,188: mean 4.1, 7 % under 4`."""
    d = q["duplicates"]
    parts = [f"kept {q['kept']:,} of {q['inputs']:,}"]
    parts.append(
        f"duplicates {sum(d.values()):,} (exact {d['exact']:,}, near {d['near']:,}, "
        f"semantic {d['semantic']:,})"
    )
    if q["judged"]:
        line = f"judged {q['judged']:,}: mean {q['mean_score']:.1f}"
        if q["min_score"] is not None:
            share = 100 * q["under_min_score"] / q["judged"]
            line += f", {share:.0f} % under {q['min_score']}"
        parts.append(line)
    return " · ".join(parts)


def iter_with_quality(job_id: str, filter: str = "completed") -> Iterator[dict[str, Any]]:
    """The records `iter_records` gives, each with `quality.*` fields from what the hooks
    stored beside it (`quality.score`, `quality.reason`, `quality.duplicate`,
    `quality.similarity`, `quality.duplicate_of`); empty where a hook stored nothing."""
    storage, full_id, store = _located(job_id)
    found: dict[tuple[int, int], list[dict[str, Any]]] = {}
    if store is not None:
        for index, attempt, _, _, data in store.quality_rows(full_id):
            per = found.setdefault((index, attempt), [{} for _ in data])
            for mine, item in zip(per, data, strict=False):
                if item:
                    mine.update(item)
    for index, attempt, records in storage.iter_outcomes(full_id, filter):
        per = found.get((index, attempt), [])
        for i, record in enumerate(records):
            item = per[i] if i < len(per) else {}
            of = item.get("of")
            yield {
                **record,
                "quality.score": item.get("score"),
                "quality.reason": item.get("reason"),
                "quality.duplicate": item.get("duplicate"),
                "quality.similarity": item.get("similarity"),
                "quality.duplicate_of": of if not isinstance(of, dict) else of.get("index"),
            }
