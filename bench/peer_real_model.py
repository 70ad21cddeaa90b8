"""starfish-core 0.1.3's `StructuredLLM` (litellm) against a real model server.

Run by bench/bench_real_model.py with the peer's own python (bench/peer/.venv, see
bench/peer.py), never ours: the peer installs a package also named `starfish`. One call per
topic, `asyncio.Semaphore(--concurrency)` around each, the peer's defaults otherwise (it sends
no `response_format` and writes its schema into the prompt; `strict_parsing=False`, so an
answer it cannot parse gives `data=None` instead of raising). Prints one line, `BENCH {json}`,
last (litellm logs freely):

- `completed`: calls whose `data` is a non-empty list (the peer's own notion of a result);
- `valid`: calls with at least one record whose `question` and `answer` are non-blank strings;
- `dead`: calls that raised, with their exception types in `errors`;
- `run_s`: the wall time of the calls, timed here after the import (in `import_s`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.metadata
import json
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's base URL (…/v1)")
    parser.add_argument("--model", required=True, help="the model name the server answers to")
    parser.add_argument("--topics", required=True, help="a JSON list of topics, one call each")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--schema", required=True, help="the output schema, JSON (list form)")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    # Never a call beyond loopback: no price-map download, no telemetry (the runner sets these
    # too; repeated here so running this script alone is as safe).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["TELEMETRY_ENABLED"] = "false"
    os.environ["POSTHOG_HOST"] = "http://127.0.0.1:9"

    started = time.perf_counter()
    from starfish import StructuredLLM

    import_s = time.perf_counter() - started
    topics = json.loads(args.topics)
    fields = [f["name"] for f in json.loads(args.schema)]
    llm = StructuredLLM(
        model_name=f"openai/{args.model}",
        prompt=args.prompt,
        output_schema=json.loads(args.schema),
        model_kwargs={
            "api_base": args.url,
            "api_key": "sk-bench-not-a-real-key",
            "max_tokens": args.max_tokens,
        },
    )
    completed = valid = records = 0
    errors: collections.Counter[str] = collections.Counter()
    samples: dict[str, str] = {}
    invalid: list[str] = []  # what it returned that was not a valid record

    def is_valid(record: object) -> bool:
        return isinstance(record, dict) and all(
            isinstance(record.get(f), str) and record[f].strip() for f in fields
        )

    async def run_all() -> None:
        nonlocal completed, valid, records
        gate = asyncio.Semaphore(args.concurrency)

        async def call(topic: str) -> None:
            nonlocal completed, valid, records
            async with gate:
                try:
                    resp = await llm.run(topic=topic)
                except Exception as exc:  # a dead input: the peer raised
                    name = type(exc).__name__
                    errors[name] += 1
                    samples.setdefault(name, str(exc)[:300])
                    return
            data = resp.data
            if isinstance(data, list) and data:
                completed += 1
                records += len(data)
                if any(is_valid(r) for r in data):
                    valid += 1
                elif len(invalid) < 3:
                    invalid.append(json.dumps(data)[:200])

        await asyncio.gather(*(call(t) for t in topics))

    t0 = time.perf_counter()
    asyncio.run(run_all())
    run_s = time.perf_counter() - t0
    sys.stdout.flush()
    print(
        "BENCH "
        + json.dumps(
            {
                "inputs": len(topics),
                "completed": completed,
                "valid": valid,
                "records": records,
                "dead": sum(errors.values()),
                "no_data": len(topics) - completed - sum(errors.values()),
                "errors": dict(errors),
                "error_samples": samples,
                "invalid_samples": invalid,
                "run_s": run_s,
                "import_s": import_s,
                "version": importlib.metadata.version("starfish-core"),
                "litellm": importlib.metadata.version("litellm"),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
