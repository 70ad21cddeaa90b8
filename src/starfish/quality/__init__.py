"""Quality while a job runs: deduplication (exact, near, semantic) and an LLM judge, as
`on_record_complete` hooks whose findings are stored beside the records. See docs/quality.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starfish.data_factory.context import RECORD_ANNOTATIONS
from starfish.quality.dedupe import Dedupe
from starfish.quality.embeddings import Embeddings
from starfish.quality.judge import Judge
from starfish.quality.report import iter_with_quality, quality_line, summary

__all__ = ["Dedupe", "Embeddings", "Judge", "iter_with_quality", "quality_line", "summary"]


def _annotated(job_id: str, filter: str) -> Iterator[dict[str, Any]]:
    return iter_with_quality(job_id, filter)


RECORD_ANNOTATIONS.append(_annotated)  # `export(..., with_quality=True)` without an import
