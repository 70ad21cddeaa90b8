"""Starfish: generate synthetic datasets at scale."""

from starfish._version import __version__
from starfish.data_factory import data_factory
from starfish.errors import (
    HookError,
    InputError,
    JobNotFoundError,
    OptionsError,
    OutputError,
    ResumeError,
    StarfishError,
    StorageError,
)

__all__ = [
    "HookError",
    "InputError",
    "JobNotFoundError",
    "OptionsError",
    "OutputError",
    "ResumeError",
    "StarfishError",
    "StorageError",
    "__version__",
    "data_factory",
]
