"""A finished job → one `TelemetryData` → `capture_job_event`, exactly once per job.

Only the allow-listed fields of `TelemetryData` are filled: counts, exception *type names*
(never messages: they can carry the user's data), config numbers, timings and platform.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from starfish.telemetry import service

__all__ = ["llm_family", "platform_tag", "send_job_event"]

if TYPE_CHECKING:
    from starfish.data_factory.context import JobContext

logger = logging.getLogger("starfish")


def platform_tag() -> str:
    """`python-3.11/linux`: the interpreter and OS family, no host or user names."""
    return f"python-{sys.version_info.major}.{sys.version_info.minor}/{sys.platform}"


def llm_family(families: dict[str, int]) -> str | None:
    """The provider family of a run's model calls: the one that made the most calls (requests
    and cache hits); a tie goes to the earlier row of the provider table, `other` last."""
    from starfish.telemetry.schema import LLM_PROVIDERS

    used = [(-n, LLM_PROVIDERS.index(f)) for f, n in families.items() if f in LLM_PROVIDERS and n]
    return LLM_PROVIDERS[min(used)[1]] if used else None


def send_job_event(
    *,
    job_id: str,
    run_mode: str,
    num_inputs: int,
    config: dict[str, Any],
    counts: dict[str, int],
    error_summary: dict[str, int],
    execution_time: float,
    target_reached: bool,
    context: JobContext | None = None,
) -> None:
    """Build the event and hand it to telemetry; never lets telemetry break a job.

    `target_reached` is the original library's: the job's completed inputs (over all its runs)
    reached `target_count`, or every input when `target_count` is 0. `context` carries the
    model layer's counts of this run; only counts and a provider family are taken from it.
    """
    try:
        from starfish import __version__
        from starfish.telemetry.schema import (
            CONFIG_FIELDS,
            COUNT_FIELDS,
            LLM_COUNT_FIELDS,
            TelemetryData,
        )

        llm = context.llm if context is not None else None

        data = TelemetryData(
            job_id=job_id,
            target_reached=bool(target_reached),
            run_mode=run_mode,
            run_time_platform=platform_tag(),
            num_inputs=int(num_inputs),
            library_version=__version__,
            config={k: config[k] for k in CONFIG_FIELDS if config.get(k) is not None},
            execution_time=float(execution_time),
            count_summary={k: int(counts.get(k, 0)) for k in COUNT_FIELDS},
            error_summary={str(k): int(v) for k, v in error_summary.items()},
            executor=str(config.get("executor", "local")),
            llm_summary={k: int(llm.get(k, 0)) for k in LLM_COUNT_FIELDS} if llm else None,
            llm_provider=llm_family(context.llm_families) if context is not None else None,
        )
        service.capture_job_event(data)
    except Exception as exc:  # telemetry must never fail a job
        logger.debug("starfish: telemetry event not sent: %r", exc)
