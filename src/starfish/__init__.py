"""Starfish: generate synthetic datasets at scale."""

from starfish._version import __version__
from starfish.data_factory import data_factory
from starfish.errors import InputError, OutputError, StarfishError

__all__ = ["InputError", "OutputError", "StarfishError", "__version__", "data_factory"]
