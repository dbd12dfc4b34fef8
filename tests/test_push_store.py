"""The push outbox in every kind of store (tests/stores.py): owed in the change's transaction,
claimed one message at a time in order, by one claimer only, retried, pruned."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from stores import StoreFactory

from receiver.engine import Status, StatusEvent
from receiver.store import Registration, Store
from receiver.store.base import PushAttempt, PushJob, format_time, utcnow

Run = Callable[[Awaitable[Any]], Any]
APP = "http://127.0.0.1:9/push"
OTHER = "http://127.0.0.1:9/other"
LATER = "2999-01-01T00:00:00.000Z"


def event(message_id: str, status: Status, **kw: Any) -> StatusEvent:
    return StatusEvent(
        provider="twilio",
        message_id=message_id,
        provider_status=status.value,
        status=status,
        **kw,
    )


def pushing(store: Store, events: str = "final", endpoints: tuple[str, ...] = (APP,)) -> list[int]:
    """Turn pushes on; the list counts the wakes after commits that owed one."""
    woken: list[int] = []
    store.configure_push(endpoints, events, lambda: woken.append(1))  # type: ignore[attr-defined]
    return woken


async def claim(store: Any, owner: str = "owner-a", limit: int = 100) -> list[PushJob]:
    now = utcnow()
    found: list[PushJob] = await store.claim_pushes(
        owner=owner, now=now, lease_until=LATER, endpoints=[APP, OTHER], limit=limit
    )
    return found


def done(status: str = "delivered", http_status: int = 200, **kw: Any) -> PushAttempt:
    return PushAttempt(
        attempted_at=utcnow(),
        duration_ms=3,
        http_status=http_status,
        error=None,
        response="ok",
        status=status,
        **kw,
    )


async def listed(store: Any, **kw: Any) -> list[dict[str, Any]]:
    params = {"status": None, "since": None, "before_id": None, "limit": 100, **kw}
    found, _ = await store.list_pushes(**params)
    return list(found)


def test_a_push_is_owed_with_its_change_and_only_for_changes_the_policy_takes(
    store: Store, run: Run
) -> None:
    woken = pushing(store, endpoints=(APP, OTHER))

    async def scenario() -> list[dict[str, Any]]:
        await store.register([Registration("twilio", "SM1", metadata={"order": 7})])
        await store.record([event("SM1", Status.SENT)])  # not final: nothing owed
        assert await listed(store) == [] and woken == []
        await store.record([event("SM1", Status.DELIVERED, error_code="0")])
        await store.record([event("SM1", Status.DELIVERED)])  # a duplicate: nothing new
        return await listed(store)

    found = run(scenario())
    assert woken == [1]
    assert sorted(p["endpoint"] for p in found) == [OTHER, APP]  # one per endpoint
    assert {p["status"] for p in found} == {"pending"}
    assert len({p["id"] for p in found}) == 2
    detail = run(store.get_push(found[0]["id"]))  # type: ignore[attr-defined]
    body = json.loads(detail["payload"])
    assert body["type"] == "message.status_changed"
    assert body["data"]["metadata"] == {"order": 7}
    assert (body["data"]["previous_status"], body["data"]["status"]) == ("sent", "delivered")
    assert body["data"]["error_code"] == "0"
    assert detail["attempts"] == []


def test_a_messages_pushes_are_claimed_one_at_a_time_oldest_first(store: Store, run: Run) -> None:
    pushing(store, events="all")

    async def scenario() -> None:
        await store.record([event("SM1", Status.SENT)])
        await store.record([event("SM1", Status.DELIVERED)])
        await store.record([event("SM2", Status.SENT)])
        first = await claim(store)
        assert [json.loads(j.payload)["data"]["status"] for j in first] == ["sent", "sent"]
        assert await claim(store, owner="owner-b") == []  # leased, and the next waits
        sm1 = next(j for j in first if json.loads(j.payload)["data"]["message_id"] == "SM1")
        # A retry keeps it first in line: SM1's second push still waits.
        retry_at = format_time(datetime(2000, 1, 1, tzinfo=UTC))  # due at once
        await store.finish_push(sm1, done("pending", 500, next_attempt_at=retry_at))  # type: ignore[attr-defined]
        [again] = await claim(store)
        assert again.webhook_id == sm1.webhook_id and again.attempts == 1
        await store.finish_push(again, done())  # type: ignore[attr-defined]
        [second] = await claim(store)
        assert json.loads(second.payload)["data"]["status"] == "delivered"
        assert json.loads(second.payload)["data"]["previous_status"] == "sent"

    run(scenario())


def test_two_instances_on_one_database_never_claim_the_same_push(
    store_factory: StoreFactory, run: Run
) -> None:
    a, b = store_factory("shared"), store_factory("shared")
    pushing(a)
    pushing(b)

    async def scenario() -> tuple[list[PushJob], list[PushJob]]:
        await a.record([event(f"SM{n}", Status.DELIVERED) for n in range(40)])
        found = await asyncio.gather(
            *(claim(store, owner=f"owner-{i}", limit=7) for i in range(6) for store in (a, b))
        )
        return [j for jobs in found for j in jobs], await claim(b)

    claimed, left = run(scenario())
    assert len(claimed) == 40 and len({j.webhook_id for j in claimed}) == 40
    assert left == []


def test_a_lease_of_a_claimer_gone_is_released_at_once(
    store_factory: StoreFactory, run: Run
) -> None:
    """SQLite: the starting instance releases the leases of owners it knows dead; PostgreSQL:
    a lease is its claimer's database session, over when that session ends."""
    first = store_factory("shared")
    pushing(first)
    run(first.record([event("SM1", Status.DELIVERED)]))
    [leased] = run(claim(first, owner="owner-dead"))
    run(first.close())
    second = store_factory("shared")
    pushing(second)
    assert run(second.release_push_leases(lambda o: o == "owner-dead")) in (0, 1)  # type: ignore[attr-defined]
    [again] = run(claim(second, owner="owner-new"))
    assert again.webhook_id == leased.webhook_id


