"""Question–answer pairs from a list of topics: the example `make demo` runs.

It asks a model through `StructuredLLM` when one is reachable, and otherwise uses an embedded
generator (answer templates and a random 20–120 ms delay standing in for a model's latency),
saying which in one line on stderr. A model is reachable when:

- `QA_PAIRS_MODEL` names one (`provider/model`, e.g. `groq/llama-3.1-8b-instant`); the value
  `embedded` forces the embedded generator (`make demo` sets it, so it never calls a model);
- else `OPENAI_API_KEY` is set: `openai/gpt-4o-mini` (`OPENAI_BASE_URL` is honoured);
- else a local Ollama or vLLM server answers on loopback (`OLLAMA_BASE_URL`, `VLLM_BASE_URL`,
  or their defaults localhost:11434 and localhost:8000): its first listed model. Only loopback
  addresses are probed, with a short TCP connect, so this costs nothing when none runs.

Two hooks show what a generator's output goes through: answers under `MIN_ANSWER_WORDS` words
are marked `"filtered"`, and `starfish.quality.Dedupe` marks a question this job already
kept (or nearly: a few words changed) `"duplicate"`; its index is stored in the job database,
so a resumed job remembers it. Either way the data factory tries that topic again.

    starfish run examples/qa_pairs.py:qa_pairs --input examples/topics.jsonl
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import socket
import sys
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from starfish import data_factory
from starfish.quality import Dedupe

MIN_ANSWER_WORDS = 8
OPENAI_MODEL = "openai/gpt-4o-mini"
# Local servers probed when no model is named and no key is set: (provider, variable, default).
LOCAL_SERVERS = (
    ("ollama", "OLLAMA_BASE_URL", "http://localhost:11434/v1"),
    ("vllm", "VLLM_BASE_URL", "http://localhost:8000/v1"),
)
PROMPT = "Write one {{style}} question about {{topic}} and its answer."
OUTPUT_SCHEMA = [
    {"name": "question", "type": "str"},
    {"name": "answer", "type": "str", "description": f"at least {MIN_ANSWER_WORDS} words"},
]

QUESTIONS = (
    "What is {topic}?",
    "Why does {topic} matter?",
    "How would you explain {topic} to a newcomer?",
    "What is a common misconception about {topic}?",
    "What would a beginner get wrong about {topic}?",
    "Which everyday example best illustrates {topic}?",
    "How has our understanding of {topic} changed over time?",
    "What question about {topic} is still open?",
)

ANSWERS = (
    "{Topic} is best understood by starting from what it is for: it describes how parts of a "
    "system work together, and most of the details follow from that purpose.",
    "{Topic} matters because it shows up in everyday decisions; knowing its basic rules makes "
    "it easier to predict what happens next and to spot claims that do not add up.",
    "A good way in is an example: take one concrete case of {topic}, follow it step by step, "
    "then ask which steps would change if the conditions were different.",
    "People often assume {topic} is simpler than it is; in practice it depends on several "
    "factors at once, and the interesting questions are about how they interact.",
    "Experts explain {topic} in layers: a one-sentence summary first, then the mechanism "
    "behind it, then the exceptions, which is where most of the learning actually happens.",
    "The history of {topic} is a story of small corrections; each generation kept what "
    "worked, measured more carefully, and replaced the parts that failed to predict results.",
    "It depends.",
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _local_model(base_url: str) -> str | None:
    """The first model a loopback server lists, or None if nothing answers there."""
    parts = urlsplit(base_url)
    if not parts.hostname or not _is_loopback(parts.hostname):
        return None  # never probe another machine: name it in QA_PAIRS_MODEL instead
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=0.2).close()
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP_PROXY
        with direct.open(base_url.rstrip("/") + "/models", timeout=2) as response:
            models = json.load(response).get("data") or []
        return str(models[0]["id"]) if models else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def choose_model() -> tuple[str | None, str]:
    """(model name or None for the embedded generator, why): decided once, at import."""
    named = os.environ.get("QA_PAIRS_MODEL", "").strip()
    if named == "embedded":
        return None, "QA_PAIRS_MODEL=embedded"
    if named:
        return named, "QA_PAIRS_MODEL"
    if os.environ.get("OPENAI_API_KEY"):
        return OPENAI_MODEL, "OPENAI_API_KEY is set"
    for provider, variable, default in LOCAL_SERVERS:
        base_url = os.environ.get(variable) or default
        model = _local_model(base_url)
        if model:
            return f"{provider}/{model}", f"a local {provider} server answers at {base_url}"
    return None, "no QA_PAIRS_MODEL, no OPENAI_API_KEY, no local Ollama or vLLM"


MODEL, WHY = choose_model()
if MODEL is None:
    print(f"qa_pairs: using the embedded generator ({WHY})", file=sys.stderr)
    LLM = None
else:
    from starfish import StructuredLLM

    print(f"qa_pairs: using the model {MODEL} ({WHY})", file=sys.stderr)
    LLM = StructuredLLM(
        MODEL, prompt=PROMPT, output_schema=OUTPUT_SCHEMA, model_kwargs={"temperature": 0.8}
    )


def _records(output: Any) -> list[dict[str, Any]]:
    return [output] if isinstance(output, dict) else list(output or [])


def filter_short_answers(output: Any, state: Any) -> str | None:
    """Mark a pair whose answer is too short to be useful."""
    if any(len(r.get("answer", "").split()) < MIN_ANSWER_WORDS for r in _records(output)):
        return "filtered"
    return None


@data_factory(
    max_concurrency=10,
    task_runner_timeout=60,
    # Dedupe first: a repeated question is never checked further. Case, spacing and
    # punctuation aside; near=0.8 also catches a question with a few words changed.
    on_record_complete=[Dedupe("question", near=0.8), filter_short_answers],
)
async def qa_pairs(topic: str, style: str = "concise") -> list[dict[str, Any]]:
    """One question–answer pair about `topic`: from the model, or embedded."""
    if LLM is None:
        return [{"topic": topic, **await _embedded(topic), "source": "embedded"}]
    response = await LLM.run(topic=topic, style=style)
    return [{"topic": topic, **pair, "source": "llm"} for pair in response.data]


async def _embedded(topic: str) -> dict[str, str]:
    await asyncio.sleep(random.uniform(0.02, 0.12))
    question = random.choice(QUESTIONS).format(topic=topic)
    answer = random.choice(ANSWERS).format(topic=topic, Topic=topic[:1].upper() + topic[1:])
    return {"question": question, "answer": answer}
