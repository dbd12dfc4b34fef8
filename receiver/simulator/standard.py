"""A Standard Webhooks source: signed `message.status` events, and no API of its own."""

from __future__ import annotations

import json
import time
from typing import Any

from receiver.simulator.model import Push, SimMessage, iso, status_time
from receiver.simulator.signing import standard_webhook_signature
from receiver.simulator.state import Simulator


def event(message: SimMessage, push: Push) -> dict[str, Any]:
    at = iso(status_time(message, push.status))
    data: dict[str, Any] = {
        "message_id": message.message_id,
        # A canonical status, unless the source relays a built-in provider's raw statuses.
        "status": push.status,
        "recipient": message.to,
        "error_code": message.error_code if push.status in message.flavor.failures else None,
        "timestamp": at,
    }
    if message.status_provider:
        data["status_provider"] = message.status_provider
    return {"type": "message.status", "timestamp": at, "data": data}


def push_request(
    sim: Simulator, url: str, jobs: list[tuple[SimMessage, Push]]
) -> tuple[dict[str, str], bytes]:
    ((message, push),) = jobs
    source = sim.config.standard_sources[message.source or ""]
    body = json.dumps(event(message, push)).encode()
    # The receiver checks webhook-timestamp against its own clock: real time, not simulated.
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json",
        "webhook-id": push.delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_webhook_signature(
            source.secret, push.delivery_id, timestamp, body
        ),
    }, body
