"""GET /v1/stream: the applied changes as Server-Sent Events (framing by sse-starlette).

Each event is one row of the change log: `id:` its change id (increasing, in commit order),
`event:` its kind (message.status_changed, message.deadline_missed), `data:` the push payload's
data (receiver.changes). A client reconnecting with Last-Event-ID gets every change after it
still stored, then the live ones; one from before what retention kept first gets `event:
reset`. The stream reads the log when a commit wakes it (the hub), never on a timer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from receiver.api.auth import require_api_access
from receiver.api.errors import ApiError
from receiver.api.messages import MAX_ID_LENGTH, MAX_ROW_ID, _provider_param
from receiver.api.query import query
from receiver.realtime.hub import Hub
from receiver.store import Store

BATCH = 500


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_ROW_ID:
        raise ApiError(
            400,
            "invalid_last_event_id",
            "Last-Event-ID must be the id of an event this stream sent",
        )
    return int(raw)


async def stream(request: Request) -> Response:
    require_api_access(request)
    params = query(request, {"provider", "message_id"})
    provider = _provider_param(request, params)
    message_id = params.get("message_id")
    if message_id is not None and not 0 < len(message_id) <= MAX_ID_LENGTH:
        raise ApiError(
            400,
            "invalid_parameter",
            f"message_id must be 1 to {MAX_ID_LENGTH} characters",
            parameter="message_id",
        )
    resume = _last_event_id(request)
    store: Store = request.state.store
    hub: Hub = request.state.hub
    last, pruned = await store.change_marks()
    woken = hub.open_stream()  # Busy (429) past RECEIVER_MAX_STREAMS

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            after = last if resume is None else resume
            if resume is not None and resume < pruned:
                # Changes after `resume` were pruned: the client must read the state afresh.
                yield ServerSentEvent(
                    json.dumps({"last_event_id": resume, "oldest_kept_after": pruned}),
                    event="reset",
                    id=str(pruned),
                )
                after = pruned
            while not hub.closed:
                woken.clear()  # before the read: a commit from now on wakes the next wait
                changes = await store.changes_after(after, BATCH)
                for change in changes:
                    after = change["id"]
                    data = change["data"]
                    if (provider is None or data["provider"] == provider) and (
                        message_id is None or data["message_id"] == message_id
                    ):
                        yield ServerSentEvent(
                            json.dumps(data, separators=(",", ":")),
                            event=change["kind"],
                            id=str(change["id"]),
                        )
                if len(changes) < BATCH:
                    await woken.wait()
        finally:
            hub.close_stream(woken)

    return _Stream(
        events(),
        ping=request.state.settings.stream_ping,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        release=lambda: hub.close_stream(woken),
    )


class _Stream(EventSourceResponse):
    """The response, releasing its place under the cap however it ends (a HEAD request, or a
    client gone before the first event, never starts the generator)."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
