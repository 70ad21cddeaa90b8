"""Rules: each sees every outcome and may decide what happens next.

A rule answers `None` (nothing to say), `Retry(delay)`, `DEAD` (to the dead-letter queue) or
`Stop(status, reason)` (end the job). The runner asks its rules in order and acts on the first
`Stop`; otherwise on the first `Retry` or `DEAD`. Retry/backoff with the dead-letter
threshold, the circuit breaker, `target_count` and fatal errors are rules; a new limit (a cost
budget, say) is one more class here and one more entry in `default_rules`.

An exception can carry hints that the rules honour: `retry_after` (seconds to wait before the
retry) and `fatal = True` (no retry can fix it: stop the job).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = [
    "ALL",
    "DEAD",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "CircuitBreaker",
    "Decision",
    "FatalError",
    "Outcome",
    "Retry",
    "RetryThenDead",
    "Rule",
    "Stop",
    "TargetCount",
    "default_rules",
]

RETRY_BASE_DELAY = 0.02
"""Seconds before the first retry; doubled per attempt, with jitter of ±50 %."""
RETRY_MAX_DELAY = 2.0


class Outcome(NamedTuple):
    """What one attempt at one input came to (a tuple: one is made per input)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing here calls
    attempt: int
    status: str  # completed | failed | filtered | duplicate
    error: BaseException | None = None
    num_records: int = 0


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float


@dataclass(frozen=True, slots=True)
class Stop:
    status: str  # the job's status: completed | stopped | failed
    reason: str


class _Dead:
    def __repr__(self) -> str:
        return "DEAD"


DEAD = _Dead()
Decision = Retry | Stop | _Dead | None


ALL = frozenset(("completed", "failed", "filtered", "duplicate"))


class Rule(Protocol):
    sees: frozenset[str]
    """The outcome statuses the rule is shown (the runner skips it for the others)."""

    def decide(self, outcome: Outcome) -> Decision: ...


class RetryThenDead:
    """An input that did not complete is tried again after a backoff, up to `max_attempts`."""

    sees = frozenset(("failed", "filtered", "duplicate"))

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts

    def decide(self, outcome: Outcome) -> Decision:
        if outcome.attempt >= self.max_attempts:
            return DEAD
        hint = getattr(outcome.error, "retry_after", None)
        if isinstance(hint, (int, float)) and not isinstance(hint, bool) and hint >= 0:
            return Retry(float(hint))
        delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2 ** (outcome.attempt - 1))
        return Retry(delay * (0.5 + random.random()))


class FatalError:
    """An error marked `fatal = True` stops the job at once: every retry would fail alike."""

    sees = frozenset(("failed",))

    def decide(self, outcome: Outcome) -> Decision:
        error = outcome.error
        if getattr(error, "fatal", False) is True:
            return Stop("failed", f"fatal error: {type(error).__name__}: {error}")
        return None


class CircuitBreaker:
    """Stop after `threshold` *different* inputs failed in a row.

    Counting inputs rather than attempts keeps one stubborn input at the end of a job, which
    belongs to the dead-letter queue, from stopping it; filtered and duplicate are normal
    outcomes and reset the streak like a completion. The rule is shown failures only and
    reads the job's live `counts` to see whether anything else happened since the last one, so
    a completion costs it nothing.
    """

    sees = frozenset(("failed",))

    def __init__(self, threshold: int, counts: dict[str, int]) -> None:
        self.threshold = threshold
        self._counts = counts
        self._streak: set[int] = set()
        self._ok_at_last_failure = -1

    def _ok(self) -> int:
        counts = self._counts
        return counts["completed"] + counts["filtered"] + counts["duplicate"]

    def decide(self, outcome: Outcome) -> Decision:
        ok = self._ok()
        if ok != self._ok_at_last_failure:
            self._streak.clear()
            self._ok_at_last_failure = ok
        self._streak.add(outcome.index)
        if len(self._streak) < self.threshold:
            return None
        error = type(outcome.error).__name__
        return Stop(
            "stopped",
            f"circuit breaker: {len(self._streak)} inputs failed in a row "
            f"(last error {error}); job_run_stop_threshold={self.threshold}",
        )


class TargetCount:
    """Stop once `remaining` more inputs completed with records (an empty result counts not)."""

    sees = frozenset(("completed",))

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.reached = remaining <= 0

    def decide(self, outcome: Outcome) -> Decision:
        if outcome.num_records:
            self.remaining -= 1
            if self.remaining <= 0:
                self.reached = True
                return Stop("completed", "target_count reached")
        return None


class Budget:
    """Stop once the job's model calls have cost `limit` USD (`budget_usd`), all runs counted.

    Calls in flight when it fires are cancelled; one may have been answered (and billed)
    already, so a job can end a few calls past its budget, never more than its concurrency.
    """

    sees = ALL

    def __init__(self, limit: float, spent: Callable[[], float]) -> None:
        self.limit = limit
        self._spent = spent

    def decide(self, outcome: Outcome) -> Decision:
        spent = self._spent()
        if spent >= self.limit:
            return Stop("stopped", f"budget_usd={self.limit:g} reached: ${spent:.4f} spent")
        return None


def default_rules(
    *,
    counts: dict[str, int],
    dead_queue_threshold: int,
    job_run_stop_threshold: int,
    target_remaining: int | None,
    budget: Budget | None = None,
) -> list[Rule]:
    """The rules of a job, in the order they are asked; `counts` are the run's live counts."""
    rules: list[Rule] = [FatalError()]
    if budget is not None:
        rules.append(budget)
    if job_run_stop_threshold:
        rules.append(CircuitBreaker(job_run_stop_threshold, counts))
    if target_remaining is not None:
        rules.append(TargetCount(target_remaining))
    rules.append(RetryThenDead(dead_queue_threshold))
    return rules
