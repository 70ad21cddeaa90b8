"""How a job shows in a notebook (Jupyter calls `_repr_html_`): status, progress, counts, cost.

Every value is escaped: a job name or stop reason is text, never markup.
"""

from __future__ import annotations

from html import escape
from typing import Any

_COLORS = {"running": "#1f4fa8", "completed": "#2c8a4a", "interrupted": "#b7791f"}


def job_html(info: Any) -> str:
    """A small HTML summary of a `jobs.JobInfo`."""
    c = info.counts
    done = c.get("completed", 0) + c.get("dead", 0)
    share = min(1.0, done / info.num_inputs) if info.num_inputs else 0.0
    color = _COLORS.get(info.status, "#c53b3b")
    cost = (info.llm or {}).get("cost_usd")
    cells = [f"{k} <b>{c.get(k, 0):,}</b>" for k in ("completed", "failed", "filtered", "dead")]
    if cost is not None:
        batch = " (batch)" if (info.llm or {}).get("batch_requests") else ""
        cells.append(f"cost <b>${cost:,.4f}</b>{batch}")
    reason = f" · {escape(info.stop_reason)}" if info.stop_reason else ""
    return (
        '<div class="starfish-job" style="font-family:system-ui,sans-serif;font-size:13px">'
        f"<b>{escape(info.name or 'job')}</b> <code>{escape(info.job_id[:8])}</code> "
        f'<span style="color:{color};font-weight:600">{escape(info.status)}</span>{reason}'
        '<div style="margin:4px 0;width:240px;height:8px;background:#eef0f3;border-radius:4px">'
        f'<div style="width:{share * 100:.1f}%;height:8px;background:#2f6fde;border-radius:4px">'
        f"</div></div>{done:,} of {info.num_inputs:,} inputs done · " + " · ".join(cells) + "</div>"
    )


def factory_html(factory: Any) -> str:
    """A `@data_factory` function: its last job, or that it has not run in this process."""
    from starfish import jobs

    name = escape(getattr(factory.func, "__qualname__", "data factory"))
    if factory.job_id is None:
        return f"<div><b>{name}</b>: a data factory that has not run in this process</div>"
    try:
        return job_html(jobs.load_job(factory.job_id))
    except jobs.JobNotFoundError:
        return f"<div><b>{name}</b>: its job {escape(factory.job_id)} is no longer stored</div>"
