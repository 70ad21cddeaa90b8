"""Quality while a job runs: deduplication (exact, near, semantic) and an LLM judge, as
`on_record_complete` hooks whose findings are stored beside the records. See docs/quality.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starfish.data_factory.context import JOB_DELETED, RECORD_ANNOTATIONS
from starfish.quality.dedupe import Dedupe
from starfish.quality.embeddings import Embeddings
from starfish.quality.judge import Judge
from starfish.quality.report import iter_with_quality, quality_line, summary
from starfish.quality.store import existing_store

__all__ = ["Dedupe", "Embeddings", "Judge", "iter_with_quality", "quality_line", "summary"]


def _annotated(job_id: str, filter: str) -> Iterator[dict[str, Any]]:
    return iter_with_quality(job_id, filter)


RECORD_ANNOTATIONS.append(_annotated)  # `export(..., with_quality=True)` without an import


def _forget(path: Path | None, job_id: str) -> None:
    store = existing_store(path)
    if store is not None:
        store.delete_job(job_id)


JOB_DELETED.append(_forget)  # `jobs delete` takes the job's quality rows and index with it