def test_failed_pushes_are_kept_and_recovered_in_order(store: Store, run: Run) -> None:
    pushing(store)

    async def scenario() -> None:
        await store.record([event("SM1", Status.DELIVERED), event("SM2", Status.FAILED)])
        for job in await claim(store):
            await store.finish_push(job, done("failed", 503))  # type: ignore[attr-defined]
        assert len(await listed(store, status="failed")) == 2
        assert await claim(store) == []
        assert await store.recover_pushes(LATER, utcnow()) == 0  # type: ignore[attr-defined]
        assert await store.recover_pushes("2000-01-01", utcnow()) == 2  # type: ignore[attr-defined]
        again = await claim(store)
        assert len(again) == 2 and all(j.attempts == 1 and j.retry_step == 0 for j in again)

    run(scenario())


def test_a_disabled_endpoints_pushes_fail_until_one_is_retried(store: Store, run: Run) -> None:
    pushing(store)

    async def scenario() -> None:
        await store.record([event("SM1", Status.DELIVERED), event("SM2", Status.DELIVERED)])
        await store.disable_push_endpoint(APP, utcnow(), "410 Gone")  # type: ignore[attr-defined]
        stats = await store.push_stats()  # type: ignore[attr-defined]
        assert stats["backlog"] == 0 and APP in stats["disabled"]
        failed = await listed(store, status="failed")
        assert {p["last_result"] for p in failed} == {"endpoint_disabled"}
        assert await store.retry_push(failed[0]["id"], utcnow()) == "failed"  # type: ignore[attr-defined]
        assert await store.retry_push(failed[0]["id"], utcnow()) == "pending"  # type: ignore[attr-defined]
        assert await store.retry_push("msg_none", utcnow()) is None  # type: ignore[attr-defined]
        stats = await store.push_stats()  # type: ignore[attr-defined]
        assert stats["backlog"] == 1 and stats["disabled"] == {}
        assert stats["oldest_created_at"] is not None

    run(scenario())


def test_retention_prunes_delivered_pushes_with_their_messages(store: Store, run: Run) -> None:
    pushing(store)

    async def scenario() -> None:
        await store.record([event("SM1", Status.DELIVERED), event("SM2", Status.DELIVERED)])
        jobs = await claim(store)
        sm1 = next(j for j in jobs if '"SM1"' in j.payload)
        await store.finish_push(sm1, done())  # type: ignore[attr-defined]
        pruned = await store.prune(LATER)
        assert (pruned.messages, pruned.pushes) == (2, 1)
        # SM2's push was never delivered: it stays, to be sent or recovered.
        [left] = await listed(store)
        assert left["message_id"] == "SM2" and left["status"] == "pending"

    run(scenario())


def test_pages_of_pushes_follow_the_cursor_newest_first(store: Store, run: Run) -> None:
    pushing(store)

    async def scenario() -> list[str]:
        await store.record([event(f"SM{n}", Status.DELIVERED) for n in range(5)])
        ids: list[str] = []
        before = None
        for _ in range(5):
            page, before = await store.list_pushes(  # type: ignore[attr-defined]
                status="pending", since=None, before_id=before, limit=2
            )
            ids += [p["message_id"] for p in page]
            if before is None:
                break
        return ids

    assert run(scenario()) == ["SM4", "SM3", "SM2", "SM1", "SM0"]
