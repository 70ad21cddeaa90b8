"""What may leave the machine: the allow-list of every telemetry field.

Only names defined here are ever sent. `docs/telemetry.md` lists the same fields and a
test keeps the two in sync.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

JOB_EVENT = "data_factory_job_complete"

CONFIG_FIELDS = (
    "batch_size",
    "target_count",
    "dead_queue_threshold",
    "max_concurrency",
    "task_runner_timeout",
    "job_run_stop_threshold",
)
COUNT_FIELDS = ("completed", "failed", "filtered", "duplicate")


@dataclass
class TelemetryData:
    """One finished data-factory job, as the maintainers see it.

    `error_summary` maps exception *type names* to counts, never messages: a message
    can carry the user's data.
    """

    job_id: str = ""
    target_reached: bool = False
    run_mode: str = "normal"
    run_time_platform: str = ""
    num_inputs: int = 0
    library_version: str = ""
    config: dict[str, int | float] = field(default_factory=dict)
    execution_time: float = 0.0
    count_summary: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(COUNT_FIELDS, 0)
    )
    error_summary: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
