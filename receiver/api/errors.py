"""JSON errors with stable `error_code`s, and the handlers that turn every failure into one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from receiver.realtime.hub import Busy
from receiver.schemas import Error, encode
from receiver.store import StoreUnavailable

log = structlog.get_logger("receiver.http")


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = details


def error_response(
    status: int,
    error_code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **details: Any,
) -> Response:
    """The JSON error (receiver.schemas.Error)."""
    body = encode(Error(error_code, message, details))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    # RFC 6750: a 401 names the scheme the caller should use.
    headers = {"WWW-Authenticate": 'Bearer realm="receiver"'} if exc.status == 401 else None
    return error_response(exc.status, exc.error_code, exc.message, headers, **exc.details)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the caller.
    log.exception("unhandled_error", path=request.url.path, method=request.method)
    return error_response(500, "internal_error", "internal error; see the service log")


async def store_unavailable(request: Request, exc: Exception) -> Response:
    # Nothing of the request was committed: a provider retries on 503, and so should apps.
    log.error("store_unavailable", path=request.url.path, error=str(exc))
    return error_response(
        503, "store_unavailable", "the database is unavailable; retry", headers={"Retry-After": "5"}
    )


async def busy(request: Request, exc: Exception) -> Response:
    # Past RECEIVER_MAX_WAITERS or RECEIVER_MAX_STREAMS: a waiter ends within a minute.
    assert isinstance(exc, Busy)
    return error_response(
        429,
        "too_many_waiting",
        f"{exc}; retry shortly",
        headers={"Retry-After": str(BUSY_RETRY_AFTER)},
        limit=exc.limit,
    )


BUSY_RETRY_AFTER = 1

EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: api_error,
    Busy: busy,
    HTTPException: http_error,
    StoreUnavailable: store_unavailable,
    Exception: unexpected_error,
}
