"""The wire: the official posthog SDK, imported only inside the detached deliverer.

The SDK builds each message (`capture` with keywords, GeoIP off, no person profile); a
`before_send` hook takes the finished message, strips every property not on the allow-list,
and keeps it, so one batch request carries them all and its outcome is known exactly.
"""

from __future__ import annotations

import logging
from typing import Any

from starfish.telemetry.schema import SDK_FIELDS, clean_wire_properties

__all__ = ["TIMEOUT", "Undeliverable", "send", "silence_sdk"]

# A read timeout bounds an endpoint that accepts and never answers; the deliverer is detached,
# so this costs the user nothing, but it must not linger for minutes either.
TIMEOUT = (3.0, 5.0)


class Undeliverable(Exception):
    """The endpoint rejected the batch for good (4xx): resending would fail the same way."""


def silence_sdk() -> None:
    """The SDK logs (and can print) on failures; a telemetry failure must never show."""
    sdk_log = logging.getLogger("posthog")
    sdk_log.setLevel(logging.CRITICAL + 1)
    sdk_log.propagate = False
    sdk_log.disabled = True


def send(
    events: list[dict[str, Any]],
    *,
    api_key: str,
    endpoint: str,
    timeout: Any = TIMEOUT,
) -> list[dict[str, Any]]:
    """Send one batch; return the messages exactly as they left. Raises when not acknowledged."""
    silence_sdk()
    from posthog.client import Client
    from posthog.request import APIError, batch_post

    wire: list[dict[str, Any]] = []

    def keep(msg: dict[str, Any]) -> None:
        own = clean_wire_properties(msg.get("event", ""), msg.get("properties") or {})
        if own is not None:
            sdk = {k: msg["properties"][k] for k in SDK_FIELDS if k in msg["properties"]}
            msg["properties"] = {**own, **sdk}
            wire.append(msg)
        return None  # the SDK must not send it on its own: the batch below does

    client = Client(
        api_key,
        host=endpoint,
        sync_mode=True,
        disable_geoip=True,
        before_send=keep,
        max_retries=0,
        timeout=timeout,
        enable_exception_autocapture=False,
    )
    for event in events:
        try:
            client.capture(
                event=event["event"],
                distinct_id=str(event["distinct_id"]),
                properties={**event["properties"], "$process_person_profile": False},
                uuid=event["uuid"],
                timestamp=event["timestamp"],
            )
        except (KeyError, TypeError):
            continue  # a malformed outbox line is dropped, not retried forever
    if not wire:
        return wire
    try:
        batch_post(api_key, endpoint, gzip=True, timeout=timeout, batch=wire)
    except APIError as exc:
        status = exc.status if isinstance(exc.status, int) else 0
        if 400 <= status < 500 and status not in (408, 429):
            raise Undeliverable(str(status)) from None
        raise
    return wire
