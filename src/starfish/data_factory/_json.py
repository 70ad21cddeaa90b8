"""Compact JSON text for storage, with one C encoder built once (json.dumps rebuilds it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def make_dumps() -> Callable[[Any], str]:
    from json import encoder

    plain = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    if encoder.c_make_encoder is None or encoder.c_encode_basestring is None:
        return plain.encode
    make = encoder.c_make_encoder(
        None, plain.default, encoder.c_encode_basestring, None, ":", ",", False, False, True
    )
    join = "".join

    def dumps(value: Any) -> str:
        return join(make(value, 0))

    return dumps


dumps = make_dumps()
