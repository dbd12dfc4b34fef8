"""Test data written straight into a database file, for volumes the API would take long to load.

Rows are shaped like the ones the service writes (messages plus their events); the schema is
the service's own, applied by its migrations first.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from receiver.engine import is_final
from receiver.store.base import format_time
from receiver.store.sqlite import SQLiteStore


def seed_messages(
    path: str | Path,
    count: int,
    *,
    prefix: str = "SMseed",
    status: str = "delivered",
    age_days: float = 0,
    events: int = 2,
    to_number: str = "+15550000001",
) -> list[str]:
    """Insert `count` messages (final at `status`, `age_days` ago) with `events` events each;
    their message ids, in insertion order."""
    SQLiteStore(str(path)).migrate()
    when = format_time(datetime.now(UTC) - timedelta(days=age_days))
    final = is_final(status)
    ids = [f"{prefix}{n:08d}" for n in range(count)]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        first_pk = (conn.execute("SELECT max(id) FROM messages").fetchone()[0] or 0) + 1
        conn.executemany(
            "INSERT INTO messages (provider, message_id, status, provider_status, to_number, "
            "from_number, registered, is_final, final_via, created_at, updated_at, sent_at, "
            "final_at) VALUES ('twilio', ?, ?, ?, ?, '+15017122661', 1, ?, ?, ?, ?, ?, ?)",
            (
                (
                    message_id,
                    status,
                    status,
                    to_number,
                    int(final),
                    "callback" if final else None,
                    when,
                    when,
                    when,
                    when if final else None,
                )
                for message_id in ids
            ),
        )
        conn.executemany(
            "INSERT INTO events (provider, message_id, message_pk, source, provider_status, "
            "status, outcome, received_at, body) "
            "VALUES ('twilio', ?, ?, 'callback', ?, ?, 'applied', ?, 'MessageStatus=x')",
            (
                (message_id, first_pk + i, status, status, when)
                for i, message_id in enumerate(ids)
                for _ in range(events)
            ),
        )
    return ids
