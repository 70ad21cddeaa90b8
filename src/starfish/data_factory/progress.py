"""Progress of a running job: one line on a terminal, a log line every few seconds otherwise.

On a terminal the line fits the terminal's width and keeps, in this order, what a user needs
to decide whether to wait: done/total, the rate, the ETA, the failures, and the model's
requests and cost when the job made any. A job whose hooks drop records (starfish.quality's
`Dedupe` and `Judge`) also keeps, after the failures, how many inputs were kept and how many
attempts were duplicates. To fit, the job name is truncated first, then the bar shrinks, then
`elapsed` goes, then the bar, then the name. At 80 columns:

    qa_pairs ██████░░░░ 1200/2000 812/s ETA 0:01 3 failed 1203 requests $0.0024
    qa 1200/2000 812/s ETA 0:01 3 failed 1188 kept, 300 duplicate 1510 requests

A status message from the model layer (say `waiting for http://127.0.0.1:18082/v1 (no answer
for 10 s)`) goes on a second line under it while it is set: the job's `notice`
(`JobContext.notice`, see `set_notice`). Off a terminal it ends the log line.

"Done" has one source, the job's counts: inputs completed in any run of the job plus those
that went dead in this run. After a resume the bar starts where the earlier runs left off
and its count is the `completed` count the same display shows (and `jobs show` stores); the
rate and the ETA are of this run.

The log line goes to the `starfish` logger when logging is set up, else straight to stderr,
so that a job in a pipe or a CI log still shows it is alive.

The reporter reads the runner's counters on a timer (`loop.call_later`), so finishing an
input costs nothing extra however fast inputs finish. rich is imported only for a terminal.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starfish.data_factory.context import JobContext, current_job

__all__ = ["LineParts", "ProgressReporter", "format_line", "set_notice"]

logger = logging.getLogger("starfish")

LOG_INTERVAL = 5.0
BAR_INTERVAL = 0.1
RATE_AFTER = 0.5
"""Seconds of a run before a rate (and so an ETA) is shown: earlier it is mostly noise."""

_COUNT_KEYS = ("completed", "failed", "filtered", "duplicate", "dead")


def set_notice(text: str | None) -> None:
    """Show `text` with the progress of the job running in this context (None clears it).

    For the model layer: a call that waits on something the user cannot see says so, e.g.
    `waiting for http://127.0.0.1:18082/v1 (no answer for 10 s)` or `paused by the server
    until 10:42 (retry-after 3600 s)`. One line, without the key; the latest one wins. Outside
    a job it does nothing.
    """
    job = current_job()
    if job is not None:
        job.notice = text


@dataclass(frozen=True)
class LineParts:
    """What the terminal line shows, before it is fitted to a width."""

    name: str
    done: int
    total: int
    elapsed: float
    rate: float | None  # inputs done per second in this run; None: too early to say
    failed: int
    dead: int = 0
    requests: int = 0  # the model's HTTP requests (0: no model was called, nothing shown)
    cost_usd: float | None = None
    filtered: int = 0  # shown when there is room, dropped first
    duplicate: int = 0
    kept: int | None = None  # inputs completed (kept by the hooks); None: the same as done

    @property
    def eta(self) -> float | None:
        if self.done >= self.total:
            return 0.0
        if not self.rate:
            return None
        return (self.total - self.done) / self.rate


def format_line(parts: LineParts, width: int) -> str:
    """The progress line for a terminal `width` columns wide, at most `width - 1` long (the
    last column would wrap on some terminals)."""
    room = max(width - 1, 1)
    stats = _stats(parts, short=False)
    extras = [f"{parts.filtered} filtered"] if parts.filtered else []
    name = parts.name
    # (bar width, with elapsed, with extras, shortest name): the first that fits wins
    for bar_width, with_elapsed, with_extras, name_min in (
        (24, True, True, len(name)),
        (24, True, False, len(name)),
        (24, True, False, 10),
        (16, True, False, 10),
        (10, True, False, 10),
        (10, False, False, 10),
        (0, False, False, 10),
        (0, False, False, 0),
    ):
        tail = [
            _bar(parts, bar_width) if bar_width else "",
            *stats[:3],
            f"elapsed {_clock(parts.elapsed)}" if with_elapsed else "",
            *stats[3:],
            *(extras if with_extras else ()),
        ]
        rest = " ".join(p for p in tail if p)
        free = room - len(rest) - 1  # one space after the name
        if free >= min(name_min, len(name)):
            shown = _truncate(name, free) if free >= min(6, len(name)) else ""
            return f"{shown} {rest}" if shown else rest
    rest = " ".join(_stats(parts, short=True))
    return rest if len(rest) <= room else rest[: room - 1] + "…"


def _stats(parts: LineParts, short: bool) -> list[str]:
    """done/total, rate, ETA, failures, model requests and cost: what is never dropped."""
    eta = parts.eta
    stats = [
        f"{parts.done}/{parts.total}",
        f"{_rate(parts.rate)}/s",
        f"ETA {_clock(eta) if eta is not None else '?'}",
        f"{parts.failed} failed" + (f", {parts.dead} dead" if parts.dead else ""),
    ]
    if parts.duplicate or parts.filtered:  # records dropped: the kept count differs from done
        kept = parts.done if parts.kept is None else parts.kept
        stats.append(
            f"{kept} kept {parts.duplicate} dup"
            if short
            else f"{kept} kept, {parts.duplicate} duplicate"
        )
    if parts.requests:
        calls = f"{parts.requests} {'req' if short else 'requests'}"
        stats.append(calls if parts.cost_usd is None else f"{calls} {_money(parts.cost_usd)}")
    return stats


def _bar(parts: LineParts, width: int) -> str:
    filled = width if parts.total <= 0 else min(width, width * parts.done // parts.total)
    return "█" * filled + "░" * (width - filled)


def _truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: width - 1] + "…" if width >= 2 else ""


def _rate(rate: float | None) -> str:
    if rate is None:
        return "–"
    if rate >= 10_000:
        return f"{rate / 1000:.0f}k"
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"


def _clock(seconds: float) -> str:
    """m:ss under an hour, h:mm:ss beyond."""
    total = int(seconds + 0.5)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _money(cost: float) -> str:
    return f"${cost:.4f}" if cost >= 0.01 or cost == 0 else f"${cost:.6f}"


def _summary(counts: Mapping[str, int], job: JobContext | None = None) -> str:
    return (
        f"completed {counts['completed']} · failed {counts['failed']} · "
        f"filtered {counts['filtered']} · duplicate {counts['duplicate']} · dead {counts['dead']}"
        + _llm_summary(job if job is not None else current_job())
    )


def _llm_summary(job: JobContext | None) -> str:
    """The model layer's counts of this run, when the job's function called a model."""
    llm = job.llm if job is not None else None
    if not llm:
        return ""
    tokens = llm.get("prompt_tokens", 0) + llm.get("completion_tokens", 0)
    line = (
        f" · llm {llm.get('requests', 0)} requests, {llm.get('cache_hits', 0)} cached, "
        f"{tokens} tokens"
    )
    if llm.get("rate_limited"):
        line += f", {llm['rate_limited']} rate-limited"
    if "cost_usd" in llm:
        line += f", {_money(llm['cost_usd'])}"
    return line


class ProgressReporter:
    """Shows a job's counts while it runs; `stop` leaves a final state on screen.

    `before` holds the job's counts from earlier runs (a resume), so what is shown is the
    job's, as stored at the end; `already_done` alone is the older form (completed only).
    """

    def __init__(
        self,
        runner: Any,
        name: str,
        total: int,
        already_done: int = 0,
        before: Mapping[str, int] | None = None,
    ) -> None:
        self._runner = runner
        self._name = name
        self._total = total
        self._before = {k: 0 for k in _COUNT_KEYS}
        self._before.update(before if before is not None else {"completed": already_done})
        self._start = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._live: Any = None
        self._job: JobContext | None = None
        self._tty = sys.stderr.isatty()

    def start(self) -> None:
        self._job = current_job()
        self._start = time.monotonic()
        if self._tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                console=Console(stderr=True),
                auto_refresh=False,
                transient=False,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.start()
        self._schedule()

    def counts(self) -> dict[str, int]:
        """The job's counts now: earlier runs plus this one, as `jobs show` will store them."""
        run = self._runner.counts
        counts = {k: self._before[k] + run[k] for k in _COUNT_KEYS}
        counts["dead"] -= getattr(self._runner, "revived", 0)
        return counts

    def parts(self, final: bool = False) -> LineParts:
        """The line's values now; `final`: the run is over, so its rate is known however short."""
        run = self._runner.counts
        counts = self.counts()
        elapsed = time.monotonic() - self._start
        run_done = run["completed"] + run["dead"]
        rate = run_done / elapsed if elapsed >= RATE_AFTER or (final and elapsed > 0) else None
        llm = self._job.llm if self._job is not None else {}
        return LineParts(
            name=self._name,
            done=counts["completed"] + run["dead"],
            total=self._total,
            elapsed=elapsed,
            rate=rate,
            failed=counts["failed"],
            dead=counts["dead"],
            requests=int(llm.get("requests", 0)),
            cost_usd=llm.get("cost_usd"),
            filtered=counts["filtered"],
            duplicate=counts["duplicate"],
            kept=counts["completed"],
        )

    def notice(self) -> str | None:
        return self._job.notice if self._job is not None else None

    def _schedule(self) -> None:
        delay = BAR_INTERVAL if self._live is not None else LOG_INTERVAL
        self._handle = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._render(self.notice())
        self._schedule()

    def _render(self, notice: str | None, final: bool = False) -> None:
        parts = self.parts(final)
        if self._live is not None:
            from rich.text import Text

            width = self._live.console.width
            text = format_line(parts, width)
            if notice:
                text += "\n  " + _truncate(" ".join(notice.split()), max(width - 3, 1))
            self._live.update(Text(text, no_wrap=True, overflow="crop"), refresh=True)
            return
        eta = parts.eta
        line = (
            f"{self._name}: {parts.done}/{self._total} inputs done · {_rate(parts.rate)}/s · "
            f"ETA {_clock(eta) if eta is not None else '?'} · elapsed {_clock(parts.elapsed)} "
            f"({_summary(self.counts(), self._job)})"
        )
        if notice:
            line += f" · {' '.join(notice.split())}"
        if logger.hasHandlers():
            logger.info(line)
        else:  # logging not set up: still show progress, as a plain line on stderr
            print(f"starfish: {line}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._live is not None:
            self._render(None, final=True)  # the final state; a notice was about waiting, now over
            self._live.stop()
            self._live = None
