"""Anonymous usage telemetry (placeholder until the telemetry work lands)."""

from starfish.telemetry.schema import JOB_EVENT, TelemetryData

__all__ = ["JOB_EVENT", "TelemetryData", "capture_job_event"]


def capture_job_event(data: TelemetryData) -> None:
    """Placeholder: the telemetry work replaces this with the real, never-raising capture."""
