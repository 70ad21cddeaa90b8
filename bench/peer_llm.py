"""starfish-core 0.1.3's `StructuredLLM` (litellm) against the loopback OpenAI server.

Run by bench/bench_llm.py with the peer's own python (bench/peer/.venv, see bench/peer.py),
never ours: the peer installs a package also named `starfish`. This is the plain path a user
writes outside a job: `await llm.run(...)` under `asyncio.gather` with a semaphore of
`--concurrency`, the same shape as our `StructuredLLM.run()` row. Prints one line,
`BENCH {json}`, last (litellm logs freely).

The peer sends no `response_format`; it writes its schema instructions into the prompt, which
our server does not read. So the prompt also carries the server's `JSON schema:` marker with
the peer's own schema (as a list), and the server answers with JSON the peer parses into a
list of dicts, as ours gets: both clients do the same work per call.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's base URL (…/v1)")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--schema", required=True, help="the output schema, JSON (list form)")
    args = parser.parse_args()
    # Never a call beyond loopback: no price-map download, no telemetry (the runner sets these
    # too; repeated here so running this script alone is as safe).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["TELEMETRY_ENABLED"] = "false"
    os.environ["POSTHOG_HOST"] = "http://127.0.0.1:9"

    started = time.perf_counter()
    from starfish import StructuredLLM

    import_s = time.perf_counter() - started
    schema = json.loads(args.schema)
    probe = StructuredLLM(model_name="openai/m", prompt="x", output_schema=schema)
    # A template variable, not literal text: the peer rewrites single braces in prompts.
    marker = json.dumps({"type": "array", "items": probe.json_schema})
    llm = StructuredLLM(
        model_name="openai/m",
        prompt=args.prompt + "\nJSON schema:\n{{server_schema}}",
        output_schema=schema,
        model_kwargs={"api_base": args.url, "api_key": "sk-bench-not-a-real-key"},
    )
    ok = 0

    async def run_all() -> None:
        nonlocal ok
        gate = asyncio.Semaphore(args.concurrency)

        async def call(i: int) -> None:
            nonlocal ok
            async with gate:
                resp = await llm.run(topic=i, server_schema=marker)
            if resp.data:
                ok += 1

        await asyncio.gather(*(call(i) for i in range(args.calls)))

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    asyncio.run(run_all())
    run_s = time.perf_counter() - t0
    sys.stdout.flush()
    print(
        "BENCH "
        + json.dumps(
            {
                "calls": args.calls,
                "parsed": ok,
                "run_s": run_s,
                "cpu_s": time.process_time() - cpu0,
                "import_s": import_s,
                "litellm": importlib.metadata.version("litellm"),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
