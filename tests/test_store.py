"""The SQLite store: schema and migrations, durability pragmas, the group-commit writer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from receiver.engine import Outcome, Status, StatusEvent
from receiver.store import MessageFilter, Registration, StoreUnavailable
from receiver.store.sqlite import SQLiteStore, connect, schema
from receiver.store.sqlite.connection import TRANSACTIONS
from receiver.store.writer import Writer


def event(message_id: str, status: Status | None, raw: str | None = None, **kw: str) -> StatusEvent:
    return StatusEvent(
        provider="twilio",
        message_id=message_id,
        provider_status=raw or (status.value if status else "weird"),
        status=status,
        **kw,
    )


MIGRATIONS = [
    "0001_messages_and_events",
    "0002_prunable_index",
    "0003_status_counts",
    "0004_poll_queue",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "store.db"))
    asyncio.run(s.open())
    yield s
    asyncio.run(s.close())


def test_fresh_database_gets_every_migration_recorded(tmp_path: Path) -> None:
    s = SQLiteStore(str(tmp_path / "sub" / "dir" / "fresh.db"))
    assert s.migrate() == MIGRATIONS
    assert s.migrate() == []  # a second start finds nothing to do
    conn = sqlite3.connect(s.path)
    names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == MIGRATIONS
    assert {"messages", "events", "_sqlite_migrations"} <= tables


def test_a_database_of_an_earlier_version_is_upgraded_in_place(tmp_path: Path) -> None:
    """A file made by 0001 alone (the first release) gets the later steps, data kept."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    db = Database(conn)
    schema.migrations.apply(db, stop_before="0002_prunable_index")
    conn.execute(
        "INSERT INTO messages (provider, message_id, status, registered, is_final, created_at, "
        "updated_at) VALUES ('twilio', 'SM1', 'delivered', 0, 1, '2026-01-01', '2026-01-01')"
    )
    conn.close()
    s = SQLiteStore(str(path))
    assert s.migrate() == MIGRATIONS[1:]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    # The status counts start from the messages already there.
    assert conn.execute("SELECT status, n FROM message_status_counts").fetchall() == [
        ("delivered", 1)
    ]
    [(plan,)] = [
        (r[3],)
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE is_final = 1 "
            "AND coalesce(final_at, updated_at) < '2027' "
            "ORDER BY coalesce(final_at, updated_at), id"
        )
    ]
    assert "idx_messages_prunable" in plan  # pruning reads only what it deletes


def test_two_processes_migrating_at_once_apply_each_step_once(tmp_path: Path) -> None:
    path = str(tmp_path / "race.db")
    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(SQLiteStore(path).migrate()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [[], [], [], MIGRATIONS]  # one of them did all, once


def test_connections_use_wal_and_full_sync(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "p.db"), busy_timeout_ms=1234)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234


def test_indexes_serve_every_query(store: SQLiteStore) -> None:
    """The list and lookup queries use an index rather than scanning the table."""
    conn = sqlite3.connect(store.path)
    plans = {
        "by id": "SELECT * FROM messages WHERE message_id = 'x'",
        "by status": "SELECT * FROM messages WHERE status = 'sent' ORDER BY id DESC LIMIT 10",
        "by to": "SELECT * FROM messages WHERE to_number = '+1' ORDER BY id DESC LIMIT 10",
        "history": "SELECT * FROM events WHERE message_pk = 1 ORDER BY id",
        "pending": "SELECT * FROM events WHERE provider='t' AND message_id='x' "
        "AND message_pk IS NULL AND outcome='pending_unknown' ORDER BY id",
        "unattached": "UPDATE events SET message_pk = 1 WHERE provider='t' AND message_id='x' "
        "AND message_pk IS NULL",
        "dedupe": "SELECT 1 FROM events WHERE provider='t' AND dedupe_key='k'",
    }
    for name, sql in plans.items():
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING" in plan and "SCAN events" not in plan, (name, plan)
        assert not plan.startswith("SCAN messages"), (name, plan)


def test_count_by_status_counts_messages_by_their_current_status(store: SQLiteStore) -> None:
    async def scenario() -> dict[str, int]:
        assert await store.count_by_status() == {}
        await store.record([event("SM1", Status.SENT), event("SM2", Status.SENT)])
        await store.record([event("SM1", Status.DELIVERED), event("SM3", Status.FAILED)])
        await store.register([Registration("twilio", "SM4")])
        return await store.count_by_status()

    assert asyncio.run(scenario()) == {"sent": 1, "delivered": 1, "failed": 1, "registered": 1}


