"""The targets: which figure each row of the results table shows, and the limit it must meet.

`table(sizes)` is the whole list as data, one `Target` a row, in the order of the table. A row's
figures are medians of the harness's samples (`Median`), or a few combinations of them; its limit
is a number, or a multiple of another median. `build_rows` evaluates the table against a run.
To add a row, add a `Target` to `table`; no other code changes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from harness import Bench, Sizes


@dataclass(frozen=True)
class Median:
    """The median of one metric over one library's samples of one workload key."""

    key: str
    lib: str
    metric: str

    def of(self, bench: Bench) -> float | None:
        return med(bench, self.key, self.lib, self.metric)


@dataclass(frozen=True)
class FirstOf:
    """The first of these figures that exists (a fallback when the usual run failed)."""

    values: tuple[Value, ...]

    def of(self, bench: Bench) -> float | None:
        return next((v for v in (x.of(bench) for x in self.values) if v), None)


@dataclass(frozen=True)
class Best:
    """The highest of these figures (a rate measured two ways)."""

    values: tuple[Value, ...]

    def of(self, bench: Bench) -> float | None:
        return max((v for v in (x.of(bench) for x in self.values) if v), default=None)


@dataclass(frozen=True)
class Per:
    """`n` over a rate: the time `n` inputs would take at it."""

    n: float
    rate: Value

    def of(self, bench: Bench) -> float | None:
        rate = self.rate.of(bench)
        return self.n / rate if rate else None


Value = Median | FirstOf | Best | Per


@dataclass(frozen=True)
class Limit:
    """A bound on ours: `op` is "<", "≤" or "≥"; the bound is `value`, or `times` × `ref` +
    `plus` when it is relative to another figure (no check while that figure is missing).
    `text`, when given, becomes the Target cell once the check runs; `{ref}` shows the figure."""

    op: str
    value: float = 0.0
    ref: Value | None = None
    times: float = 1.0
    plus: float = 0.0
    text: str = ""

    def bound(self, bench: Bench) -> tuple[float, float | None] | None:
        """The bound and the figure it was taken from, or None when that figure is missing."""
        if self.ref is None:
            return self.value, None
        ref = self.ref.of(bench)
        return None if ref is None else (self.times * ref + self.plus, ref)


@dataclass(frozen=True)
class Target:
    """One row: the title, the figures (by default the medians of `metric` under `key`), and
    what ours must meet. `alone` is checked instead of `vs_peer` when the peer has no figure;
    `needs` hides the row unless that workload ran (its peer figure may come from elsewhere)."""

    key: str
    metric: str
    title: str
    unit: str  # "s", "/s", "MB", "µs" or "calls"
    higher_is_better: bool = False
    target: str = ""
    limit: Limit | None = None
    vs_peer: float | None = None
    alone: Limit | None = None
    ours: Value | None = None
    peer: Value | None = None
    needs: str | None = None


@dataclass
class Row:
    """One line of the results table."""

    workload: str
    ours: float | None
    peer: float | None
    unit: str
    higher_is_better: bool
    target: str = ""
    passed: bool | None = None
    miss: str = ""
    peer_note: str = "—"

    @property
    def ratio(self) -> float | None:
        """How many times better ours is: peer/ours for times, ours/peer for rates."""
        if not self.ours or not self.peer:
            return None
        return self.ours / self.peer if self.higher_is_better else self.peer / self.ours


