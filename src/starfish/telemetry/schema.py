"""What may leave the machine: the allow-list of every telemetry field.

Only names defined here are ever sent. Every value is checked against its declared type (and
strings against a narrow pattern) before an event is queued, so a caller that puts user data in
the wrong place gets the field dropped, not sent. `docs/telemetry.md` lists the same fields and a
test keeps the two in sync.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard

from starfish._numbers import is_int

__all__ = [
    "CONFIG_FIELDS",
    "CONTEXT_FIELDS",
    "COUNT_FIELDS",
    "ENVELOPE_FIELDS",
    "EVENTS",
    "EXECUTORS",
    "JOB_EVENT",
    "JOB_FIELDS",
    "LLM_COUNT_FIELDS",
    "LLM_PROVIDERS",
    "MAX_ERROR_TYPES",
    "SDK_FIELDS",
    "WIRE_FIELDS",
    "Event",
    "TelemetryData",
    "clean_job",
    "clean_properties",
    "clean_wire_properties",
    "error_type_counts",
]

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
EXECUTORS = ("local", "ray")  # where a job's calls ran: a fixed word, never a host or address

# The model layer's counts of one run, and its provider family: a row of the provider table
# (starfish/llm/providers.py, same order; a test compares) or `other`, never a model or URL.
LLM_COUNT_FIELDS = (
    "requests",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "batch_requests",
)
LLM_PROVIDERS = (
    "openai",
    "ollama",
    "vllm",
    "openrouter",
    "together",
    "groq",
    "deepseek",
    "gemini",
    "anthropic",
    "other",
)

# Added to every event by the service: the environment, never the user or the host.
CONTEXT_FIELDS = ("python_version", "os", "is_ci")

# Added by the posthog SDK; anything else the SDK adds (OS version, distro, ...) is stripped.
SDK_FIELDS = ("$lib", "$lib_version", "$geoip_disable", "$process_person_profile")

# The keys of one event on the wire, around its `properties`.
ENVELOPE_FIELDS = ("event", "distinct_id", "uuid", "timestamp", "properties")

MAX_ERROR_TYPES = 32

_WORD = re.compile(r"[a-z][a-z0-9_]{0,31}")
_VERSION = re.compile(r"[0-9A-Za-z.+\-]{1,32}")
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_JOB_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PLATFORM = re.compile(r"[a-z][a-z0-9_.\-]{0,31}(/[a-z0-9_]{1,16})?")


@dataclass
class TelemetryData:
    """One finished data-factory job, as the maintainers see it.

    `error_summary` maps exception *type names* to counts, never messages: a message
    can carry the user's data. `job_id` must be random: 32 hex digits or a UUID (else dropped).
    """

    job_id: str = ""
    target_reached: bool = False
    run_mode: str = "normal"
    run_time_platform: str = ""
    num_inputs: int = 0
    library_version: str = ""
    config: dict[str, int | float] = field(default_factory=dict)
    execution_time: float = 0.0
    count_summary: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_FIELDS, 0))
    error_summary: dict[str, int] = field(default_factory=dict)
    executor: str = "local"
    llm_summary: dict[str, int] | None = None  # None: the job called no model
    llm_provider: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Event:
    """One telemetry event; `data` is filtered through the allow-list before it is queued."""

    name: str
    data: dict[str, Any]
    client_id: str = field(default_factory=lambda: _persisted_client_id())


def _persisted_client_id() -> str:
    from starfish.telemetry.identity import TelemetryConfig

    return str(TelemetryConfig.generate_client_id())


def error_type_counts(errors: Iterable[BaseException | type[BaseException]]) -> dict[str, int]:
    """Exception type names to counts: the only form in which errors may leave the machine."""
    counts: dict[str, int] = {}
    for err in errors:
        name = (err if isinstance(err, type) else type(err)).__name__
        counts[name] = counts.get(name, 0) + 1
    return counts


# The checks run on the caller's thread for every finished job, so each takes the common case
# (an exact int, str or dict) first and falls back to the general rule.


def _is_mapping(value: object) -> TypeGuard[Mapping[Any, Any]]:
    return type(value) is dict or isinstance(value, Mapping)


def _count(value: object) -> int | None:
    return value if is_int(value) and value >= 0 else None


def _number(value: object) -> int | float | None:
    if is_int(value):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


_KNOWN_GOOD_MAX = 512


def _matching(pattern: re.Pattern[str]) -> Callable[[object], str | None]:
    good: set[str] = set()  # strings already seen to match: versions, modes repeat every job

    def check(value: object) -> str | None:
        if type(value) is str and value in good:
            return value
        if isinstance(value, str) and pattern.fullmatch(value):
            if type(value) is str and len(good) < _KNOWN_GOOD_MAX:
                good.add(value)
            return value
        return None

    return check


def _job_id(value: object) -> str | None:
    return value.lower() if isinstance(value, str) and _JOB_ID.fullmatch(value.lower()) else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _duration(value: object) -> float | None:
    number = _number(value)
    return round(float(number), 3) if number is not None and number >= 0 else None


def _config(value: object) -> dict[str, int | float | None] | None:
    if not _is_mapping(value):
        return None
    out: dict[str, int | float | None] = {}
    for key in CONFIG_FIELDS:
        if key in value:
            item = value[key]
            if item is None or _number(item) is not None:
                out[key] = item
    return out


def _counts(value: object) -> dict[str, int] | None:
    if not _is_mapping(value):
        return None
    return {k: value[k] for k in COUNT_FIELDS if k in value and _count(value[k]) is not None}


def _llm_counts(value: object) -> dict[str, int] | None:
    if not _is_mapping(value):
        return None
    return {k: value[k] for k in LLM_COUNT_FIELDS if k in value and _count(value[k]) is not None}


def _llm_provider(value: object) -> str | None:
    return value if type(value) is str and value in LLM_PROVIDERS else None


_type_name = _matching(_TYPE_NAME)


def _errors(value: object) -> dict[str, int] | None:
    if not _is_mapping(value):
        return None
    kept = [(k, v) for k, v in value.items() if _type_name(k) is not None and _count(v) is not None]
    if len(kept) > MAX_ERROR_TYPES:
        kept.sort(key=lambda kv: (-kv[1], kv[0]))
        del kept[MAX_ERROR_TYPES:]
    return dict(kept)


# Each allow-listed job field and the check its value must pass; a failing value is dropped.
JOB_FIELDS: dict[str, Callable[[object], Any]] = {
    "job_id": _job_id,
    "target_reached": _flag,
    "run_mode": _matching(_WORD),
    "run_time_platform": _matching(_PLATFORM),
    "num_inputs": _count,
    "library_version": _matching(_VERSION),
    "config": _config,
    "execution_time": _duration,
    "count_summary": _counts,
    "error_summary": _errors,
    "executor": lambda value: value if value in EXECUTORS else None,
    "llm_summary": _llm_counts,
    "llm_provider": _llm_provider,
}

# Every event name that may be sent, and the fields its properties may carry. A new event type
# is one entry here plus its row in the Events table of docs/telemetry.md (a test compares).
EVENTS: dict[str, dict[str, Callable[[object], Any]]] = {JOB_EVENT: JOB_FIELDS}


def clean_properties(name: str, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """Keep only allow-listed, well-typed fields; None when the event itself is not allowed."""
    checks = EVENTS.get(name)
    if checks is None or not isinstance(data, Mapping):
        return None
    out: dict[str, Any] = {}
    for key, check in checks.items():
        if key in data:
            value = check(data[key])
            if value is not None:
                out[key] = value
    return out


def clean_job(data: TelemetryData) -> dict[str, Any]:
    """`clean_properties` for a TelemetryData without `asdict`'s deep copy (the hot path)."""
    out: dict[str, Any] = {}
    for key, check in JOB_FIELDS.items():
        value = check(getattr(data, key, None))
        if value is not None:
            out[key] = value
    return out


