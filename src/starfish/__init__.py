"""Starfish: generate synthetic datasets at scale."""

from starfish._version import __version__
from starfish.data_factory import data_factory
from starfish.errors import (
    HookError,
    InputError,
    JobNotFoundError,
    JobStopped,
    OptionsError,
    OutputError,
    ResumeError,
    SecretError,
    StarfishError,
    StorageError,
)

__all__ = [
    "HookError",
    "InputError",
    "JobNotFoundError",
    "JobStopped",
    "OptionsError",
    "OutputError",
    "ResumeError",
    "SecretError",
    "StarfishError",
    "StorageError",
    "StructuredLLM",
    "__version__",
    "data_factory",
]


def __getattr__(name: str) -> object:
    # The model layer (jinja2, pydantic, aiohttp) loads on first use, so `import starfish`
    # stays fast for jobs that never call a model.
    if name == "StructuredLLM":
        from starfish.llm import StructuredLLM

        return StructuredLLM
    raise AttributeError(f"module 'starfish' has no attribute {name!r}")