def table(s: Sizes) -> list[Target]:
    """Every row of the results table, in order, for these sizes."""
    ideal = s.io_n / s.io_concurrency * s.io_sleep
    state = f"{s.state_n:,} inputs, dedupe hook keeping state"
    large = f"`starfish run` over a {s.large_rows:,}-row JSONL file"
    base = f"noop_local_c{s.scale_concurrency}"
    # The peer cannot finish 1M inputs in 10 minutes: its rate is the better of its capped
    # attempt (startup included) and its 10,000-input run, which flatters it.
    peer_scale_rate = Best(
        (Median("scale", "peer", "records_per_s"), Median(base, "peer", "records_per_s"))
    )
    return [
        Target(
            "import",
            "wall_s",
            "`import starfish` (whole process)",
            "s",
            target="< 0.1 s",
            limit=Limit("<", 0.1),
        ),
        Target("import", "import_s", "`import starfish` (in process)", "s"),
        Target(
            f"job{s.job_small}",
            "wall_s",
            f"{s.job_small}-input job, whole process",
            "s",
            target="< 0.25 s and ≥ 25× peer",
            limit=Limit("<", 0.25),
            vs_peer=25,
        ),
        *(
            Target(
                f"noop_local_c{c}",
                "records_per_s",
                f"{s.overhead:,} no-op, local, c={c}",
                "/s",
                higher_is_better=True,
                target="≥ 60× peer",
                vs_peer=60,
                alone=Limit("≥", 24_000, text="≥ 24,000/s (60× the peer's 400/s)"),
            )
            for c in s.concurrencies
        ),
        *(
            Target(
                f"noop_in_memory_c{c}",
                "records_per_s",
                f"{s.overhead:,} no-op, in memory, c={c}",
                "/s",
                higher_is_better=True,
                target="≥ 50,000/s",
                limit=Limit("≥", 50_000),
            )
            for c in s.concurrencies
        ),
        Target(
            "io",
            "run_s",
            f"{s.io_n:,} × {s.io_sleep * 1000:g} ms sleep, c={s.io_concurrency}",
            "s",
            target=f"≤ 1.25 × ideal {ideal:g} s = {1.25 * ideal:g} s",
            limit=Limit("≤", 1.25 * ideal),
        ),
        Target(
            "io_floor",
            "run_s",
            "the same sleeps in plain asyncio (no library)",
            "s",
            ours=Median("io_floor", "asyncio", "run_s"),
        ),
        Target(
            "resume",
            "resume_s",
            f"resume {s.resume_n:,} killed at 70 % (the rest)",
            "s",
            limit=Limit(
                "≤",
                ref=Median("resume", "ours", "fresh_s"),
                plus=0.2,
                text=f"≤ fresh {s.resume_fresh:,} " + "({ref:.3f} s) + 0.2 s",
            ),
        ),
        Target("resume", "resume_calls", f"inputs the resume ran (of {s.resume_n:,})", "calls"),
        Target(
            "resume_kill",
            "stored_at_call",
            f"completed inputs durable at call {int(s.resume_n * 0.7):,} (no settling)",
            "calls",
            higher_is_better=True,
        ),
        Target(
            "resume",
            "fresh_s",
            f"fresh {s.resume_fresh:,}-input job",
            "s",
            # Without a resume the peer ran the fresh job alone (bench/suite.py: resume).
            peer=FirstOf(
                (Median("resume_fresh_only", "peer", "run_s"), Median("resume", "peer", "fresh_s"))
            ),
        ),
        Target("state_in_memory", "run_s", f"{state}, in memory", "s"),
        Target(
            "state_local",
            "run_s",
            f"{state}, local",
            "s",
            limit=Limit(
                "≤",
                ref=Median("state_in_memory", "ours", "run_s"),
                times=3,
                text="≤ 3 × in memory ({ref:.3f} s)",
            ),
        ),
        Target(
            "scale",
            "records_per_s",
            f"{s.scale_n:,} no-op, local, c={s.scale_concurrency}",
            "/s",
            higher_is_better=True,
            target=f"≥ 80 % of the {s.overhead:,} figure",
            limit=Limit(
                "≥",
                ref=Median(base, "ours", "records_per_s"),
                times=0.8,
                text="≥ 80 % of {ref:,.0f}/s",
            ),
            peer=peer_scale_rate,
            needs="scale",
        ),
        Target(
            "scale",
            "maxrss_mb",
            f"{s.scale_n:,} no-op: peak RSS (peer: at its cap)",
            "MB",
            target="< 400 MB",
            limit=Limit("<", 400),
            needs="scale",
        ),
        Target(
            "scale",
            "run_s",
            f"{s.scale_n:,} no-op: run time (peer projected)",
            "s",
            peer=Per(s.scale_n, peer_scale_rate),
            needs="scale",
        ),
        Target("export", "maxrss_mb", f"export {s.scale_n:,} records to JSONL: peak RSS", "MB"),
        Target("export", "run_s", f"export {s.scale_n:,} records to JSONL: time", "s"),
        Target(
            "large_input",
            "maxrss_mb",
            f"{large}: peak RSS",
            "MB",
            target="< 300 MB",
            limit=Limit("<", 300),
        ),
        Target("large_input", "wall_s", f"{large}: time", "s"),
        Target(
            "jobs_list",
            "wall_s",
            f"`starfish jobs list` over {s.stored_jobs:,} stored jobs, whole process",
            "s",
            target="≤ 0.5 s",
            limit=Limit("≤", 0.5),
        ),
        Target(
            "telemetry",
            "capture_median_us",
            "`capture_event` median",
            "µs",
            target="< 20 µs",
            limit=Limit("<", 20),
        ),
        Target("telemetry", "capture_p99_us", "`capture_event` p99", "µs"),
        *(
            Target(
                "telemetry",
                f"exit_added_s ({name})",
                f"exit time added, endpoint down ({name})",
                "s",
            )
            for name in ("refuse", "hang")
        ),
    ]


