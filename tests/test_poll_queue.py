"""The poll queue in the store (claims, leases, polled events) and the backoff arithmetic, on a
real SQLite file; the scheduler over HTTP is in test_polling.py."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database

from receiver.engine import Status, StatusEvent, format_time
from receiver.polling.policy import Backoff, Pacer
from receiver.store import Registration
from receiver.store.base import PollDone
from receiver.store.sqlite import SQLiteStore, schema

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return format_time(T0 + timedelta(seconds=seconds))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "q.db"), dlr_grace=300, dlr_grace_by_provider={"mesms": 60})
    asyncio.run(s.open())
    yield s
    asyncio.run(s.close())


def register(store: SQLiteStore, provider: str, ids: list[str], sent_at: str) -> None:
    regs = [Registration(provider, i, sent_at=sent_at) for i in ids]
    asyncio.run(store.register(regs))


def polled(message_id: str, raw: str, status: Status | None) -> StatusEvent:
    return StatusEvent("twilio", message_id, raw, status, source="poll")


def column(store: SQLiteStore, message_id: str, name: str) -> object:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(
            f"SELECT {name} FROM messages WHERE message_id = ?", (message_id,)
        ).fetchone()[0]


def test_a_message_falls_due_the_grace_after_it_was_sent(store: SQLiteStore) -> None:
    register(store, "twilio", ["a"], sent_at=at(0))
    register(store, "mesms", ["u:1"], sent_at=at(0))  # its own grace: 60 s
    assert column(store, "a", "next_poll_at") == at(300)
    assert column(store, "u:1", "next_poll_at") == at(60)
    due = asyncio.run(
        store.claim_due("twilio", now=at(299), limit=10, lease_until=at(400), owner="x")
    )
    assert due == []
    assert asyncio.run(store.next_due("twilio")) == at(300)
    assert asyncio.run(store.due_count("twilio", at(300))) == 1


def test_two_claimers_at_once_get_disjoint_messages(store: SQLiteStore) -> None:
    ids = [f"m{i}" for i in range(50)]
    register(store, "twilio", ids, sent_at=at(0))

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

    first, second = asyncio.run(both())
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(ids)  # 30 + 20: every due message, once


def test_a_lease_whose_holder_died_falls_due_again(store: SQLiteStore) -> None:
    register(store, "twilio", ["a"], sent_at=at(0))
    (claimed,) = asyncio.run(
        store.claim_due("twilio", now=at(300), limit=5, lease_until=at(420), owner="dead")
    )
    again = asyncio.run(
        store.claim_due("twilio", now=at(419), limit=5, lease_until=at(600), owner="alive")
    )
    assert again == []
    (taken,) = asyncio.run(
        store.claim_due("twilio", now=at(420), limit=5, lease_until=at(600), owner="alive")
    )
    assert taken.pk == claimed.pk
    # The dead holder's late finish no longer reschedules it: the lease is someone else's.
    done = PollDone(claimed, "ok", at(9999))
    asyncio.run(store.finish_polls("dead", [], [done]))
    assert column(store, "a", "next_poll_at") == at(600)
    assert column(store, "a", "poll_attempts") == 0


def test_polled_statuses_follow_the_callback_rules_and_never_create(store: SQLiteStore) -> None:
    register(store, "twilio", ["a"], sent_at=at(0))
    (claimed,) = asyncio.run(
        store.claim_due("twilio", now=at(300), limit=5, lease_until=at(420), owner="me")
    )
    recorded = asyncio.run(
        store.finish_polls(
            "me",
            [polled("a", "sent", Status.SENT), polled("stranger", "delivered", Status.DELIVERED)],
            [PollDone(claimed, "ok", at(360))],
        )
    )
    assert [(r.event.message_id, r.outcome.value) for r in recorded] == [("a", "applied")]
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    assert (column(store, "a", "poll_attempts"), column(store, "a", "last_poll_result")) == (
        1,
        "ok",
    )
    assert column(store, "a", "next_poll_at") == at(360)

    # The same answer again is nothing new: not stored. A final one leaves the queue.
    (claimed,) = asyncio.run(
        store.claim_due("twilio", now=at(360), limit=5, lease_until=at(480), owner="me")
    )
    assert (
        asyncio.run(
            store.finish_polls(
                "me", [polled("a", "sent", Status.SENT)], [PollDone(claimed, "ok", at(500))]
            )
        )
        == []
    )
    (claimed,) = asyncio.run(
        store.claim_due("twilio", now=at(500), limit=5, lease_until=at(620), owner="me")
    )
    asyncio.run(
        store.finish_polls(
            "me", [polled("a", "delivered", Status.DELIVERED)], [PollDone(claimed, "ok", at(700))]
        )
    )
    assert (column(store, "a", "status"), column(store, "a", "final_via")) == ("delivered", "poll")
    assert column(store, "a", "next_poll_at") is None
    with sqlite3.connect(store.path) as conn:
        sources = conn.execute("SELECT source, outcome FROM events ORDER BY id").fetchall()
    assert sources == [("poll", "applied"), ("poll", "applied")]


def test_giving_up_makes_unconfirmed_with_the_reason_unless_final_by_then(
    store: SQLiteStore,
) -> None:
    register(store, "twilio", ["late", "lucky"], sent_at=at(0))
    claimed = asyncio.run(
        store.claim_due("twilio", now=at(300), limit=5, lease_until=at(420), owner="me")
    )
    by_id = {m.message_id: m for m in claimed}
    reason = "no final status within 72h: 3 poll(s), last result ok"
    recorded = asyncio.run(
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
    assert column(store, "late", "status") == "unconfirmed"
    assert column(store, "late", "final_via") == "timeout"
    assert column(store, "late", "final_reason") == reason
    assert column(store, "late", "next_poll_at") is None
    assert column(store, "lucky", "status") == "delivered"
    assert column(store, "lucky", "final_reason") is None


def test_a_callback_that_changes_a_message_restarts_its_grace(store: SQLiteStore) -> None:
    register(store, "twilio", ["a"], sent_at=at(0))
    asyncio.run(store.record([StatusEvent("twilio", "a", "sent", Status.SENT)]))
    due = column(store, "a", "next_poll_at")
    assert isinstance(due, str) and due > at(300)  # now + 300 s, and now is later than T0
    asyncio.run(store.record([StatusEvent("twilio", "a", "delivered", Status.DELIVERED)]))
    assert column(store, "a", "next_poll_at") is None


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


def test_an_upgrade_puts_waiting_messages_in_the_queue_and_uses_its_index(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrations.apply(Database(conn), stop_before="0004_poll_queue")
    for message_id, status, final in [("waiting", "sent", 0), ("done", "delivered", 1)]:
        conn.execute(
            "INSERT INTO messages (provider, message_id, status, registered, is_final, "
            "created_at, updated_at) VALUES ('twilio', ?, ?, 1, ?, ?, ?)",
            (message_id, status, final, at(0), at(10)),
        )
    conn.close()
    s = SQLiteStore(str(path))
    assert s.migrate() == ["0004_poll_queue"]
    assert column(s, "waiting", "next_poll_at") == at(10)  # due at once: it waited already
    assert column(s, "done", "next_poll_at") is None
    with sqlite3.connect(path) as conn:
        plan = " ".join(
            r[3]
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE provider = 'twilio' "
                "AND next_poll_at IS NOT NULL AND next_poll_at <= ? ORDER BY next_poll_at LIMIT 5",
                (at(20),),
            )
        )
    assert "idx_messages_due" in plan and "SCAN" not in plan


def test_two_stores_on_one_file_claim_disjoint_messages(tmp_path: Path) -> None:
    """Two processes' stores: each its own writer connection, racing for the write lock."""
    path = str(tmp_path / "shared.db")
    stores = [SQLiteStore(path) for _ in range(2)]
    ids = [f"m{i}" for i in range(300)]

    async def race() -> list[list[str]]:
        for s in stores:
            await s.open()
        await stores[0].register([Registration("twilio", i, sent_at=at(0)) for i in ids])
        claimed: list[list[str]] = [[], []]

        async def claim(n: int) -> list[str]:
            batch = await stores[n].claim_due(
                "twilio", now=at(400), limit=7, lease_until=at(500), owner=f"p{n}"
            )
            return [m.message_id for m in batch]

        # Round after round, both claim at once and race for the write lock (the loser waits
        # in its busy timeout), until neither finds anything left: each gets a share whatever
        # the timing, and no message may be in both shares.
        while True:
            first, second = await asyncio.gather(claim(0), claim(1))
            if not first and not second:
                break
            claimed[0] += first
            claimed[1] += second
        for s in stores:
            await s.close()
        return claimed

    first, second = asyncio.run(race())
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(ids)
    assert first and second  # both got a share
