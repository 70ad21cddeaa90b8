"""What a record is compared by: its key text, normalised, its word shingles and their MinHash."""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from starfish.errors import OptionsError

__all__ = [
    "NUM_PERM",
    "SHINGLE_WORDS",
    "FieldError",
    "digest",
    "key_text",
    "minhash",
    "normalize",
    "shingles",
]

NUM_PERM = 128
"""MinHash permutations: the estimate of a Jaccard similarity J has a standard error of
sqrt(J(1-J)/128), 0.035 at J = 0.8."""
SHINGLE_WORDS = 2
"""Words per shingle: pairs keep word order ("dog bites man" is not "man bites dog") while one
changed word in 40 still leaves a Jaccard similarity of about 0.9."""
_SPACE = re.compile(r"\s+")


class FieldError(OptionsError):
    """A named field is not in the records: every input would hit it, so the job stops."""

    fatal = True


@lru_cache(maxsize=1)
def _punctuation() -> dict[int, None]:
    """Every Unicode punctuation character (categories P*), built once on first use."""
    return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "P"}


def normalize(text: str) -> str:
    """NFKC, casefolded, punctuation dropped, whitespace collapsed: the exact test's form."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_punctuation())
    return _SPACE.sub(" ", text).strip()


def key_text(record: dict[str, Any], fields: Sequence[str], owner: str) -> str:
    """The named fields of `record` (all its string fields when none are named), one a line."""
    if not fields:
        return "\n".join(v for v in record.values() if isinstance(v, str))
    missing = [f for f in fields if f not in record]
    if missing:
        have = ", ".join(map(repr, record)) or "none"
        raise FieldError(
            f"{owner}: the records have no field {missing[0]!r} (their fields: {have}); "
            "name fields the function returns."
        )
    return "\n".join(v if isinstance(v, str) else str(v) for v in (record[f] for f in fields))


def digest(normalized: str) -> bytes:
    return hashlib.blake2b(normalized.encode(), digest_size=16).digest()


def shingles(normalized: str) -> set[bytes]:
    words = normalized.split(" ")
    if len(words) < SHINGLE_WORDS:
        return {normalized.encode()}
    return {
        " ".join(words[i : i + SHINGLE_WORDS]).encode()
        for i in range(len(words) - SHINGLE_WORDS + 1)
    }


@lru_cache(maxsize=1)
def _permutations() -> Any:
    from datasketch import MinHash

    return MinHash(num_perm=NUM_PERM).permutations


def minhash(normalized: str) -> Any:
    """The MinHash signature of the text's shingles: datasketch's `MinHash` values as a
    uint32 array (the object is not kept: an index holds the values alone); the permutations
    are made once, not per record."""
    import numpy as np
    from datasketch import MinHash

    m = MinHash(num_perm=NUM_PERM, permutations=_permutations(), scheme="affine32")
    m.update_batch(list(shingles(normalized)))
    return np.asarray(m.hashvalues, dtype=np.uint32)
