"""A finished job → one `TelemetryData` → `capture_job_event`, exactly once per job.

Only the allow-listed fields of `TelemetryData` are filled: counts, exception *type names*
(never messages: they can carry the user's data), config numbers, timings and platform.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from starfish.telemetry import service

__all__ = ["platform_tag", "send_job_event"]

logger = logging.getLogger("starfish")


def platform_tag() -> str:
    """`python-3.11/linux`: the interpreter and OS family, no host or user names."""
    return f"python-{sys.version_info.major}.{sys.version_info.minor}/{sys.platform}"


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
) -> None:
    """Build the event and hand it to telemetry; never lets telemetry break a job.

    `target_reached` is the original library's: the job's completed inputs (over all its runs)
    reached `target_count`, or every input when `target_count` is 0.
    """
    try:
        from starfish import __version__
        from starfish.telemetry.schema import CONFIG_FIELDS, COUNT_FIELDS, TelemetryData

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
        )
        service.capture_job_event(data)
    except Exception as exc:  # telemetry must never fail a job
        logger.debug("starfish: telemetry event not sent: %r", exc)
