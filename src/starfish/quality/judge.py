"""`Judge`: an `on_record_complete` hook that scores each record against a rubric with a model,
through the model layer (cached, counted apart as `judge_requests`, rate-limited, inside
`budget_usd`), and marks the records `filtered` when one scores under `min_score`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from starfish.errors import OptionsError
from starfish.llm.embeddings import CountedApart
from starfish.quality._text import FieldError
from starfish.quality.store import store_for

__all__ = ["Judge"]

PROMPT = (
    "You are grading one record of a synthetic dataset.\n"
    "Rubric: {{ rubric }}\n"
    "Score the record from {{ low }} (fails the rubric) to {{ high }} (fully meets it), and "
    "give a one-sentence reason.\n"
    "Record:\n{{ record }}"
)
SCHEMA = [{"name": "score", "type": "int"}, {"name": "reason", "type": "str"}]


class JudgeLLM(CountedApart):
    """The judge's model: a StructuredLLM whose requests are also counted as `judge_requests`."""

    count_as = "judge_requests"


class Judge:
    """Score records 1-5 (or `scale`) against `rubric`; under `min_score` is `filtered`.

    The model is `model=` (a model name, with `base_url=`/`api_key_env=`) or the server, model
    and key of `llm=StructuredLLM(...)`. `fields`: what the judge is shown (all fields when
    None).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        rubric: str,
        llm: Any = None,
        min_score: int | None = None,
        scale: tuple[int, int] = (1, 5),
        fields: Sequence[str] | None = None,
        base_url: str | None = None,
        api_key_env: str | None = None,
    ) -> None:
        from starfish.llm.errors import LLMConfigError
        from starfish.llm.structured import StructuredLLM

        if not isinstance(rubric, str) or not rubric.strip():
            raise OptionsError("Judge(rubric=...): say what a good record is, in words")
        if (
            not isinstance(scale, (tuple, list))
            or len(scale) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in scale)
            or scale[0] >= scale[1]
        ):
            raise OptionsError(f"Judge(scale={scale!r}): two integers (low, high), low < high")
        low, high = int(scale[0]), int(scale[1])
        if min_score is not None and (
            isinstance(min_score, bool)
            or not isinstance(min_score, (int, float))
            or not low <= min_score <= high
        ):
            raise OptionsError(
                f"Judge(min_score={min_score!r}): a score within scale=({low}, {high}); "
                "records scored under it are filtered"
            )
        if (model is None) == (llm is None):
            raise OptionsError("Judge: give model='provider/model' or llm=StructuredLLM(...)")
        if llm is not None and not isinstance(llm, StructuredLLM):
            raise OptionsError(f"Judge(llm=...) takes a StructuredLLM, not {type(llm).__name__}")
        if fields is not None and (
            isinstance(fields, str) or not all(isinstance(f, str) for f in fields)
        ):
            raise OptionsError(f"Judge(fields={fields!r}): a list of field names")
        settings: dict[str, Any]
        if llm is not None:
            settings = {
                k: v
                for k, v in llm._init.items()
                if k not in ("prompt", "output_schema", "structured_output")
            }
            if llm._target.api_key and not settings.get("api_key_env"):
                settings["api_key"] = llm._target.api_key
        else:
            settings = {"model_name": model, "base_url": base_url, "api_key_env": api_key_env}
        try:
            self.llm = JudgeLLM(prompt=PROMPT, output_schema=SCHEMA, **settings)
        except LLMConfigError as exc:
            raise OptionsError(f"Judge: {exc}") from None
        self.rubric = rubric
        self.min_score = min_score
        self.scale = (low, high)
        self.fields = tuple(fields) if fields is not None else None
        self.name = "judge"
        self._scores: dict[tuple[str, int, int], list[dict[str, Any]]] = {}

    def __repr__(self) -> str:
        more = f", min_score={self.min_score}" if self.min_score is not None else ""
        return f"Judge({self.llm.model_name!r}{more})"

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_scores"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._scores = {}

    def _shown(self, record: dict[str, Any]) -> str:
        if self.fields is None:
            shown = record
        else:
            missing = [f for f in self.fields if f not in record]
            if missing:
                raise FieldError(
                    f"{self!r}: the records have no field {missing[0]!r} (their fields: "
                    f"{', '.join(map(repr, record)) or 'none'})"
                )
            shown = {f: record[f] for f in self.fields}
        return json.dumps(shown, ensure_ascii=False, default=str, indent=1)

    async def score(self, record: dict[str, Any]) -> dict[str, Any]:
        low, high = self.scale
        answer = await self.llm.run(
            rubric=self.rubric, low=low, high=high, record=self._shown(record)
        )
        data = answer.data[0]
        score = min(max(int(data["score"]), low), high)  # a model past the scale: its end
        return {"score": score, "reason": str(data.get("reason", ""))}

    async def __call__(self, records: list[dict[str, Any]], state: Any) -> str | None:
        from starfish.data_factory.context import current_call

        scores = list(await asyncio.gather(*(self.score(r) for r in records)))
        call = current_call()
        if call is not None:
            self._scores[(call.job.job_id, call.index, call.attempt)] = scores
        if self.min_score is not None and any(s["score"] < self.min_score for s in scores):
            return "filtered"
        return None

    def settle(self, records: list[dict[str, Any]], outcome: str, state: Any) -> None:
        """The scores are stored beside the records once the runner keeps those."""
        from starfish.data_factory.context import current_call

        call = current_call()
        if call is None:
            return
        scores = self._scores.pop((call.job.job_id, call.index, call.attempt), None)
        if scores is not None and outcome in ("completed", "filtered", "duplicate"):
            job = call.job
            data = [{**s, "min_score": self.min_score} for s in scores]
            store_for(job.db_path).put(
                job.job_id, self.name, quality=(call.index, call.attempt, outcome, data)
            )
