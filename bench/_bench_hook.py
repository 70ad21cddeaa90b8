"""Call counting and the self-inflicted kill -9 for the resume workload.

It lives in its own importable module so that cloudpickle stores the user function's reference
to it by name: the resume process gets a fresh counter and no kill order.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

CALLS = [0]
JOB_ID: list[Callable[[], str]] = []


def tick() -> None:
    """Count one call; at BENCH_KILL_AT calls, record the job id and SIGKILL this process."""
    CALLS[0] += 1
    kill_at = os.environ.get("BENCH_KILL_AT")
    if kill_at and CALLS[0] == int(kill_at):
        path = os.environ.get("BENCH_JOB_ID_FILE")
        if path and JOB_ID:
            with open(path, "w") as f:
                f.write(JOB_ID[0]())
        os.kill(os.getpid(), signal.SIGKILL)
