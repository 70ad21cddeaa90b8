"""Cancel a job's live batches at their providers: `starfish jobs delete` of a job whose batches
still run, so that nobody pays for answers no job will read.

A stored batch row names its provider, model, base URL and, when the key came from
`api_key_env=`, that variable's name (never the key). The key is read from the environment the
way `StructuredLLM` reads it; a row whose key cannot be found is reported, not skipped.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starfish.llm.errors import LLMConfigError, LLMError

__all__ = ["LIVE", "Cancelled", "cancel_live", "live"]

LIVE = ("running", "submitting")
"""Row states of a batch that may still run (and be paid for) at the provider."""


@dataclass
class Cancelled:
    """What `cancel_live` did: batches cancelled per endpoint, and why the others were not."""

    done: dict[str, int] = field(default_factory=dict)  # where ("openai", a base URL) -> count
    problems: list[str] = field(default_factory=list)  # one line per batch left running

    def notes(self) -> list[str]:
        return [
            f"cancelled {n} live batch{'es' if n > 1 else ''} at {w}" for w, n in self.done.items()
        ]


def live(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("state") in LIVE]


def cancel_live(rows: Iterable[dict[str, Any]]) -> Cancelled:
    """Ask the provider to cancel each live batch among `rows` (a job's stored batches)."""
    result = Cancelled()
    todo = live(rows)
    if todo:
        asyncio.run(_cancel_all(todo, result))
    return result


async def _cancel_all(rows: list[dict[str, Any]], result: Cancelled) -> None:
    from starfish.llm.batch.common import BatchRef
    from starfish.llm.batch.lane import SUBMISSION_KEY

    for row in rows:
        where = _where(row)
        ids = ((row.get("ref") or {}).get("batch_id")) or f"submission {row['submission']}"
        try:
            client = _client(row)
            if row.get("ref"):
                refs = [BatchRef.from_dict(row["ref"])]
            elif client.provider == "openai":  # killed before its id was stored: its metadata
                refs = await client.find(
                    SUBMISSION_KEY, row["submission"], created_after=row["started_at"] - 60
                )
            else:
                result.problems.append(
                    f"could not cancel a batch at {where} whose creation was never confirmed "
                    "(Anthropic batches carry no metadata to find it by): check the console"
                )
                continue
            for ref in refs:
                await client.cancel(ref)
            if refs:
                result.done[where] = result.done.get(where, 0) + len(refs)
        except LLMError as exc:
            result.problems.append(f"could not cancel batch {ids} at {where}: {exc}")


def _where(row: dict[str, Any]) -> str:
    """The provider's name for a provider of the table, else the server's base URL."""
    provider = str(row.get("provider") or "openai")
    return provider if provider != "other" else str(row.get("base_url") or "its server")


def _client(row: dict[str, Any]) -> Any:
    """The batch client a `StructuredLLM` with the row's settings would use, with few retries
    (a delete should not wait minutes for a server that is gone)."""
    from starfish.llm.batch import AnthropicBatchClient, OpenAIBatchClient
    from starfish.llm.providers import PROVIDERS, resolve

    base_url, variable = row.get("base_url"), row.get("api_key_env")
    if variable:
        key = os.environ.get(variable) or None
        if key is None:
            raise LLMConfigError(f"no key: set {variable} (the job's api_key_env) and delete again")
        base = base_url
    else:
        model = str(row.get("model"))
        try:
            target = resolve(model, base_url, None)  # the key in the provider's variable
        except LLMConfigError:
            provider = PROVIDERS.get(model.partition("/")[0])
            if provider is None or not provider.key_env:
                raise
            raise LLMConfigError(f"no key: set {provider.key_env} and delete again") from None
        key, base = target.api_key, base_url or target.base_url
    if row.get("provider") == "anthropic":
        return AnthropicBatchClient(key, base, max_retries=2, retry_base=0.5, retry_cap=5.0)
    if not base:
        raise LLMConfigError("the row does not say which server holds the batch")
    return OpenAIBatchClient(base, key, max_retries=2, retry_base=0.5, retry_cap=5.0)
