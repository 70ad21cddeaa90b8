"""Rules: each sees every outcome and may decide what happens next.

A rule answers `None` (nothing to say), `Retry(delay)`, `DEAD` (to the dead-letter queue) or
`Stop(status, reason)` (end the job). The runner asks its rules in order and acts on the first
`Stop`; otherwise on the first `Retry` or `DEAD`. Retry/backoff with the dead-letter
threshold, the circuit breaker, `target_count` and fatal errors are rules; a new limit (a cost
budget, say) is one more class here and one more entry in `default_rules`.

An exception can carry hints that the rules honour: `retry_after` (seconds to wait before the
retry), `retried = True` (the layer that raised it has retried it already: the input goes to the
dead-letter queue at once rather than being retried in a second layer) and `fatal = True` (no
retry can fix it: stop the job; with `stop_status = "interrupted"` or `"stopped"` the job is
stored so, to be resumed later, rather than failed).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from starfish._backoff import backoff
from starfish._numbers import is_number
from starfish.data_factory.failures import cause

__all__ = [
    "ALL",
    "DEAD",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "STOP_STREAK",
    "STOP_THRESHOLD",
    "STOP_WINDOW",
    "STOP_WINDOW_MIN",
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

STOP_THRESHOLD = 0.9
"""Share of failed attempts among the last `STOP_WINDOW` outcomes that stops a job."""
STOP_WINDOW = 100
"""Outcomes the failure share is taken over; the rate test waits until a run has seen them."""
STOP_WINDOW_MIN = 50
"""Below this, chance alone trips the rate test at ordinary failure rates."""
STOP_STREAK = 20
"""Different inputs that must all fail, before any success, for a job to stop at its start."""


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
        if getattr(outcome.error, "retried", False) is True:
            return DEAD  # the layer that raised it retried it already: one layer retries
        hint = getattr(outcome.error, "retry_after", None)
        if is_number(hint) and hint >= 0:
            return Retry(float(hint))
        return Retry(backoff(outcome.attempt, RETRY_BASE_DELAY, RETRY_MAX_DELAY))


class FatalError:
    """An error marked `fatal = True` stops the job at once: every retry would fail alike."""

    sees = frozenset(("failed",))

    def decide(self, outcome: Outcome) -> Decision:
        error = outcome.error
        if getattr(error, "fatal", False) is True:
            # `stop_status = "interrupted"`: nothing is broken, the job can resume later.
            status = getattr(error, "stop_status", "failed")
            if status == "stopped":
                return Stop(status, str(error))
            if status == "interrupted":
                return Stop(status, f"{type(error).__name__}: {error}")
            return Stop("failed", f"fatal error: {type(error).__name__}: {error}")
        return None


class CircuitBreaker:
    """Stop a job that is broken, not one that is unlucky.

    At concurrency, a few failures in a row are common long before anything is wrong (three in
    a row stopped 13 of 20 runs at 10 % random failure), so the breaker judges a failure
    *rate* over enough outcomes to mean something, and keeps a streak only as the fast path
    for "everything fails":

    - rate: once this run has seen `window` outcomes, it stops when `threshold` or more of the
      last `window` were failures (completed, filtered and duplicate count as successes);
    - start: it stops when the first `streak` different inputs tried all failed and no
      attempt has succeeded yet; after the first success this test is off for the run.

    A retry that fails again is left out of the outcomes: its input already counted as a
    failure, so it says nothing new, and at the end of a job, where only the retries of a few
    bad inputs are left, such retries would otherwise fill the window and stop a job that
    was about to finish. A retry that succeeds counts, like any success.

    The rule is shown failures only: each failure notes its position among the outcomes,
    from the run's live `counts`, so a completion costs it nothing and the share over the
    last `window` outcomes is still exact (the share can only rise at a failure).
    """

    sees = frozenset(("failed",))

    def __init__(self, threshold: float, window: int, streak: int, counts: dict[str, int]) -> None:
        self.threshold = threshold
        self.window = window
        # failures that make the share: an integer, so 0.9 × 100 is 90, not 90.00000000000001
        self._need = max(1, math.ceil(round(threshold * window, 6)))
        self.streak = streak
        self._counts = counts
        self._failures = 0
        self._recent: deque[tuple[int, str]] = deque()  # (position, error type) in the window
        self._samples: dict[str, str] = {}  # the latest message of each error type
        self._first_failed: set[int] | None = set()  # None once something succeeded
        self.tripped: str | None = None
        """The stop reason once the breaker has stopped the job."""

    def _ok(self) -> int:
        counts = self._counts
        return counts["completed"] + counts["filtered"] + counts["duplicate"]

    def decide(self, outcome: Outcome) -> Decision:
        if outcome.attempt > 1:
            return None
        error = outcome.error
        error_type = type(error).__name__
        self._samples[error_type] = str(error)
        self._failures += 1
        ok = self._ok()
        position = ok + self._failures
        recent = self._recent
        recent.append((position, error_type))
        while recent[0][0] <= position - self.window:
            recent.popleft()
        if self._first_failed is not None:
            if ok:
                self._first_failed = None
            else:
                self._first_failed.add(outcome.index)
                if len(self._first_failed) >= self.streak:
                    return self._trip(
                        f"the first {len(self._first_failed)} inputs tried all failed "
                        f"(job_run_stop_threshold={self.streak})"
                    )
        if position >= self.window and len(recent) >= self._need:
            return self._trip(
                f"{len(recent)} of the last {self.window} attempts failed "
                f"(stop_threshold={self.threshold:g}, stop_window={self.window})"
            )
        return None

    def _trip(self, what: str) -> Stop:
        kinds = Counter(error_type for _, error_type in self._recent)
        error_type, n = kinds.most_common(1)[0]
        self.tripped = (
            f"circuit breaker: {what}; most common error ({n} of {len(self._recent)}): "
            f"{cause(error_type, self._samples[error_type])}"
        )
        return Stop("stopped", self.tripped)


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
    stop_threshold: float = STOP_THRESHOLD,
    stop_window: int = STOP_WINDOW,
) -> list[Rule]:
    """The rules of a job, in the order they are asked; `counts` are the run's live counts.

    `job_run_stop_threshold=0` or `stop_threshold=0` turns the circuit breaker off.
    """
    rules: list[Rule] = [FatalError()]
    if budget is not None:
        rules.append(budget)
    if job_run_stop_threshold and stop_threshold:
        rules.append(CircuitBreaker(stop_threshold, stop_window, job_run_stop_threshold, counts))
    if target_remaining is not None:
        rules.append(TargetCount(target_remaining))
    rules.append(RetryThenDead(dead_queue_threshold))
    return rules