def test_status_counts_stay_equal_to_a_full_count_through_every_kind_of_change(
    tmp_path: Path,
) -> None:
    """Inserts, status changes, held events applied at registration, and pruning."""
    s = SQLiteStore(str(tmp_path / "counts.db"), unknown_messages="hold")

    def full_count() -> dict[str, int]:
        conn = sqlite3.connect(s.path)
        rows = conn.execute("SELECT status, count(*) FROM messages GROUP BY status")
        return dict(rows.fetchall())

    async def scenario() -> list[tuple[dict[str, int], dict[str, int]]]:
        await s.open()
        seen = []
        try:
            await s.register([Registration("twilio", f"SM{i}") for i in range(6)])
            seen.append((await s.count_by_status(), full_count()))
            await s.record([event(f"SM{i}", Status.SENT) for i in range(4)])
            await s.record([event("SM0", Status.DELIVERED), event("SM1", Status.FAILED)])
            await s.record([event("SM0", Status.SENT), event("SM9", Status.DELIVERED)])  # held
            seen.append((await s.count_by_status(), full_count()))
            await s.register([Registration("twilio", "SM9")])  # applies the held event
            seen.append((await s.count_by_status(), full_count()))
            await s.prune("9999-12-31T00:00:00.000Z")  # every final message goes
            seen.append((await s.count_by_status(), full_count()))
        finally:
            await s.close()
        return seen

    steps = asyncio.run(scenario())
    for kept, counted in steps:
        assert kept == counted
    assert steps[2][0] == {"registered": 2, "sent": 2, "delivered": 2, "failed": 1}
    assert steps[3][0] == {"registered": 2, "sent": 2}


def test_concurrent_writes_are_committed_in_shared_batches(store: SQLiteStore) -> None:
    async def burst() -> list[Outcome]:
        results = await asyncio.gather(
            *[store.record([event(f"SM{i}", Status.SENT)]) for i in range(200)]
        )
        return [r[0].outcome for r in results]

    outcomes = asyncio.run(burst())
    batches, jobs = store.write_stats
    assert outcomes == [Outcome.APPLIED] * 200
    assert jobs == 200
    assert batches < 200  # group commit: fewer transactions than requests


def test_same_event_twenty_times_at_once_applies_once(store: SQLiteStore) -> None:
    async def burst() -> list[Outcome]:
        results = await asyncio.gather(
            *[store.record([event("SM1", Status.DELIVERED)]) for _ in range(20)]
        )
        return [r[0].outcome for r in results]

    outcomes = asyncio.run(burst())
    assert outcomes.count(Outcome.APPLIED) == 1
    assert outcomes.count(Outcome.DUPLICATE) == 19


