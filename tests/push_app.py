"""The app's side of pushes, for tests: a small Starlette app that verifies each push with the
`standardwebhooks` library (as a user's app would) and answers as a test scripts it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Two secrets, as while one is rotated out (whsec_ and the base64 of 24 bytes each).
PUSH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"


HOLD_MAX = 60.0


@dataclass
class Received:
    webhook_id: str
    payload: dict[str, Any]


@dataclass
class PushApp:
    """Verifies with `secret`; `answer(n)` gives the n-th request's (status, headers)."""

    secret: str = PUSH_SECRET
    answer: Callable[[int], tuple[int, dict[str, str]]] = lambda n: (204, {})
    received: list[Received] = field(default_factory=list)  # verified, answered 2xx
    requests: list[str] = field(default_factory=list)  # every webhook-id, in arrival order
    refused: int = 0  # failed verification
    # While True, a request is held unanswered (up to HOLD_MAX), then answered 503: pushes
    # in flight when the receiver is killed.
    holding: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def asgi(self) -> Starlette:
        async def push(request: Request) -> Response:
            body = await request.body()
            try:
                payload = Webhook(self.secret).verify(body, dict(request.headers))
            except WebhookVerificationError:
                with self.lock:
                    self.refused += 1
                return Response(status_code=401)
            webhook_id = request.headers["webhook-id"]
            if self.holding:
                with self.lock:
                    self.requests.append(webhook_id)
                deadline = time.monotonic() + HOLD_MAX
                while self.holding and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                return Response(status_code=503)
            with self.lock:
                n = len(self.requests)
                self.requests.append(webhook_id)
                status, headers = self.answer(n)
                if 200 <= status < 300:
                    self.received.append(Received(webhook_id, payload))
            body = b"" if status in (204, 304) else json.dumps({"n": n}).encode()
            return Response(body, status_code=status, headers=headers)

        return Starlette(routes=[Route("/push", push, methods=["POST"])])

    def messages(self) -> dict[str, list[dict[str, Any]]]:
        """Each message's pushes received, in order of arrival."""
        found: dict[str, list[dict[str, Any]]] = {}
        with self.lock:
            for r in self.received:
                found.setdefault(r.payload["data"]["message_id"], []).append(r.payload)
        return found
