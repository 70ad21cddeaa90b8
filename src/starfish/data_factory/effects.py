"""What a call's model requests did: the answers to keep and the counts to add.

The model layer collects them in the call's context (`CallContext.record`) and the job's writer
stores them, in the same transaction as outcomes. On the local executor they reach the writer
as each answer arrives and the call waits for that commit before it uses the answer, so a
kill -9 right after a paid request never pays for it again. In a Ray worker they are
collected on the call's `Effects` and travel back with its outcome. Either way the answers
already kept for an (input, attempt) reach the call with its input, so a re-run replays them
wherever it runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Answer", "Effects"]

Answer = tuple[str, str, int, int, "float | None"]
"""One answer to keep: (cache key, body text, input index, attempt, cost in USD or None)."""


class Effects:
    """One call's effects not yet stored, and the cached answers it was handed."""

    __slots__ = ("answers", "counts", "families", "kept")

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = answers  # key -> text: what storage kept for this input and attempt
        self.kept: list[Answer] = []
        self.counts: dict[str, Any] = {}
        self.families: dict[str, int] = {}  # model calls per provider family (telemetry)

    def add(self, counts: dict[str, Any], family: str | None, answer: Answer | None) -> None:
        if answer is not None:
            self.kept.append(answer)
        add_counts(self.counts, counts)
        if family is not None:
            calls = counts.get("requests", 0) + counts.get("cache_hits", 0)
            if calls:
                self.families[family] = self.families.get(family, 0) + calls

    def __bool__(self) -> bool:
        return bool(self.kept or self.counts)

    def shipped(self) -> Effects:
        """These effects without the answers handed in: what travels back with the outcome."""
        out = Effects()
        out.kept, out.counts, out.families = self.kept, self.counts, self.families
        return out


def add_counts(total: dict[str, Any], counts: dict[str, Any]) -> None:
    for name, value in counts.items():
        total[name] = total.get(name, 0) + value
