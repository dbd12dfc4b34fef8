"""What a push says: a Standard Webhooks payload `{"type", "timestamp", "data"}`, built here
and only here for every event type. No SMS body is ever in it (receiver never has one)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any, get_args

from receiver.changes import DATA_FIELDS  # a message's `data` fields: the stream's too
from receiver.schemas import PushType

STATUS_CHANGED = "message.status_changed"
DEADLINE_MISSED = "message.deadline_missed"
TYPES: tuple[str, ...] = get_args(PushType)  # declared with the payload: receiver.schemas


def new_webhook_id() -> str:
    """A push's id: its `webhook-id`, the same for every attempt, so the app dedupes on it.

    Time first (milliseconds, as a ULID or KSUID starts), then 80 random bits: ids made one
    after the other sort together, so each one's index entry lands on the index's last page
    rather than on a random one (a page written to disk per push, at every commit)."""
    return f"msg_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def message_data(**fields: Any) -> dict[str, Any]:
    """`data` for an event about one message: every field of DATA_FIELDS (missing ones null),
    and any extra ones an event type adds after them."""
    data = {name: fields.pop(name, None) for name in DATA_FIELDS}
    data.update(fields)
    return data


def body(kind: str, timestamp: str, data: Mapping[str, Any]) -> str:
    """The JSON body of a push, as kept in the outbox and sent byte for byte at each attempt."""
    if kind not in TYPES:
        raise ValueError(f"not a push type: {kind!r}")
    return json.dumps(
        {"type": kind, "timestamp": timestamp, "data": dict(data)},
        separators=(",", ":"),
        ensure_ascii=False,
    )