# name -> (type, meaning) of everything that can leave the machine; docs/telemetry.md mirrors it.
WIRE_FIELDS: dict[str, tuple[str, str]] = {
    "api_key": ("string", "The project's write-only PostHog key (once per request)."),
    "sent_at": ("string (ISO 8601, UTC)", "When the request left (once per request)."),
    "batch": ("array of events", "The events of this request, each with the fields below."),
    "event": ("string", "The event name: one of the names in the Events table above."),
    "distinct_id": ("string (UUID)", "The random client id from `.starfish_config`."),
    "uuid": ("string (UUID)", "Random id of this event, so a resend is never counted twice."),
    "timestamp": ("string (ISO 8601, UTC)", "When the event was captured."),
    "properties.job_id": ("string", "Random id of the job (32 hex digits), made by Starfish."),
    "properties.target_reached": ("bool", "Whether the job reached its target count."),
    "properties.run_mode": (
        "string",
        "How the job ran: `normal`, `dry_run` or `resume_from_checkpoint`.",
    ),
    "properties.run_time_platform": ("string", "Python and OS family, e.g. `python-3.11/linux`."),
    "properties.num_inputs": ("int", "How many inputs the job was given."),
    "properties.library_version": ("string", "The Starfish version."),
    "properties.execution_time": ("float", "Wall time of the job in seconds."),
    "properties.executor": (
        "string",
        "Where the calls ran: `local` or `ray`; never a host name or address.",
    ),
    **{
        f"properties.config.{name}": ("int, float or null", f"The job's `{name}` setting.")
        for name in CONFIG_FIELDS
    },
    **{
        f"properties.count_summary.{name}": ("int", f"Number of {name} records.")
        for name in COUNT_FIELDS
    },
    "properties.llm_summary.requests": (
        "int",
        "Model requests sent in this run (HTTP requests, retries and re-asks included); "
        "`llm_summary` is sent only by a job that called a model.",
    ),
    "properties.llm_summary.cache_hits": ("int", "Model calls answered from the cache."),
    "properties.llm_summary.prompt_tokens": ("int", "Prompt tokens the server reported."),
    "properties.llm_summary.completion_tokens": ("int", "Completion tokens the server reported."),
    "properties.llm_summary.batch_requests": (
        "int",
        "Of `requests`, those sent through a provider's batch API (`StructuredLLM(batch=True)`).",
    ),
    "properties.llm_provider": (
        "string",
        "Provider family of the model calls: a row of the provider table "
        "(`openai`, `ollama`, `vllm`, ...) or `other`; never a model name or URL.",
    ),
    "properties.error_summary": (
        "object: string -> int",
        "Exception type names (e.g. `TimeoutError`, or your own class names) to counts; "
        "never messages.",
    ),
    "properties.python_version": ("string", "Python version, e.g. `3.11.7`."),
    "properties.os": ("string", "Operating system family: `linux`, `darwin` or `windows`."),
    "properties.is_ci": ("bool", "Whether a CI environment variable (e.g. `CI`) is set."),
    "properties.$lib": ("string", "Added by the PostHog SDK: `posthog-python`."),
    "properties.$lib_version": ("string", "Added by the PostHog SDK: its version."),
    "properties.$geoip_disable": ("bool", "Always true: PostHog must not derive a location."),
    "properties.$process_person_profile": (
        "bool",
        "Always false: PostHog builds no person profile.",
    ),
}


_CONTEXT_CHECKS: dict[str, Callable[[object], Any]] = {
    "python_version": _matching(_VERSION),
    "os": _matching(_WORD),
    "is_ci": _flag,
}


def clean_wire_properties(name: str, props: Mapping[str, Any]) -> dict[str, Any] | None:
    """The allow-list once more at the wire: job fields plus context, each re-checked."""
    out = clean_properties(name, props)
    if out is None:
        return None
    for key, check in _CONTEXT_CHECKS.items():
        if key in props:
            value = check(props[key])
            if value is not None:
                out[key] = value
    return out
