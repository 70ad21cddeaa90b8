"""Anonymous usage telemetry: allow-listed job statistics, off with TELEMETRY_ENABLED=false.

Importing this package is cheap on purpose: no posthog, no file I/O, no thread. All of that
happens on the first capture (settings, thread) or in the detached deliverer (posthog).
See docs/telemetry.md for every field that can leave the machine.
"""

from starfish.telemetry.identity import TelemetryConfig
from starfish.telemetry.schema import JOB_EVENT, Event, TelemetryData, error_type_counts
from starfish.telemetry.service import (
    AnalyticsConfig,
    AnalyticsService,
    capture_job_event,
    default_service,
)

__all__ = [
    "JOB_EVENT",
    "AnalyticsConfig",
    "AnalyticsService",
    "Event",
    "TelemetryConfig",
    "TelemetryData",
    "capture_job_event",
    "default_service",
    "error_type_counts",
]
