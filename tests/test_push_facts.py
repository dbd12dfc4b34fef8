"""A change's push keeps the change's facts and builds its body when read (migration 0012):
on every store the body sent, and shown, is byte for byte the one built at the change, about
that change and not the message's later state, the app's metadata included."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from stores import StoreFactory

from receiver.engine import Status, StatusEvent
from receiver.push import payload
from receiver.store import Registration, Store
from receiver.store.base import PushJob, utcnow

Run = Callable[[Awaitable[Any]], Any]
APP = "http://127.0.0.1:9/push"
OTHER = "http://127.0.0.1:9/other"
LATER = "2999-01-01T00:00:00.000Z"


def event(message_id: str, status: Status, **kw: Any) -> StatusEvent:
    return StatusEvent("twilio", message_id, status.value, status, **kw)


async def claim(store: Any) -> list[PushJob]:
    found: list[PushJob] = await store.claim_pushes(
        owner="a", now=utcnow(), lease_until=LATER, endpoints=[APP, OTHER], limit=100
    )
    return found


def test_the_body_is_the_one_built_at_the_change(store_factory: StoreFactory, run: Run) -> None:
    store: Store = store_factory()
    store.configure_push((APP, OTHER), "all", lambda: None)  # type: ignore[attr-defined]
    metadata = {"order": "A-17", "note": "élan ✓", "n": 3}
    run(
        store.register(
            [Registration("twilio", "SMfacts", to_number="+15550001", metadata=metadata)]
        )
    )
    run(store.record([event("SMfacts", Status.SENT)]))
    run(store.record([event("SMfacts", Status.DELIVERED, error_code=None, account="AC1")]))
    # Later: new metadata, and a message created by a callback (no metadata at all).
    run(store.register([Registration("twilio", "SMfacts", metadata={"order": "B"})]))
    run(store.record([event("SMother", Status.UNDELIVERED, error_code="30003")]))

    jobs = run(claim(store))
    # Two endpoints, each its own push (own webhook-id) with the same body.
    assert len(jobs) == 4 and len({j.webhook_id for j in jobs}) == 4
    bodies = [json.loads(j.payload) for j in jobs if j.endpoint == APP]
    assert [b["data"]["status"] for b in bodies] == ["sent", "undelivered"]
    sent = bodies[0]
    assert sent["type"] == payload.STATUS_CHANGED
    assert sent["data"]["metadata"] == metadata  # as it was at the change
    assert sent["data"]["previous_status"] == "registered" and sent["data"]["final"] is False
    # Byte for byte what payload.body built at the change.
    expected = payload.body(
        payload.STATUS_CHANGED,
        sent["timestamp"],
        payload.message_data(
            provider="twilio",
            message_id="SMfacts",
            status="sent",
            previous_status="registered",
            provider_status="sent",
            error_code=None,
            final=False,
            final_via=None,
            to="+15550001",
            account=None,
            metadata=metadata,
            sent_at=sent["data"]["sent_at"],
            final_at=None,
        ),
    )
    assert next(j.payload for j in jobs if j.endpoint == APP) == expected
    other = bodies[1]["data"]
    assert other["metadata"] is None and other["error_code"] == "30003" and other["final"] is True
    # The API shows the same body.
    shown = run(store.get_push(jobs[0].webhook_id))  # type: ignore[attr-defined]
    assert shown["payload"] == jobs[0].payload
