"""The store contract (receiver.store.base.Store), run against every kind of store
(tests/stores.py): recording, dedupe, held events, counts, group commit, concurrency.

SQLite's own side (migrations, pragmas, query plans, its writer) is in test_sqlite_store.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from stores import StoreFactory

from receiver.engine import Outcome, Status, StatusEvent
from receiver.store import MessageFilter, Registration, Store

Run = Callable[[Awaitable[Any]], Any]


def event(message_id: str, status: Status | None, raw: str | None = None, **kw: str) -> StatusEvent:
    return StatusEvent(
        provider="twilio",
        message_id=message_id,
        provider_status=raw or (status.value if status else "weird"),
        status=status,
        **kw,
    )


def test_count_by_status_counts_messages_by_their_current_status(store: Store, run: Run) -> None:
    async def scenario() -> dict[str, int]:
        assert await store.count_by_status() == {}
        await store.record([event("SM1", Status.SENT), event("SM2", Status.SENT)])
        await store.record([event("SM1", Status.DELIVERED), event("SM3", Status.FAILED)])
        await store.register([Registration("twilio", "SM4")])
        return await store.count_by_status()

    assert run(scenario()) == {"sent": 1, "delivered": 1, "failed": 1, "registered": 1}


def test_status_counts_stay_equal_to_a_full_count_through_every_kind_of_change(
    store_factory: StoreFactory, run: Run
) -> None:
    """Inserts, status changes, held events applied at registration, and pruning."""
    s = store_factory(unknown_messages="hold")

    async def full_count() -> dict[str, int]:
        by_status: dict[str, int] = (await s.stats(MessageFilter()))["by_status"]
        return {status: n for status, n in by_status.items() if n}

    async def scenario() -> list[tuple[dict[str, int], dict[str, int]]]:
        seen = []
        await s.register([Registration("twilio", f"SM{i}") for i in range(6)])
        seen.append((await s.count_by_status(), await full_count()))
        await s.record([event(f"SM{i}", Status.SENT) for i in range(4)])
        await s.record([event("SM0", Status.DELIVERED), event("SM1", Status.FAILED)])
        await s.record([event("SM0", Status.SENT), event("SM9", Status.DELIVERED)])  # held
        seen.append((await s.count_by_status(), await full_count()))
        await s.register([Registration("twilio", "SM9")])  # applies the held event
        seen.append((await s.count_by_status(), await full_count()))
        await s.prune("9999-12-31T00:00:00.000Z")  # every final message goes
        seen.append((await s.count_by_status(), await full_count()))
        return seen

    steps = run(scenario())
    for kept, counted in steps:
        assert kept == counted
    assert steps[2][0] == {"registered": 2, "sent": 2, "delivered": 2, "failed": 1}
    assert steps[3][0] == {"registered": 2, "sent": 2}


def test_concurrent_writes_are_committed_in_shared_batches(store: Store, run: Run) -> None:
    async def burst() -> list[Outcome]:
        results = await asyncio.gather(
            *[store.record([event(f"SM{i}", Status.SENT)]) for i in range(200)]
        )
        return [r[0].outcome for r in results]

    outcomes = run(burst())
    batches, jobs = store.write_stats  # type: ignore[attr-defined]
    assert outcomes == [Outcome.APPLIED] * 200
    assert jobs == 200
    assert batches < 200  # group commit: fewer transactions than requests


def test_same_event_twenty_times_at_once_applies_once(store: Store, run: Run) -> None:
    async def burst() -> list[Outcome]:
        results = await asyncio.gather(
            *[store.record([event("SM1", Status.DELIVERED)]) for _ in range(20)]
        )
        return [r[0].outcome for r in results]

    outcomes = run(burst())
    assert outcomes.count(Outcome.APPLIED) == 1
    assert outcomes.count(Outcome.DUPLICATE) == 19


def test_two_stores_on_one_database_apply_each_transition_once(
    store_factory: StoreFactory, run: Run
) -> None:
    """Two instances of the service record the same callbacks at once: one `applied` per
    transition, the rest duplicates, and an exact retry (same delivery id) still kept."""
    stores = [store_factory("shared"), store_factory("shared")]
    ids = [f"SM{i}" for i in range(40)]

    async def both() -> None:
        await asyncio.gather(
            *(
                s.record([event(i, status, dedupe_key=f"{i}-{status.value}")])
                for i in ids
                for status in (Status.SENT, Status.DELIVERED)
                for s in stores
            )
        )

    run(both())
    for message_id in ids:
        [message] = run(stores[0].get_messages(message_id))
        assert message["status"] == "delivered"
        outcomes = [e["outcome"] for e in run(stores[1].get_events("twilio", message_id))]
        assert len(outcomes) == 4
        assert outcomes.count("duplicate") == 2
        # sent then delivered: two applied; delivered first: one applied, sent a regression.
        assert outcomes.count("applied") + outcomes.count("regression") == 2
        assert outcomes.count("applied") >= 1


def test_unmapped_status_is_kept_raw_and_changes_nothing(store: Store, run: Run) -> None:
    run(store.record([event("SM1", Status.SENT)]))
    recorded = run(store.record([event("SM1", None, raw="partially_delivered")]))
    assert recorded[0].outcome is Outcome.UNMAPPED
    message = run(store.get_messages("SM1"))[0]
    events = run(store.get_events("twilio", "SM1"))
    assert message["status"] == "sent"
    assert [e["provider_status"] for e in events] == ["sent", "partially_delivered"]
    assert events[1]["status"] is None


def test_dedupe_key_seen_before_is_a_duplicate(store: Store, run: Run) -> None:
    first = run(store.record([event("SM1", Status.SENT, dedupe_key="k1")]))
    again = run(store.record([event("SM1", Status.DELIVERED, dedupe_key="k1")]))
    assert first[0].outcome is Outcome.APPLIED
    assert again[0].outcome is Outcome.DUPLICATE
    assert run(store.get_messages("SM1"))[0]["status"] == "sent"
    assert [e["outcome"] for e in run(store.get_events("twilio", "SM1"))] == [
        "applied",
        "duplicate",
    ]


def test_held_events_are_applied_in_order_at_registration(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory(unknown_messages="hold")
    for status in (Status.SENT, Status.UNDELIVERED, Status.FAILED, Status.SENT):
        assert run(s.record([event("SM9", status)]))[0].outcome is Outcome.PENDING_UNKNOWN
    assert run(s.get_messages("SM9")) == []
    reg = run(s.register([Registration("twilio", "SM9", to_number="+1555")]))[0]
    assert (reg.created, reg.status, reg.pending_applied) == (True, "undelivered", 4)
    message = run(s.get_messages("SM9"))[0]
    outcomes = [e["outcome"] for e in run(s.get_events("twilio", message["message_id"]))]
    assert outcomes == ["applied", "applied", "conflict", "regression"]
    again = run(s.register([Registration("twilio", "SM9")]))[0]
    assert (again.created, again.pending_applied) == (False, 0)


def test_final_status_records_how_and_when_it_was_learned(store: Store, run: Run) -> None:
    run(store.register([Registration("twilio", "SM1", sent_at="2026-01-01T00:00:00.000Z")]))
    run(store.record([event("SM1", Status.DELIVERED)]))
    message = run(store.get_messages("SM1"))[0]
    assert message["final"] is True and message["final_via"] == "callback"
    assert message["sent_at"] == "2026-01-01T00:00:00.000Z"
    assert message["final_at"] >= message["sent_at"]
    stats = run(store.stats(MessageFilter()))
    assert stats["delivery_rate"] == 1.0
    assert stats["time_to_final_seconds"]["count"] == 1


def test_registration_ties_held_events_and_their_duplicates_to_the_message(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory(unknown_messages="hold")
    held = event("SM7", Status.SENT, dedupe_key="d1", account="AC7", to_number="+1555")
    run(s.record([held]))
    assert run(s.record([held]))[0].outcome is Outcome.DUPLICATE
    run(s.register([Registration("twilio", "SM7")]))
    message = run(s.get_messages("SM7"))[0]
    outcomes = [e["outcome"] for e in run(s.get_events("twilio", message["message_id"]))]
    assert outcomes == ["applied", "duplicate"]
    assert (message["account"], message["to"], message["status"]) == ("AC7", "+1555", "sent")


def test_registration_fills_and_corrects_the_facts_and_keeps_metadata(
    store: Store, run: Run
) -> None:
    run(store.record([event("SM1", Status.SENT, to_number="+1", account="ACcb")]))
    [reg] = run(
        store.register(
            [Registration("twilio", "SM1", to_number="+2", account="ACapp", metadata={"k": [1]})]
        )
    )
    assert (reg.created, reg.status) == (False, "sent")
    run(store.register([Registration("twilio", "SM1")]))  # again, with nothing: kept
    [message] = run(store.get_messages("SM1"))
    assert (message["to"], message["account"], message["registered"]) == ("+2", "ACapp", True)
    assert message["metadata"] == {"k": [1]}
    assert reg.created_at == message["created_at"]
