"""The SQLite store's own side: schema and migrations, durability pragmas, query plans, the
writer inside the store. What every store does is in test_store.py and test_poll_queue.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database

from receiver.engine import Outcome, Status, StatusEvent, format_time
from receiver.store import StoreUnavailable
from receiver.store.sqlite import SQLiteStore, connect, schema
from receiver.store.sqlite.connection import TRANSACTIONS
from receiver.store.writer import Writer

MIGRATIONS = [
    "0001_messages_and_events",
    "0002_prunable_index",
    "0003_status_counts",
    "0004_poll_queue",
    "0006_messages_one_id_index",
    "0007_push_outbox",
    "0008_deadlines_and_changes",
    "0009_registered_sent_at",
    "0010_sends",
    "0011_dashboard_rollups",
    "0012_bulk_registration",
    "0013_message_parts",
    "0015_part_events",
    "0016_counted_per_batch",
]
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return format_time(T0 + timedelta(seconds=seconds))


def event(message_id: str, status: Status) -> StatusEvent:
    return StatusEvent("twilio", message_id, status.value, status)


def column(store: SQLiteStore, message_id: str, name: str) -> object:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(
            f"SELECT {name} FROM messages WHERE message_id = ?", (message_id,)
        ).fetchone()[0]


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
    assert s.migrate() == [
        "0004_poll_queue",
        "0006_messages_one_id_index",
        "0007_push_outbox",
        "0008_deadlines_and_changes",
        "0009_registered_sent_at",
        "0010_sends",
        "0011_dashboard_rollups",
        "0012_bulk_registration",
        "0013_message_parts",
        "0015_part_events",
        "0016_counted_per_batch",
    ]
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