def test_a_failing_job_fails_alone_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    setup = connect(path)
    setup.execute("CREATE TABLE t (v INTEGER NOT NULL)")
    writer = Writer(lambda: connect(path), transactions=TRANSACTIONS)
    writer.start()
    good = writer.submit(lambda c: c.execute("INSERT INTO t VALUES (1)").rowcount)

    def bad(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("boom")

    failing = writer.submit(bad)
    after = writer.submit(lambda c: c.execute("INSERT INTO t VALUES (3)").rowcount)
    assert good.result(5) == 1 and after.result(5) == 1
    with pytest.raises(RuntimeError, match="boom"):
        failing.result(5)
    writer.stop()
    assert sorted(r[0] for r in setup.execute("SELECT v FROM t")) == [1, 3]


def test_a_locked_database_fails_the_batch_then_recovers(tmp_path: Path) -> None:
    s = SQLiteStore(str(tmp_path / "locked.db"), busy_timeout_ms=50)
    asyncio.run(s.open())
    blocker = connect(s.path)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            asyncio.run(s.record([event("SM1", Status.SENT)]))
    finally:
        blocker.execute("ROLLBACK")
    recorded = asyncio.run(s.record([event("SM1", Status.SENT)]))
    assert recorded[0].outcome is Outcome.APPLIED
    assert recorded[0].previous_status is None  # the failed batch left no trace
    count = blocker.execute("SELECT count(*) FROM events").fetchone()[0]
    asyncio.run(s.close())
    assert count == 1


def test_close_commits_what_was_already_submitted(tmp_path: Path) -> None:
    s = SQLiteStore(str(tmp_path / "drain.db"))
    asyncio.run(s.open())
    futures = [
        s._writer.submit(
            lambda c, i=i: c.execute(
                "INSERT INTO _receiver_health (id, checked_at) VALUES (?, 'x')", (i,)
            )
        )
        for i in range(1, 51)
    ]
    asyncio.run(s.close())
    assert all(f.done() and f.exception() is None for f in futures)
    conn = sqlite3.connect(s.path)
    assert conn.execute("SELECT count(*) FROM _receiver_health").fetchone()[0] == 50


def test_unmapped_status_is_kept_raw_and_changes_nothing(store: SQLiteStore) -> None:
    asyncio.run(store.record([event("SM1", Status.SENT)]))
    recorded = asyncio.run(store.record([event("SM1", None, raw="partially_delivered")]))
    assert recorded[0].outcome is Outcome.UNMAPPED
    message = asyncio.run(store.get_messages("SM1"))[0]
    events = asyncio.run(store.get_events("twilio", "SM1"))
    assert message["status"] == "sent"
    assert [e["provider_status"] for e in events] == ["sent", "partially_delivered"]
    assert events[1]["status"] is None


def test_dedupe_key_seen_before_is_a_duplicate(store: SQLiteStore) -> None:
    first = asyncio.run(store.record([event("SM1", Status.SENT, dedupe_key="k1")]))
    again = asyncio.run(store.record([event("SM1", Status.DELIVERED, dedupe_key="k1")]))
    assert first[0].outcome is Outcome.APPLIED
    assert again[0].outcome is Outcome.DUPLICATE
    assert asyncio.run(store.get_messages("SM1"))[0]["status"] == "sent"


def test_held_events_are_applied_in_order_at_registration(tmp_path: Path) -> None:
    s = SQLiteStore(str(tmp_path / "hold.db"), unknown_messages="hold")
    asyncio.run(s.open())
    try:
        for status in (Status.SENT, Status.UNDELIVERED, Status.FAILED, Status.SENT):
            assert asyncio.run(s.record([event("SM9", status)]))[0].outcome is (
                Outcome.PENDING_UNKNOWN
            )
        assert asyncio.run(s.get_messages("SM9")) == []
        reg = asyncio.run(s.register([Registration("twilio", "SM9", to_number="+1555")]))[0]
        assert (reg.created, reg.status, reg.pending_applied) == (True, "undelivered", 4)
        message = asyncio.run(s.get_messages("SM9"))[0]
        outcomes = [
            e["outcome"] for e in asyncio.run(s.get_events("twilio", message["message_id"]))
        ]
        assert outcomes == ["applied", "applied", "conflict", "regression"]
        again = asyncio.run(s.register([Registration("twilio", "SM9")]))[0]
        assert (again.created, again.pending_applied) == (False, 0)
    finally:
        asyncio.run(s.close())


def test_final_status_records_how_and_when_it_was_learned(store: SQLiteStore) -> None:
    asyncio.run(store.register([Registration("twilio", "SM1", sent_at="2026-01-01T00:00:00.000Z")]))
    asyncio.run(store.record([event("SM1", Status.DELIVERED)]))
    message = asyncio.run(store.get_messages("SM1"))[0]
    assert message["final"] is True and message["final_via"] == "callback"
    assert message["sent_at"] == "2026-01-01T00:00:00.000Z"
    assert message["final_at"] >= message["sent_at"]
    stats = asyncio.run(store.stats(MessageFilter()))
    assert stats["delivery_rate"] == 1.0
    assert stats["time_to_final_seconds"]["count"] == 1


def test_registration_ties_held_events_and_their_duplicates_to_the_message(
    tmp_path: Path,
) -> None:
    s = SQLiteStore(str(tmp_path / "hold2.db"), unknown_messages="hold")
    asyncio.run(s.open())
    try:
        held = event("SM7", Status.SENT, dedupe_key="d1", account="AC7", to_number="+1555")
        asyncio.run(s.record([held]))
        assert asyncio.run(s.record([held]))[0].outcome is Outcome.DUPLICATE
        asyncio.run(s.register([Registration("twilio", "SM7")]))
        message = asyncio.run(s.get_messages("SM7"))[0]
        outcomes = [
            e["outcome"] for e in asyncio.run(s.get_events("twilio", message["message_id"]))
        ]
    finally:
        asyncio.run(s.close())
    assert outcomes == ["applied", "duplicate"]
    assert (message["account"], message["to"], message["status"]) == ("AC7", "+1555", "sent")
