"""The query parameters and registration field of waiting: `wait` and `until` on a message's
read (the long poll), `deadline` on a registration."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from receiver.api.errors import ApiError
from receiver.realtime.waiters import MAX_WAIT, UNTIL
from receiver.schemas import MAX_DEADLINE  # the longest deadline given as a duration
from receiver.settings import parse_duration, say_duration
from receiver.store.base import format_time


def wait_params(request: Request) -> tuple[float, str]:
    """`wait` (a duration up to MAX_WAIT; 0 by default) and `until` (final | change)."""
    params = request.query_params
    raw = params.get("wait", "0")
    seconds = parse_duration(raw)
    if seconds is None or seconds > MAX_WAIT:
        raise ApiError(
            400,
            "invalid_parameter",
            f"wait must be a duration up to {say_duration(MAX_WAIT)}, like 30s or 500ms",
            parameter="wait",
        )
    until = params.get("until", "final")
    if until not in UNTIL:
        raise ApiError(
            400,
            "invalid_parameter",
            "until must be final or change",
            parameter="until",
            allowed=list(UNTIL),
        )
    return seconds, until


def deadline_field(item: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A registration's `deadline` as Registration's fields: a duration (a number of seconds,
    or text such as "30s") from sent_at, or an ISO 8601 time."""
    value = item.get("deadline")
    if value is None:
        return {}
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        seconds = parse_duration(value)
        if seconds is None:
            at = _iso_time(value)
            if at is not None:
                return {"deadline": at}
    if seconds is None or not 0 <= seconds <= MAX_DEADLINE:
        raise ApiError(
            400,
            "invalid_message",
            "deadline must be a duration after sent_at (like 30s or 5m, at most "
            f"{say_duration(MAX_DEADLINE)}) or an ISO 8601 time",
            index=index,
            field="deadline",
        )
    return {"deadline_after": seconds}


def _iso_time(value: str) -> str | None:
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return format_time(moment) if 1000 <= moment.year <= 9998 else None
