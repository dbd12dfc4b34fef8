"""The change log and deadlines in the store contract, on every kind of store: what is logged
as a change, in what order, what resuming after an id gives, and deadlines decided once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from stores import StoreFactory

from receiver.engine import Status, StatusEvent, format_time
from receiver.store import Registration, Store

Run = Callable[[Awaitable[Any]], Any]


def event(message_id: str, status: Status) -> StatusEvent:
    return StatusEvent(
        provider="twilio", message_id=message_id, provider_status=status.value, status=status
    )


def ago(seconds: float) -> str:
    return format_time(datetime.now(UTC) - timedelta(seconds=seconds))


def test_each_applied_status_change_is_logged_once_in_order_with_its_data(
    store: Store, run: Run
) -> None:
    """A callback creating a message is a change; a registration, a duplicate, a regression
    are not."""

    async def scenario() -> list[dict[str, Any]]:
        await store.register([Registration("twilio", "SM1", to_number="+1555", metadata={"a": 1})])
        await store.record([event("SM1", Status.SENT)])
        await store.record([event("SM1", Status.SENT)])  # the same status again
        await store.record([event("SM2", Status.DELIVERED)])  # created by its callback
        await store.record([event("SM1", Status.DELIVERED)])
        await store.record([event("SM1", Status.SENT)])  # a regression
        return await store.changes_after(0)

    changes = run(scenario())
    seen = [
        (c["data"]["message_id"], c["data"]["previous_status"], c["data"]["status"])
        for c in changes
    ]
    assert seen == [
        ("SM1", "registered", "sent"),
        ("SM2", None, "delivered"),
        ("SM1", "sent", "delivered"),
    ]
    ids = [c["id"] for c in changes]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert {c["kind"] for c in changes} == {"message.status_changed"}
    first, _, last = (c["data"] for c in changes)
    assert first["final"] is False and first["final_at"] is None
    assert last["final"] is True and last["final_at"] is not None
    assert last["to"] == "+1555" and last["metadata"] == {"a": 1}
    assert run(store.changes_after(ids[0])) == changes[1:]
    assert run(store.change_marks()) == (ids[-1], 0)


def test_changes_are_kept_as_long_as_their_messages_and_the_pruned_mark_says_how_far(
    store: Store, run: Run
) -> None:
    async def scenario() -> tuple[tuple[int, int], list[dict[str, Any]]]:
        await store.record([event("SM1", Status.DELIVERED)])
        await store.prune(format_time(datetime.now(UTC) + timedelta(days=1)))
        await store.record([event("SM2", Status.SENT)])
        return await store.change_marks(), await store.changes_after(0)

    (last, pruned), kept = run(scenario())
    assert [c["data"]["message_id"] for c in kept] == ["SM2"]
    assert 1 <= pruned < kept[0]["id"] == last


def test_a_missed_deadline_is_decided_once_and_shown_on_the_message(store: Store, run: Run) -> None:
    async def scenario() -> tuple[list[Any], list[Any], dict[str, Any], list[dict[str, Any]]]:
        await store.register(
            [
                Registration("twilio", "late", sent_at=ago(10), deadline_after=2),
                Registration("twilio", "on-time", sent_at=ago(10), deadline_after=2),
                Registration("twilio", "not-yet", deadline_after=3600),
                Registration("twilio", "none"),
            ]
        )
        # Delivered (after its deadline, but before it was decided: decided as met).
        await store.record([event("on-time", Status.DELIVERED)])
        first = await store.decide_deadlines(format_time(datetime.now(UTC)))
        # Registered again with a deadline: a decided deadline stays decided.
        await store.register([Registration("twilio", "late", deadline_after=0)])
        again = await store.decide_deadlines(format_time(datetime.now(UTC)))
        [late] = await store.get_messages("late")
        return first, again, late, await store.changes_after(0)

    first, again, late, changes = run(scenario())
    assert first == [("twilio", "late")]
    assert again == []
    assert late["deadline_missed"] is True and late["deadline"] is not None
    missed = [c for c in changes if c["kind"] == "message.deadline_missed"]
    assert [c["data"]["message_id"] for c in missed] == ["late"]
    assert missed[0]["data"]["status"] == "registered"
    [on_time] = run(store.get_messages("on-time"))
    assert on_time["deadline_missed"] is False
    assert run(store.next_deadline()) is not None  # not-yet's


def test_a_deadline_given_as_a_time_and_from_the_registration(store: Store, run: Run) -> None:
    at = "2030-01-01T00:00:00.000Z"
    run(
        store.register(
            [
                Registration("twilio", "at", deadline=at),
                Registration("twilio", "in", deadline_after=60),
            ]
        )
    )
    [by_time] = run(store.get_messages("at"))
    [by_duration] = run(store.get_messages("in"))
    assert by_time["deadline"] == at
    assert by_duration["deadline"] > by_duration["created_at"]


def test_a_reader_following_the_log_while_two_stores_write_misses_no_change(
    store_factory: StoreFactory, run: Run
) -> None:
    """Change ids are committed in order even with concurrent writers on one database (on
    PostgreSQL: taken under a lock held to the commit), so resuming after the last id read
    never skips one that commits later."""
    writers = [store_factory("shared"), store_factory("shared")]
    reader = store_factory("shared")

    async def scenario() -> tuple[list[int], list[int]]:
        seen: list[int] = []
        done = asyncio.Event()

        async def follow() -> None:
            after = 0
            for _ in range(100_000):
                # Whether the writers were done before this read began: a read that began
                # earlier may answer from a snapshot older than their last commits.
                finished = done.is_set()
                batch = await reader.changes_after(after)
                seen.extend(c["id"] for c in batch)
                after = seen[-1] if seen else 0
                if finished and not batch:
                    return
                await asyncio.sleep(0)

        async def write(s: Store, n: int) -> None:
            for i in range(150):
                await s.record([event(f"SM{n}-{i}", Status.SENT)])

        following = asyncio.create_task(follow())
        # Two writers per store, so each store's batches also interleave with the other's.
        await asyncio.gather(*(write(s, n * 2 + k) for n, s in enumerate(writers) for k in (0, 1)))
        done.set()
        await following
        every = [c["id"] for c in await reader.changes_after(0, limit=10_000)]
        return seen, every

    seen, every = run(scenario())
    assert len(every) == 600
    assert seen == every
