"""What every batch client does the same way, whatever the provider: read a batch by its id,
report its status, cancel it, and keep the key out of a failed line's message. A client gives
the URL of its batches and how to read one of its batch objects (`_status`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from starfish.llm.batch.common import BatchRef, BatchResult, BatchStatus
from starfish.llm.batch.http import BatchHTTP
from starfish.llm.errors import LLMRequestError

__all__ = ["BatchAPI"]


class BatchAPI:
    _http: BatchHTTP

    @property
    def _batches(self) -> str:
        """The URL of the provider's batches (`{url}/{id}` is one of them)."""
        raise NotImplementedError

    def _status(self, batch: Mapping[str, Any]) -> BatchStatus:
        raise NotImplementedError

    async def status(self, ref: BatchRef) -> BatchStatus:
        return self._status(await self._batch(ref))

    async def cancel(self, ref: BatchRef) -> BatchStatus:
        """Ask the provider to stop the batch; its finished answers stay readable. A batch
        that has already ended is left as it is."""
        try:
            batch = await self._http.json("POST", f"{self._batches}/{ref.batch_id}/cancel")
        except LLMRequestError:
            current = await self.status(ref)
            if current.done:
                return current
            raise
        return self._status(batch)

    async def _batch(self, ref: BatchRef) -> dict[str, Any]:
        data = await self._http.json("GET", f"{self._batches}/{ref.batch_id}")
        if not isinstance(data, dict):
            raise LLMRequestError(f"{self._batches} answered a batch that is not an object")
        return data

    def _scrubbed(self, result: BatchResult) -> BatchResult:
        """A failed line's message without the key (it goes into the job's error records)."""
        error = result.body.get("error")
        if result.ok or not isinstance(error, dict) or not isinstance(error.get("message"), str):
            return result
        body = {**result.body, "error": {**error, "message": self._http.scrub(error["message"])}}
        return replace(result, body=body)
