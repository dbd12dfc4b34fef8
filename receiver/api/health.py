"""Liveness (the process answers) and readiness (the database takes a committed write)."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.api.errors import error_response
from receiver.store import StoreUnavailable
from receiver.version import __version__

log = structlog.get_logger("receiver.health")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> Response:
    store = request.state.store
    try:
        await store.check_writable()
    except StoreUnavailable as exc:
        log.warning("not_ready", error=str(exc))
        return error_response(503, "store_unavailable", str(exc))
    body: dict[str, object] = {"status": "ready", "store": store.kind}
    # Polling trouble (a provider refusing our credentials, say) is reported, not a reason to
    # stop taking callbacks: the service stays ready.
    poller = request.state.poller
    body["polling"] = poller.status() if poller is not None else "off"
    # Each push endpoint's state (a 410 disables one), only when pushes are on; like polling's
    # trouble, never a reason to be unready.
    pusher = getattr(request.state, "pusher", None)
    if pusher is not None:
        body["pushes"] = pusher.status()
    return JSONResponse(body)
