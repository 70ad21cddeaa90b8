"""The exceptions users catch."""


class StarfishError(Exception):
    """Base of every error Starfish raises on purpose."""


class InputError(StarfishError, ValueError):
    """The inputs of a job are wrong; raised before the function is called once."""


class OutputError(StarfishError):
    """A job finished without one completed input; its records stay in storage."""
