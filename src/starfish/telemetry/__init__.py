"""Anonymous usage telemetry: allow-listed job statistics, off with TELEMETRY_ENABLED=false.

Importing this package is cheap on purpose: no posthog, no file I/O, no thread. All of that
happens on the first capture (settings, thread) or in the detached deliverer (posthog).
See docs/telemetry.md for every field that can leave the machine.
"""

from starfish.telemetry.identity import TelemetryConfig
from starfish.telemetry.schema import Event, TelemetryData
from starfish.telemetry.service import AnalyticsConfig, AnalyticsService

# What users call. The library's own entry points (`service.capture_job_event`,
# `schema.JOB_EVENT`, ...) are imported from the module that owns them.
__all__ = [
    "AnalyticsConfig",
    "AnalyticsService",
    "Event",
    "TelemetryConfig",
    "TelemetryData",
]
