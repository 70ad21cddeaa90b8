"""What a real job reports: `target_reached` as the original library defines it."""

from __future__ import annotations

import textwrap

import pytest

from tests.posthog_receiver import PostHogReceiver
from tests.telemetry.conftest import run_py

JOB = textwrap.dedent(
    """
    import sys
    from starfish import data_factory

    @data_factory(show_progress=False, max_concurrency=4, dead_queue_threshold=1,
                  target_count=int(sys.argv[1]))
    async def gen(i):
        if i == int(sys.argv[2]):
            raise ValueError("this input never completes")
        return [{"i": i}]

    gen.run(i=list(range(20)))
    """
)


@pytest.mark.parametrize(
    ("target_count", "dead_input", "reached"),
    [
        (0, -1, True),  # no target: every input is the target, and all 20 completed
        (0, 7, False),  # no target, one input dead: not every input completed
        (5, 7, True),  # a target of 5 completed records, reached despite a dead input
        (25, -1, False),  # a target above what 20 inputs can give
    ],
)
def test_target_reached_follows_the_original_library(
    receiver: PostHogReceiver, target_count: int, dead_input: int, reached: bool
) -> None:
    code = JOB.replace("int(sys.argv[1])", str(target_count)).replace(
        "int(sys.argv[2])", str(dead_input)
    )
    proc = run_py(code, env={"CI": "1"})
    assert proc.returncode == 0, proc.stderr
    (event,) = receiver.wait_for_events(1)
    props = event["properties"]
    assert props["num_inputs"] == 20
    assert props["config"]["target_count"] == target_count
    assert props["target_reached"] is reached, props