def med(bench: Bench, key: str, lib: str, metric: str) -> float | None:
    values = [
        s[metric] for s in bench.samples.get(key, {}).get(lib, []) if s.get(metric) is not None
    ]
    return statistics.median(values) if values else None


def build_rows(bench: Bench) -> list[Row]:
    """The table's rows for this run: every target whose workload has a figure, checked."""
    rows = []
    for t in table(bench.sizes):
        if t.needs is not None and t.needs not in bench.samples:
            continue
        row = Row(
            t.title,
            (t.ours or Median(t.key, "ours", t.metric)).of(bench),
            (t.peer or Median(t.key, "peer", t.metric)).of(bench),
            t.unit,
            t.higher_is_better,
            t.target,
        )
        if "peer" in bench.errors.get(t.key, {}):
            row.peer_note = "fails (below)"
        if row.ours is None and row.peer is None:
            continue
        if t.limit:
            _check(row, t.limit, bench)
        if t.alone and row.peer is None:
            _check(row, t.alone, bench)
        if t.vs_peer:
            _ratio_at_least(row, t.vs_peer)
        rows.append(row)
    return rows


def _check(row: Row, limit: Limit, bench: Bench) -> None:
    bound = limit.bound(bench)
    if bound is None:
        return
    value, ref = bound
    if limit.text:
        row.target = limit.text.format(ref=ref)
    if limit.op == "≥":
        _at_least(row, value)
    else:
        _at_most(row, value, strict=limit.op == "<")


def _at_most(row: Row, limit: float, strict: bool = True) -> None:
    """Ours must stay under an absolute limit."""
    if row.ours is None:
        return
    row.passed = row.ours < limit if strict else row.ours <= limit
    if not row.passed:

        def show(v: float) -> str:
            return f"{v * 1000:.1f} ms" if row.unit == "s" and v < 10 else value_cell(v, row.unit)

        over = row.ours - limit
        row.miss = (
            f"{show(row.ours)} against {show(limit)}: "
            f"over by {show(over)} ({row.ours / limit:.3f}× the limit)"
        )


def _at_least(row: Row, floor: float) -> None:
    """Ours must reach an absolute rate."""
    if row.ours is None:
        return
    row.passed = row.ours >= floor
    if not row.passed:
        row.miss = (
            f"{value_cell(row.ours, row.unit)} against {value_cell(floor, row.unit)} "
            f"({row.ours / floor:.0%} of the target)"
        )


def _ratio_at_least(row: Row, want: float) -> None:
    """Ours must beat the peer by a factor; a failed check overrides an earlier pass."""
    if row.ratio is None or row.passed is False:
        return
    row.passed = row.ratio >= want
    if not row.passed:
        row.miss = f"{row.ratio:.1f}× the peer against {want:g}× ({want / row.ratio:.2f}× short)"


def value_cell(v: float | None, unit: str) -> str:
    """A figure as the table shows it."""
    if v is None:
        return "n/a"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "µs":
        return f"{v:.1f} µs"
    if unit == "calls":
        return f"{v:,.0f}"
    return f"{v:.3f} s" if v < 100 else f"{v:,.0f} s"
