"""The push outbox's API: what was pushed to the app and how each attempt went, and sending
again what failed (one push, or everything since a time)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.api.answer import answer
from receiver.api.auth import require_api_access
from receiver.api.errors import ApiError
from receiver.api.messages import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    _decode_cursor,
    _encode_cursor,
    parse_time,
)
from receiver.api.query import query
from receiver.store.base import PUSH_STATUSES, utcnow

MAX_PUSH_ID_LENGTH = 100


def routes() -> list[Route]:
    return [
        Route("/v1/pushes", list_pushes, methods=["GET"]),
        # Before /v1/pushes/{push_id}: "recover" is not an id.
        Route("/v1/pushes/recover", recover_pushes, methods=["POST"]),
        Route("/v1/pushes/{push_id}/retry", retry_push, methods=["POST"]),
        Route("/v1/pushes/{push_id}", get_push, methods=["GET"]),
    ]


def _store(request: Request) -> Any:
    require_api_access(request)
    return request.state.store


def _limit(params: Any) -> int:
    raw = params.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            400, "invalid_parameter", f"limit must be 1 to {MAX_LIMIT}", parameter="limit"
        )
    return int(raw)


async def list_pushes(request: Request) -> Response:
    store = _store(request)
    params = query(request, {"status", "since", "limit", "cursor"})
    status = params.get("status")
    if status is not None and status not in PUSH_STATUSES:
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown status {status!r}",
            parameter="status",
            allowed=list(PUSH_STATUSES),
        )
    since = parse_time(params["since"], "since") if "since" in params else None
    cursor = params.get("cursor")
    found, next_id = await store.list_pushes(
        status=status,
        since=since,
        before_id=_decode_cursor(cursor) if cursor else None,
        limit=_limit(params),
    )
    return answer(
        {"pushes": found, "next_cursor": _encode_cursor(next_id) if next_id is not None else None}
    )


async def _push(request: Request, store: Any) -> dict[str, Any]:
    push_id = request.path_params["push_id"]
    found: dict[str, Any] | None = None
    if len(push_id) <= MAX_PUSH_ID_LENGTH:
        found = await store.get_push(push_id)
    if found is None:
        raise ApiError(404, "push_not_found", f"no push {push_id!r}")
    return found


async def get_push(request: Request) -> Response:
    store = _store(request)
    query(request, set())
    return answer(await _push(request, store))


async def retry_push(request: Request) -> Response:
    """Send a delivered or failed push again, with its webhook-id; its endpoint, if a 410
    disabled it, is enabled again."""
    store = _store(request)
    query(request, set())
    push_id = request.path_params["push_id"]
    before = (
        await store.retry_push(push_id, utcnow()) if len(push_id) <= MAX_PUSH_ID_LENGTH else None
    )
    if before is None:
        raise ApiError(404, "push_not_found", f"no push {push_id!r}")
    if before == "pending":
        raise ApiError(409, "push_pending", "this push is still being sent; nothing to retry")
    await _wake(request)
    return answer(await _push(request, store), status_code=202)


async def recover_pushes(request: Request) -> Response:
    """Send again every push that failed, created since `since`, in order."""
    store = _store(request)
    params = query(request, {"since"})
    if "since" not in params:
        raise ApiError(400, "invalid_parameter", "since is required", parameter="since")
    since = parse_time(params["since"], "since")
    recovered: int = await store.recover_pushes(since, utcnow())
    if recovered:
        await _wake(request)
    return answer({"recovered": recovered}, status_code=202)


async def _wake(request: Request) -> None:
    pusher = request.state.pusher
    if pusher is not None:
        await pusher.refresh()
