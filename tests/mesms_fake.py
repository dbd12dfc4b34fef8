"""A fake of me-sms's recipients endpoint for sends of any size, paged by `after` and
`nextCursor` as the documents describe, answering each page in time proportional to the page
(the simulator walks the whole send for every page). It counts what it is asked, per send and
cursor, and how many requests for one send were ever in flight at once.

Used by tests/test_campaign*.py (under uvicorn in a thread, support.AppServer) and by
bench/campaign.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_KEY = "fake-mesms-key"
MAX_LIMIT = 1000
UPDATED_AT = "2026-12-03T10:00:00Z"


def msisdn(position: int) -> str:
    """The number of the send's recipient at `position` (1-based), in me-sms's 66... form."""
    return f"66{800000000 + position}"


@dataclass
class FakeSend:
    size: int
    # The status of the recipient at a position (1-based); every recipient delivered unless told.
    status_of: Callable[[int], str] = lambda position: "success"
    malformed: frozenset[int] = frozenset()  # positions answered without a usable status


@dataclass
class FakeMeSms:
    sends: dict[str, FakeSend] = field(default_factory=dict)
    delay: float = 0.0  # seconds each page takes
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    # A cursor whose request is held (not answered) until `release` is set.
    hold_at: int | None = None
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _in_flight: Counter[str] = field(default_factory=Counter)

    def pages(self, uuid: str) -> int:
        return sum(n for (u, _), n in self.requests.items() if u == uuid)

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/api/v2/sms/{uuid}/recipients", self._recipients, methods=["GET"])]
        )

    async def _recipients(self, request: Request) -> Response:
        if request.headers.get("x-api-key") != API_KEY:
            return JSONResponse({"error": "Missing or invalid API key"}, status_code=401)
        uuid = request.path_params["uuid"]
        send = self.sends.get(uuid)
        if send is None:
            return JSONResponse({"error": "SMS not found", "code": "NOT_FOUND"}, status_code=404)
        after = int(request.query_params.get("after", "0"))
        limit = min(int(request.query_params.get("limit", "100")), MAX_LIMIT)
        self.requests[(uuid, after)] += 1
        self._in_flight[uuid] += 1
        self.max_in_flight[uuid] = max(self.max_in_flight[uuid], self._in_flight[uuid])
        try:
            if self.hold_at is not None and after == self.hold_at:
                self.held.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.05)
            if self.delay:
                await asyncio.sleep(self.delay)
            last = min(after + limit, send.size)
            items: list[dict[str, Any]] = []
            for position in range(after + 1, last + 1):
                if position in send.malformed:
                    items.append({"msisdn": msisdn(position), "status": 7})
                else:
                    status = send.status_of(position)
                    items.append(
                        {"msisdn": msisdn(position), "status": status, "updatedAt": UPDATED_AT}
                    )
            more = last < send.size
            return JSONResponse({"data": items, "nextCursor": last, "hasMore": more, "summary": []})
        finally:
            self._in_flight[uuid] -= 1
