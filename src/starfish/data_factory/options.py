"""The options of a data factory: one frozen, validated value, checked where it is written.

A bad option is an `OptionsError` (a `ValueError`) at decoration naming the option and the
fix, so a typo never surfaces half-way through a paid run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from starfish._numbers import is_int, is_number, is_positive
from starfish.errors import OptionsError

__all__ = [
    "EXECUTORS",
    "HOOK_OPTIONS",
    "NAMES",
    "STORAGES",
    "Hook",
    "Hooks",
    "Options",
    "hook_list",
]

Hook = Callable[..., Any]
Hooks = Hook | list[Hook] | tuple[Hook, ...] | None

STORAGES = ("local", "in_memory")
EXECUTORS = ("local", "ray")
HOOK_OPTIONS = ("on_record_complete", "on_record_error")


@dataclasses.dataclass(frozen=True, eq=False)
class Options:
    """Every `@data_factory` option with its default; build it with `Options.create`."""

    storage: str = "local"
    batch_size: int = 1
    target_count: int = 0
    dead_queue_threshold: int = 3
    max_concurrency: int = 10
    initial_state_values: Mapping[str, Any] | None = None
    on_record_complete: Hooks = None
    on_record_error: Hooks = None
    show_progress: bool = True
    task_runner_timeout: float | None = 60
    job_run_stop_threshold: int = 20
    stop_threshold: float = 0.9
    stop_window: int = 100
    rate_limit: str | None = None
    executor: str = "local"
    budget_usd: float | None = None
    llm_cache: bool = True  # False: the job's model calls neither read nor keep cached answers

    @classmethod
    def create(cls, options: Mapping[str, Any] | None = None) -> Options:
        """Options from keyword values; unknown names and bad values raise `OptionsError`."""
        options = dict(options or {})
        unknown = set(options) - set(NAMES)
        if unknown:
            raise OptionsError(
                f"unknown data_factory option(s): {', '.join(sorted(unknown))}; "
                f"valid options are {', '.join(NAMES)}."
            )
        opts = cls(**options)
        opts._validate()
        return opts

    def replace(self, **changes: Any) -> Options:
        """A copy with some options changed, validated like the decorator's."""
        return Options.create({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in NAMES}

    def public_config(self) -> dict[str, Any]:
        """The options as stored and shown: JSON-safe, hooks by name."""
        config = self.to_dict()
        for name in HOOK_OPTIONS:
            config[name] = [getattr(h, "__qualname__", repr(h)) for h in hook_list(config[name])]
        if config["initial_state_values"] is not None:
            config["initial_state_values"] = dict(config["initial_state_values"])
        return config

    @property
    def timeout(self) -> float | None:
        return self.task_runner_timeout or None

    def _validate(self) -> None:
        if self.storage not in STORAGES:
            raise OptionsError(f"storage must be 'local' or 'in_memory', got {self.storage!r}.")
        _check_int("batch_size", self.batch_size, 1, "finished inputs per storage transaction")
        _check_int("target_count", self.target_count, 0, "0 means one per input")
        _check_int("dead_queue_threshold", self.dead_queue_threshold, 1, "attempts per input")
        _check_int("max_concurrency", self.max_concurrency, 1, "calls running at once")
        _check_int(
            "job_run_stop_threshold",
            self.job_run_stop_threshold,
            0,
            "different inputs that must all fail, before anything succeeds, for the job to "
            "stop at its start; 0 turns the circuit breaker off",
        )
        _check_share("stop_threshold", self.stop_threshold)
        from starfish.data_factory.rules import STOP_WINDOW_MIN

        _check_int(
            "stop_window",
            self.stop_window,
            STOP_WINDOW_MIN,
            "the last outcomes the circuit breaker's failure share is taken over; fewer "
            "would stop jobs by chance",
        )
        _check_positive_or_none(
            "task_runner_timeout", self.task_runner_timeout, "seconds", "None for no limit"
        )
        init = self.initial_state_values
        if init is not None and not isinstance(init, Mapping):
            raise OptionsError(f"initial_state_values must be a dict or None, got {init!r}.")
        if init and self.storage == "local":  # in-memory state is never encoded
            from starfish.data_factory.state import check_initial_state

            check_initial_state(init)
        if not isinstance(self.show_progress, bool):
            raise OptionsError(f"show_progress must be True or False, got {self.show_progress!r}.")
        for name in HOOK_OPTIONS:
            _check_hooks(name, getattr(self, name))
        if self.executor not in EXECUTORS:
            raise OptionsError(f"executor must be 'local' or 'ray', got {self.executor!r}.")
        if self.executor == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise OptionsError(
                    "executor='ray' needs Ray, which is not installed: "
                    "pip install 'starfish-datagen[ray]'."
                )
        _check_positive_or_none(
            "budget_usd",
            self.budget_usd,
            "US dollars",
            "None for no budget (the job stops once its model calls cost that much)",
        )
        if self.rate_limit is not None:
            from starfish.data_factory.gates import parse_rate

            parse_rate(self.rate_limit)


NAMES = tuple(f.name for f in dataclasses.fields(Options))


def hook_list(hooks: Hooks) -> list[Hook]:
    if hooks is None:
        return []
    if callable(hooks):
        return [hooks]
    return list(hooks)


def _check_int(name: str, value: Any, minimum: int, meaning: str) -> None:
    if not is_int(value) or value < minimum:
        raise OptionsError(f"{name} must be an integer >= {minimum} ({meaning}), got {value!r}.")


def _check_share(name: str, value: Any) -> None:
    if not is_number(value) or not 0 <= value <= 1:
        raise OptionsError(
            f"{name} must be a number from 0 to 1 (the share of failed attempts among the "
            f"last stop_window outcomes that stops the job, e.g. 0.9; 0 turns the circuit "
            f"breaker off), got {value!r}."
        )


def _check_positive_or_none(name: str, value: Any, unit: str, otherwise: str) -> None:
    if value is None:
        return
    if not is_positive(value):
        raise OptionsError(f"{name} must be a number of {unit} > 0, or {otherwise}, got {value!r}.")


def _check_hooks(name: str, value: Any) -> None:
    if value is None or callable(value):
        return
    if isinstance(value, (list, tuple)) and all(callable(h) for h in value):
        return
    raise OptionsError(
        f"{name} must be a callable or a list of callables taking (output, state) "
        f"or (error, state), got {value!r}."
    )
