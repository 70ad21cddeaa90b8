"""Question–answer pairs from a list of topics: the example `make demo` runs.

With no configuration it uses an embedded generator: answer templates and a random delay of
20–120 ms per call standing in for a model's latency, so it runs anywhere with no key and no
network. When `OPENAI_BASE_URL` and `OPENAI_API_KEY` are set, the same function asks that
OpenAI-compatible `/chat/completions` endpoint instead (model: `OPENAI_MODEL`, default
`gpt-4o-mini`).

Two hooks show what a generator's output goes through: answers under `MIN_ANSWER_WORDS` words
are marked `"filtered"`, and a question already produced (tracked in the job's shared state)
is marked `"duplicate"`. Either way the data factory tries that topic again.

    starfish run examples/qa_pairs.py:qa_pairs --input examples/topics.jsonl
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any

import httpx

from starfish import data_factory

MIN_ANSWER_WORDS = 8
DEFAULT_MODEL = "gpt-4o-mini"

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


def _records(output: Any) -> list[dict[str, Any]]:
    return [output] if isinstance(output, dict) else list(output or [])


def filter_short_answers(output: Any, state: Any) -> str | None:
    """Mark a pair whose answer is too short to be useful."""
    if any(len(r.get("answer", "").split()) < MIN_ANSWER_WORDS for r in _records(output)):
        return "filtered"
    return None


def drop_duplicate_questions(output: Any, state: Any) -> str | None:
    """Mark a question this job has already produced; the job's state remembers them.

    One state key per question: storage writes only the keys that changed, so remembering
    the 20,000th question costs what the first did (one dict under one key would be
    rewritten whole at every change).
    """
    keys = ["seen:" + " ".join(r.get("question", "").lower().split()) for r in _records(output)]
    if any(key in state for key in keys):
        return "duplicate"
    for key in keys:
        state.set(key, True)
    return None


@data_factory(
    max_concurrency=10,
    task_runner_timeout=60,
    on_record_complete=[filter_short_answers, drop_duplicate_questions],
)
async def qa_pairs(topic: str, style: str = "concise") -> list[dict[str, Any]]:
    """One question–answer pair about `topic`: embedded, or from the configured endpoint."""
    base_url = os.environ.get("OPENAI_BASE_URL")
    api_key = os.environ.get("OPENAI_API_KEY")
    if base_url and api_key:
        pair = await _ask_llm(topic, style, base_url, api_key)
        source = "llm"
    else:
        pair = await _embedded(topic)
        source = "embedded"
    return [{"topic": topic, **pair, "source": source}]


async def _embedded(topic: str) -> dict[str, str]:
    await asyncio.sleep(random.uniform(0.02, 0.12))
    question = random.choice(QUESTIONS).format(topic=topic)
    answer = random.choice(ANSWERS).format(topic=topic, Topic=topic[:1].upper() + topic[1:])
    return {"question": question, "answer": answer}


async def _ask_llm(topic: str, style: str, base_url: str, api_key: str) -> dict[str, str]:
    prompt = (
        f"Write one {style} question about {topic} and its answer. Reply with JSON only: "
        '{"question": "...", "answer": "..."}'
    )
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            base_url.rstrip("/") + "/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            json={
                "model": os.environ.get("OPENAI_MODEL", DEFAULT_MODEL),
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.8,
            },
        )
        response.raise_for_status()
    content = response.json()["choices"][0]["message"]["content"]
    return _parse_pair(content, topic)


def _parse_pair(content: str, topic: str) -> dict[str, str]:
    """The model's JSON reply, or its whole text as the answer when it ignored the format."""
    text = content.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    try:
        data = json.loads(text)
        return {"question": str(data["question"]), "answer": str(data["answer"])}
    except (ValueError, KeyError, TypeError):
        return {"question": f"What is {topic}?", "answer": content.strip()}
