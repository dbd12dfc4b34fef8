"""The dashboard's reads (receiver.store.dashboard, migration 0011's kept counts) on every
store: a window's figures are /v1/stats's for the same `since`, through changes and prunes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from receiver.dashboard import figures
from receiver.engine import Status, StatusEvent, format_time
from receiver.store import MessageFilter, Registration, Store
from receiver.store.sqlite import SQLiteStore, schema

Run = Callable[[Awaitable[Any]], Any]
FAILED = ("undelivered", "failed", "rejected", "expired")
# Seconds from sent_at to now: times to final in many of the kept bins, one negative (a clock
# ahead at the sender), one under a millisecond, a day.
SENT_AGO = (30, -5, 0, 0.0004, 0.3, 7, 45, 540, 7200, 86400 + 0.123)


def _event(provider: str, message_id: str, status: Status, **fields: Any) -> StatusEvent:
    return StatusEvent(provider, message_id, status.value, status, **fields)


def _fill(store: Store, run: Run) -> None:
    """Twenty messages at two providers: delivered, failed with codes, still waiting."""
    now = datetime.now(UTC)
    registrations = [
        Registration(
            provider="twilio" if i % 3 else "telecom23",
            message_id=f"SM{i:04d}/part",
            to_number=f"+1555000{i % 4}",
            sent_at=format_time(now - timedelta(seconds=SENT_AGO[i % len(SENT_AGO)])),
        )
        for i in range(20)
    ]
    run(store.register(registrations))
    events = []
    for i, reg in enumerate(registrations):
        if i % 5 == 0:
            continue  # still sent: waits in the poll queue
        if i % 4 == 0:
            events.append(
                _event(reg.provider, reg.message_id, Status.UNDELIVERED, error_code="30003")
            )
        elif i % 7 == 0:
            events.append(_event(reg.provider, reg.message_id, Status.FAILED, error_code="30007"))
        else:
            events.append(_event(reg.provider, reg.message_id, Status.DELIVERED))
    run(store.record(events))
    run(store.record([_event("twilio", "SM0001/part", Status.SENT)]))  # a regression: no change


def _agree(store: Store, run: Run, since: str, provider: str | None = None) -> dict[str, Any]:
    kept = run(store.dashboard_window(since, provider, 13))
    mine = figures.stats(kept)
    theirs = run(store.stats(MessageFilter(since=since, provider=provider)))
    assert mine == theirs
    return mine


def test_window_figures_are_v1_stats_figures(store: Store, run: Run) -> None:
    _fill(store, run)
    since = figures.window_start(figures.WINDOWS["1h"], datetime.now(UTC))
    summary = _agree(store, run, since)
    assert summary["total"] == 20
    assert summary["by_status"]["registered"] == 4
    assert summary["time_to_final_seconds"]["count"] == 16
    for window in figures.WINDOWS.values():
        # The first day from the exact times, the next ones from the daily bins.
        for provider in (None, "twilio", "telecom23", "mesms"):
            _agree(store, run, figures.window_start(window, datetime.now(UTC)), provider)
    # A window starting after every message: nothing.
    later = figures.window_start(figures.WINDOWS["1h"], datetime.now(UTC) + timedelta(hours=2))
    assert _agree(store, run, later)["total"] == 0


@pytest.mark.parametrize("window", ["1h", "24h", "30d"])
def test_final_via_and_error_codes_are_counted(store: Store, run: Run, window: str) -> None:
    """By 10-minute bucket, by hour, and by day (a month's window reads the daily counts)."""
    _fill(store, run)
    chosen = figures.WINDOWS[window]
    since = figures.window_start(chosen, datetime.now(UTC))
    kept = run(store.dashboard_window(since, None, chosen.chart_chars))
    assert kept.final_via == {"callback": 16, "none": 4}
    listed, _ = run(store.list_messages(MessageFilter(limit=100)))
    failed = [m for m in listed if m["status"] in FAILED]
    expected: dict[tuple[str, str], int] = {}
    for m in failed:
        expected[(m["provider"], m["error_code"])] = (
            expected.get((m["provider"], m["error_code"]), 0) + 1
        )
    assert {(p, code): n for p, code, n in kept.errors} == expected
    # The chart's bars add up to the window's total, each named as the window's bars are.
    assert sum(n for _, _, n in kept.over_time) == 20
    assert {len(bar) for bar, _, _ in kept.over_time} == {chosen.chart_chars}


def test_changes_and_prunes_keep_the_counts_true(store: Store, run: Run) -> None:
    _fill(store, run)
    since = figures.window_start(figures.WINDOWS["1h"], datetime.now(UTC))
    # The waiting ones become final by a poll and by a give-up.
    run(store.record([_event("telecom23", "SM0000/part", Status.DELIVERED, source="poll")]))
    run(store.record([_event("twilio", "SM0005/part", Status.UNCONFIRMED, source="timeout")]))
    summary = _agree(store, run, since)
    kept = run(store.dashboard_window(since, None, 16))
    assert kept.final_via.get("poll") == 1 and kept.final_via.get("timeout") == 1
    # Prune every final message: the kept counts lose them too.
    run(store.prune(format_time(datetime.now(UTC) + timedelta(days=1))))
    after = _agree(store, run, since)
    assert after["total"] == summary["total"] - summary["final"]
    assert run(store.dashboard_window(since, None, 16)).final_bins == []


def test_poll_queue_and_recent_failures(store: Store, run: Run) -> None:
    _fill(store, run)
    now = datetime.now(UTC)
    queue = run(store.dashboard_queue(format_time(now + timedelta(days=1))))
    assert sum(waiting for _, waiting, _, _ in queue) == 4
    assert all(due == waiting and soonest for _, waiting, due, soonest in queue)
    queue_now = run(store.dashboard_queue(format_time(now - timedelta(days=1))))
    assert all(due == 0 for _, _, due, _ in queue_now)
    since = figures.window_start(figures.WINDOWS["24h"], now)
    recent = run(store.dashboard_recent(FAILED, since, None, 3))
    listed, _ = run(store.list_messages(MessageFilter(limit=100)))
    newest_failed = [m["message_id"] for m in listed if m["status"] in FAILED][:3]
    assert [m["message_id"] for m in recent] == newest_failed
    only = run(store.dashboard_recent(FAILED, since, "telecom23", 10))
    assert only and {m["provider"] for m in only} == {"telecom23"}


def test_an_upgrade_counts_the_messages_already_there(tmp_path: Path) -> None:
    """Migration 0011 fills its kept counts from the messages a database already holds."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrations.apply(Database(conn), stop_before="0011_dashboard_rollups")
    now = datetime.now(UTC)
    for i, status in enumerate(("delivered", "delivered", "undelivered", "sent")):
        final = status != "sent"
        conn.execute(
            "INSERT INTO messages (provider, message_id, status, error_code, registered, "
            "is_final, final_via, created_at, updated_at, sent_at, final_at) "
            "VALUES ('twilio', ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            (
                f"SM{i}",
                status,
                "30003" if status == "undelivered" else None,
                int(final),
                "callback" if final else None,
                format_time(now),
                format_time(now),
                format_time(now - timedelta(seconds=10 + i)),
                format_time(now) if final else None,
            ),
        )
    conn.close()
    store = SQLiteStore(str(path))
    assert store.migrate() == [
        "0011_dashboard_rollups",
        "0012_bulk_registration",
        "0013_message_parts",
        "0015_part_events",
        "0016_counted_per_batch",
    ]

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        await store.open()
        try:
            since = figures.window_start(figures.WINDOWS["1h"], now)
            kept = await store.dashboard_window(since, None, 16)
            return figures.stats(kept), await store.stats(MessageFilter(since=since))
        finally:
            await store.close()

    mine, theirs = asyncio.run(both())
    assert mine == theirs and mine["total"] == 4 and mine["delivery_rate"] == round(2 / 3, 4)
