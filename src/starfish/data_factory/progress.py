"""Progress of a running job: a rich bar on a terminal, a log line every few seconds otherwise.

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
from typing import Any

logger = logging.getLogger("starfish")

LOG_INTERVAL = 5.0
BAR_INTERVAL = 0.1


def _summary(counts: dict[str, int]) -> str:
    return (
        f"completed {counts['completed']} · failed {counts['failed']} · "
        f"filtered {counts['filtered']} · duplicate {counts['duplicate']} · dead {counts['dead']}"
        + _llm_summary()
    )


def _llm_summary() -> str:
    """The model layer's counts of this run, when the job's function called a model."""
    from starfish.data_factory.context import current_job

    job = current_job()
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
        cost = llm["cost_usd"]
        line += f", ${cost:.4f}" if cost >= 0.01 or cost == 0 else f", ${cost:.6f}"
    return line


class ProgressReporter:
    """Shows a job's counts while it runs; `stop` leaves a final state on screen."""

    def __init__(self, runner: Any, name: str, total: int, already_done: int = 0) -> None:
        self._runner = runner
        self._name = name
        self._total = total
        self._already = already_done
        self._start = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._bar: Any = None
        self._task_id: Any = None
        self._tty = sys.stderr.isatty()

    def start(self) -> None:
        if self._tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[summary]}"),
                auto_refresh=False,
                transient=False,
            )
            self._bar.start()
            self._task_id = self._bar.add_task(
                self._name, total=self._total, completed=self._already, summary=""
            )
        self._schedule()

    def _schedule(self) -> None:
        delay = BAR_INTERVAL if self._bar is not None else LOG_INTERVAL
        self._handle = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._render()
        self._schedule()

    def _render(self) -> None:
        counts = self._runner.counts
        done = self._already + self._runner.done
        if self._bar is not None:
            self._bar.update(self._task_id, completed=done, summary=_summary(counts))
            self._bar.refresh()
        else:
            elapsed = time.monotonic() - self._start
            line = f"{self._name}: {done}/{self._total} inputs done after {elapsed:.0f}s"
            line += f" ({_summary(counts)})"
            if logger.hasHandlers():
                logger.info(line)
            else:  # logging not set up: still show progress, as a plain line on stderr
                print(f"starfish: {line}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._bar is not None:
            self._render()
            self._bar.stop()
            self._bar = None
