"""The poll queue in the store (claims, leases, polled events), against every kind of store
(tests/stores.py), and the backoff arithmetic; the scheduler over HTTP is in test_polling.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from stores import StoreFactory

from receiver.engine import Status, StatusEvent, format_time
from receiver.polling.policy import Backoff, Pacer
from receiver.store import MessageFilter, Registration, Store
from receiver.store.base import DueMessage, PollDone

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

Run = Callable[[Awaitable[Any]], Any]


def at(seconds: float) -> str:
    return format_time(T0 + timedelta(seconds=seconds))


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory(dlr_grace=300, dlr_grace_by_provider={"mesms": 60})


def register(store: Store, provider: str, ids: list[str], sent_at: str, run: Run) -> None:
    regs = [Registration(provider, i, sent_at=sent_at) for i in ids]
    run(store.register(regs))


def polled(message_id: str, raw: str, status: Status | None) -> StatusEvent:
    return StatusEvent("twilio", message_id, raw, status, source="poll")


# The message's fields as the store answers for them (get_messages), by column name.
_POLL_FIELDS = {
    "next_poll_at": "next_poll_at",
    "poll_attempts": "attempts",
    "last_poll_result": "last_result",
}


def column(store: Store, message_id: str, name: str, run: Run) -> object:
    [message] = run(store.get_messages(message_id))
    if name in _POLL_FIELDS:
        return message["poll"][_POLL_FIELDS[name]]
    return message[name]


def test_a_message_falls_due_the_grace_after_it_was_sent(store: Store, run: Run) -> None:
    register(store, "twilio", ["a"], sent_at=at(0), run=run)
    register(store, "mesms", ["u:1"], sent_at=at(0), run=run)  # its own grace: 60 s
    assert column(store, "a", "next_poll_at", run) == at(300)
    assert column(store, "u:1", "next_poll_at", run) == at(60)
    due = run(store.claim_due("twilio", now=at(299), limit=10, lease_until=at(400), owner="x"))
    assert due == []
    assert run(store.next_due("twilio")) == at(300)
    assert run(store.due_count("twilio", at(300))) == 1


def test_two_claimers_at_once_get_disjoint_messages(store: Store, run: Run) -> None:
    ids = [f"m{i}" for i in range(50)]
    register(store, "twilio", ids, sent_at=at(0), run=run)

    async def both() -> list[list[str]]:
        claims = await asyncio.gather(
            *(
                store.claim_due(
                    "twilio", now=at(400), limit=30, lease_until=at(500), owner=f"owner{n}"
                )
                for n in range(2)
            )
        )
        return [[m.message_id for m in c] for c in claims]

    first, second = run(both())
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(ids)  # 30 + 20: every due message, once


def test_a_lease_whose_holder_died_falls_due_again(store: Store, run: Run) -> None:
    register(store, "twilio", ["a"], sent_at=at(0), run=run)
    (claimed,) = run(
        store.claim_due("twilio", now=at(300), limit=5, lease_until=at(420), owner="dead")
    )
    again = run(store.claim_due("twilio", now=at(419), limit=5, lease_until=at(600), owner="alive"))
    assert again == []
    (taken,) = run(
        store.claim_due("twilio", now=at(420), limit=5, lease_until=at(600), owner="alive")
    )
    assert taken.pk == claimed.pk
    # The dead holder's late finish no longer reschedules it: the lease is someone else's.
    done = PollDone(claimed, "ok", at(9999))
    run(store.finish_polls("dead", [], [done]))
    assert column(store, "a", "next_poll_at", run) == at(600)
    assert column(store, "a", "poll_attempts", run) == 0


def test_polled_statuses_follow_the_callback_rules_and_never_create(store: Store, run: Run) -> None:
    register(store, "twilio", ["a"], sent_at=at(0), run=run)
    (claimed,) = run(
        store.claim_due("twilio", now=at(300), limit=5, lease_until=at(420), owner="me")
    )
    recorded = run(
        store.finish_polls(
            "me",
            [polled("a", "sent", Status.SENT), polled("stranger", "delivered", Status.DELIVERED)],
            [PollDone(claimed, "ok", at(360))],
        )
    )
    assert [(r.event.message_id, r.outcome.value) for r in recorded] == [("a", "applied")]
    assert run(store.stats(MessageFilter()))["total"] == 1  # no message for the stranger
    assert (
        column(store, "a", "poll_attempts", run),
        column(store, "a", "last_poll_result", run),
    ) == (
        1,
        "ok",
    )
    assert column(store, "a", "next_poll_at", run) == at(360)

    # The same answer again is nothing new: not stored. A final one leaves the queue.
    (claimed,) = run(
        store.claim_due("twilio", now=at(360), limit=5, lease_until=at(480), owner="me")
    )
    assert (
        run(
            store.finish_polls(
                "me", [polled("a", "sent", Status.SENT)], [PollDone(claimed, "ok", at(500))]
            )
        )
        == []
    )
    (claimed,) = run(
        store.claim_due("twilio", now=at(500), limit=5, lease_until=at(620), owner="me")
    )
    run(
        store.finish_polls(
            "me", [polled("a", "delivered", Status.DELIVERED)], [PollDone(claimed, "ok", at(700))]
        )
    )
    assert (column(store, "a", "status", run), column(store, "a", "final_via", run)) == (
        "delivered",
        "poll",
    )
    assert column(store, "a", "next_poll_at", run) is None
    sources = [(e["source"], e["outcome"]) for e in run(store.get_events("twilio", "a"))]
    assert sources == [("poll", "applied"), ("poll", "applied")]


def test_giving_up_makes_unconfirmed_with_the_reason_unless_final_by_then(
    store: Store, run: Run
) -> None:
    register(store, "twilio", ["late", "lucky"], sent_at=at(0), run=run)
    claimed = run(store.claim_due("twilio", now=at(300), limit=5, lease_until=at(420), owner="me"))
    by_id = {m.message_id: m for m in claimed}
    reason = "no final status within 72h: 3 poll(s), last result ok"
    recorded = run(
        store.finish_polls(
            "me",
            [polled("lucky", "delivered", Status.DELIVERED)],
            [
                PollDone(by_id["late"], "ok", at(400), give_up_reason=reason),
                PollDone(by_id["lucky"], "ok", at(400), give_up_reason=reason),
            ],
        )
    )
    assert sorted((r.event.message_id, r.event.source) for r in recorded) == [
        ("late", "timeout"),
        ("lucky", "poll"),
    ]
    assert column(store, "late", "status", run) == "unconfirmed"
    assert column(store, "late", "final_via", run) == "timeout"
    assert column(store, "late", "final_reason", run) == reason
    assert column(store, "late", "next_poll_at", run) is None
    assert column(store, "lucky", "status", run) == "delivered"
    assert column(store, "lucky", "final_reason", run) is None


def test_a_callback_that_changes_a_message_restarts_its_grace(store: Store, run: Run) -> None:
    register(store, "twilio", ["a"], sent_at=at(0), run=run)
    run(store.record([StatusEvent("twilio", "a", "sent", Status.SENT)]))
    due = column(store, "a", "next_poll_at", run)
    assert isinstance(due, str) and due > at(300)  # now + 300 s, and now is later than T0
    run(store.record([StatusEvent("twilio", "a", "delivered", Status.DELIVERED)]))
    assert column(store, "a", "next_poll_at", run) is None


def send_of(message_id: str) -> str | None:
    """A me-sms send's prefix ("<send>:"), as the me-sms client's group_prefix gives it."""
    send, sep, _ = message_id.partition(":")
    return send + sep if sep else None


def test_a_send_is_claimed_whole_or_left_to_the_claimer_holding_part_of_it(
    store: Store, run: Run
) -> None:
    """One due member brings its whole send; a send partly leased to another is put off."""
    register(store, "mesms", ["s1:a", "loner"], sent_at=at(0), run=run)  # due at 60
    register(store, "mesms", ["s1:b", "s1:c"], sent_at=at(500), run=run)  # due at 560

    def claim(now: float, owner: str, until: float) -> dict[str, DueMessage]:
        claimed = run(
            store.claim_due(
                "mesms", now=at(now), limit=10, lease_until=at(until), owner=owner, group_of=send_of
            )
        )
        return {m.message_id: m for m in claimed}

    by_x = claim(100, "x", 2000)
    assert sorted(by_x) == ["loner", "s1:a", "s1:b", "s1:c"]
    run(store.finish_polls("x", [], [PollDone(by_x["s1:a"], "ok", at(1050))]))
    # s1:a is due again at 1050, but s1:b and s1:c are x's until 2000: y leaves the send to x,
    # putting s1:a off until then.
    assert claim(1060, "y", 3000) == {}
    assert column(store, "s1:a", "next_poll_at", run) == at(2000)
    assert sorted(claim(2000, "y", 3000)) == ["loner", "s1:a", "s1:b", "s1:c"]


# -- the arithmetic ----------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_stops_at_its_cap() -> None:
    rng = random.Random(1)
    backoff = Backoff(base=60, cap=3600)
    for attempts, step in [(1, 60), (2, 120), (3, 240), (4, 480), (6, 1920)]:
        delays = [backoff.delay(attempts, rng) for _ in range(200)]
        assert step * 0.8 <= min(delays) and max(delays) <= step * 1.2
        assert max(delays) - min(delays) > step * 0.2  # jittered, not all the same
    assert all(backoff.delay(n, rng) <= 3600 for n in (7, 8, 50, 10_000))
    assert backoff.delay(10_000, rng) >= 3600 * 0.8


def test_the_pacer_spaces_requests_to_the_rate() -> None:
    pacer = Pacer(rate=4)  # one every 0.25 s
    waits = [pacer.wait(now=100.0) for _ in range(4)]
    assert waits == [0.0, 0.25, 0.5, 0.75]
    assert pacer.wait(now=200.0) == 0.0  # idle time is not saved up as a burst
    assert pacer.wait(now=200.0) == 0.25


def test_two_stores_on_one_database_claim_disjoint_messages(
    store_factory: StoreFactory, run: Run
) -> None:
    """Two processes' stores: each its own writer connection, racing for the rows."""
    stores = [store_factory("shared") for _ in range(2)]
    ids = [f"m{i}" for i in range(300)]

    async def race() -> list[list[str]]:
        await stores[0].register([Registration("twilio", i, sent_at=at(0)) for i in ids])
        claimed: list[list[str]] = [[], []]

        async def claim(n: int) -> list[str]:
            batch = await stores[n].claim_due(
                "twilio", now=at(400), limit=7, lease_until=at(500), owner=f"p{n}"
            )
            return [m.message_id for m in batch]

        # Round after round, both claim at once and race for the rows (on SQLite the loser
        # waits for the write lock in its busy timeout), until neither finds anything left:
        # each gets a share whatever the timing, and no message may be in both shares.
        while True:
            first, second = await asyncio.gather(claim(0), claim(1))
            if not first and not second:
                break
            claimed[0] += first
            claimed[1] += second
        return claimed

    first, second = run(race())
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(ids)
    assert first and second  # both got a share
