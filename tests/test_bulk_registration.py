"""A batch of registrations is inserted in one statement and counted once for the batch
(rules.register_batch over RowAccess.insert_registered, migration 0012), on every store: every
kept count (/metrics' status counts, a send's summary, the dashboard's rollups) stays what the
messages say, through the callbacks, polls and prunes that follow, and the batch reads as it
did row by row: ids in the batch's order, held events decided, duplicates found."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database
from stores import StoreFactory

from receiver.dashboard import figures
from receiver.engine import Status, StatusEvent, format_time
from receiver.store import MessageFilter, Registration, Store
from receiver.store.sqlite import SQLiteStore, schema

Run = Callable[[Awaitable[Any]], Any]
UUID = "6f1c2a9e-0000-4000-8000-00000000abcd"
APP = "http://127.0.0.1:9/push"
LATER = "2999-01-01T00:00:00.000Z"


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory(unknown_messages="hold")


def _event(provider: str, message_id: str, status: Status, **fields: Any) -> StatusEvent:
    return StatusEvent(provider, message_id, status.value, status, **fields)


def _listed(store: Store, run: Run) -> list[dict[str, Any]]:
    found, _ = run(store.list_messages(MessageFilter(limit=500)))
    return list(found)


def _counts_agree(store: Store, run: Run) -> dict[str, Any]:
    """Every kept count against the messages themselves (every me-sms message here is one of
    UUID's recipients)."""
    by_status = {s: n for s, n in run(store.stats(MessageFilter()))["by_status"].items() if n}
    kept = {status: n for status, n in run(store.count_by_status()).items() if n}
    assert kept == by_status
    recipients = run(store.stats(MessageFilter(provider="mesms")))["by_status"]
    recipients = {s: n for s, n in recipients.items() if n}
    summary = run(store.send_summary(UUID))
    assert summary is not None and summary["counts"] == recipients
    for window in figures.WINDOWS.values():
        since = figures.window_start(window, datetime.now(UTC))
        for provider in (None, "twilio", "mesms"):
            mine = figures.stats(run(store.dashboard_window(since, provider, 13)))
            assert mine == run(store.stats(MessageFilter(since=since, provider=provider)))
    return by_status


def test_a_mixed_batch_is_counted_as_its_rows_would_be(store: Store, run: Run) -> None:
    sent = format_time(datetime.now(UTC) - timedelta(seconds=30))
    # Known before the batch: a message registered earlier, and one with a held callback.
    run(store.register([Registration("twilio", "SMknown", to_number="+15550001")]))
    held = run(store.record([_event("twilio", "SMheld", Status.DELIVERED)]))
    assert held[0].outcome.value == "pending_unknown"
    batch = [
        Registration("twilio", "SMa", to_number="+15550002", sent_at=sent),
        Registration("mesms", f"{UUID}:4917000000001", metadata={"order": 1}),
        Registration("twilio", "SMknown", account="AC1"),  # an update, mid-batch
        Registration("twilio", "SMb", deadline_after=3600.0),
        Registration("twilio", "SMheld"),  # its held callback is decided now
        Registration("twilio", "SMa", account="AC2"),  # again: finds the first
        Registration("mesms", f"{UUID}:4917000000002", sent_at=sent),
        Registration("twilio", "SMc", deadline="2030-01-01T00:00:00.000Z"),
    ]
    results = run(store.register(batch))
    assert [(r.message_id, r.created, r.status) for r in results] == [
        ("SMa", True, "registered"),
        (f"{UUID}:4917000000001", True, "registered"),
        ("SMknown", False, "registered"),
        ("SMb", True, "registered"),
        ("SMheld", True, "delivered"),
        ("SMa", False, "registered"),
        (f"{UUID}:4917000000002", True, "registered"),
        ("SMc", True, "registered"),
    ]
    assert results[4].pending_applied == 1
    # Ids follow the batch (the newest first in the list).
    order = [m["message_id"] for m in reversed(_listed(store, run))]
    assert order == [
        "SMknown",
        "SMa",
        f"{UUID}:4917000000001",
        "SMb",
        "SMheld",
        f"{UUID}:4917000000002",
        "SMc",
    ]
    (a,) = run(store.get_messages("SMa"))
    assert a["account"] == "AC2" and a["sent_at"] == sent
    (recipient,) = run(store.get_messages(f"{UUID}:4917000000001"))
    assert recipient["metadata"] == {"order": 1}
    assert _counts_agree(store, run) == {"registered": 6, "delivered": 1}
    # A registration is no change: the log holds only the held callback's decision.
    changes = run(store.changes_after(0))
    data = [(c["data"]["message_id"], c["data"]["status"]) for c in changes]
    assert data == [("SMheld", "delivered")]
    # The deadlines of the ones inserted in bulk are kept: both missed, once.
    missed = run(store.decide_deadlines("2031-01-01T00:00:00.000Z"))
    assert sorted(missed) == [("twilio", "SMb"), ("twilio", "SMc")]

    # What follows keeps them true: callbacks, a give-up, a prune.
    run(
        store.record(
            [
                _event("twilio", "SMa", Status.DELIVERED),
                _event("mesms", f"{UUID}:4917000000001", Status.UNDELIVERED, error_code="7"),
                _event("twilio", "SMb", Status.SENT),
            ]
        )
    )
    run(store.record([_event("twilio", "SMc", Status.UNCONFIRMED, source="timeout")]))
    _counts_agree(store, run)
    run(store.prune(format_time(datetime.now(UTC) + timedelta(days=1))))
    assert _counts_agree(store, run) == {"registered": 2, "sent": 1}


def test_a_thousand_in_one_batch(store: Store, run: Run) -> None:
    batch = [
        Registration(
            "mesms" if i % 4 == 0 else "twilio",
            f"{UUID}:49170{i:08d}" if i % 4 == 0 else f"SM{i:032x}",
            to_number=f"+1555{i:07d}",
        )
        for i in range(1000)
    ]
    assert all(r.created for r in run(store.register(batch)))
    assert run(store.register(batch[:10])) and _counts_agree(store, run) == {"registered": 1000}
    assert run(store.send_summary(UUID))["recipients"] == 250


def test_text_with_nul_is_kept_whole_in_a_batch(store: Store, run: Run) -> None:
    """SQLite's JSON functions end a string at a NUL, which the store otherwise keeps (a
    schemathesis case registered "\u03a0\u0000" and got a 500): such rows are inserted one by one,
    with the same counts, and read back exactly."""
    odd = ["\u03a0\x00", "SM\x00tail", "\x00"]
    batch = [Registration("twilio", "SMplain", to_number="+1555\x000001")]
    batch += [Registration("twilio", message_id, to_number="+15550002") for message_id in odd]
    batch.append(Registration("mesms", f"{UUID}:4917000000001", metadata={"k": "a\x00b"}))
    results = run(store.register(batch))
    assert [(r.message_id, r.created) for r in results] == [(reg.message_id, True) for reg in batch]
    stored = {(m["message_id"], m["to"], str(m["metadata"])) for m in _listed(store, run)}
    assert stored == {(reg.message_id, reg.to_number, str(reg.metadata)) for reg in batch}
    assert _counts_agree(store, run) == {"registered": 5}
    again = run(store.register(batch[1:3]))
    assert [r.created for r in again] == [False, False]


def test_a_database_from_before_0012_keeps_its_counts_and_pushes(tmp_path: Path, run: Run) -> None:
    """SQLite upgraded from 0011: its counts go on from where they were, and a push owed
    before (its body kept whole) is sent and shown as it was kept."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrations.apply(Database(conn), stop_before="0012_bulk_registration")
    now = format_time(datetime.now(UTC))
    conn.execute(
        "INSERT INTO messages (provider, message_id, status, registered, is_final, created_at, "
        "updated_at) VALUES ('twilio', 'SMold', 'registered', 1, 0, ?, ?)",
        (now, now),
    )
    kept_body = '{"type":"message.status_changed","timestamp":"x","data":{"status":"delivered"}}'
    conn.execute(
        "INSERT INTO pushes (webhook_id, endpoint, type, message_pk, provider, message_id, "
        "payload, status, created_at, next_attempt_at) VALUES ('msg_old', ?, "
        "'message.status_changed', 1, 'twilio', 'SMold', ?, 'pending', ?, ?)",
        (APP, kept_body, now, now),
    )
    conn.close()
    store = SQLiteStore(str(path))
    assert store.migrate()[0] == "0012_bulk_registration"  # and the later ones
    run(store.open())
    try:
        run(store.register([Registration("twilio", f"SMnew{i}") for i in range(5)]))
        run(store.register([Registration("twilio", "SMold"), Registration("mesms", f"{UUID}:1")]))
        assert _counts_agree(store, run) == {"registered": 7}
        assert run(store.get_push("msg_old"))["payload"] == kept_body
        jobs = run(
            store.claim_pushes(owner="a", now=LATER, lease_until=LATER, endpoints=[APP], limit=10)
        )
        assert [(j.webhook_id, j.payload) for j in jobs] == [("msg_old", kept_body)]
    finally:
        run(store.close())
