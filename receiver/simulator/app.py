"""create_simulator(config): the Starlette app that plays Twilio, 23 Telecom, me-sms and
Standard Webhooks sources, with its control API and the background pusher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.simulator import control, mesms, telecom23, twilio
from receiver.simulator.config import SimConfig
from receiver.simulator.pusher import Pusher
from receiver.simulator.state import Simulator


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": str(exc.detail), "code": code}, status_code=exc.status_code, headers=exc.headers
    )


def create_simulator(config: SimConfig | None = None) -> Starlette:
    """A new simulator; the pusher runs while the app's lifespan does."""
    sim = Simulator(config or SimConfig())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pusher = Pusher(sim)
        task = asyncio.create_task(pusher.run())
        try:
            yield {"sim": sim, "pusher": pusher}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return Starlette(
        routes=[*control.routes(), *twilio.routes(), *telecom23.routes(), *mesms.routes()],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
