"""Query strings, read strictly: unknown or repeated parameters are a 400, never ignored; and
the ISO 8601 times they (and registrations) hold."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from starlette.requests import Request

from receiver.api.errors import ApiError
from receiver.engine import format_time


def query(request: Request, allowed: set[str]) -> Mapping[str, str]:
    """The request's query parameters, once each, all of them among `allowed`."""
    params = request.query_params
    unknown = sorted(set(params.keys()) - allowed)
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter: {unknown[0]}",
            allowed=sorted(allowed),
        )
    for key in params:
        if len(params.getlist(key)) > 1:
            raise ApiError(400, "invalid_parameter", f"{key} given more than once", parameter=key)
    return params


def parse_time(value: str, name: str) -> str:
    """An ISO 8601 time (a date alone means its midnight UTC) in the stored form."""
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)  # OverflowError near year 1 or 9999
    except (ValueError, OverflowError):
        moment = None
    # Stored times compare as text, which holds only for four-digit years.
    if moment is None or moment.year < 1000:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be an ISO 8601 time, like 2026-11-25T10:00:00Z",
            parameter=name,
        )
    return format_time(moment)
