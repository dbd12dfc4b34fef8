"""SQLite's kept counts brought level once per write batch (receiver.store.sqlite.counts,
migration 0016): whatever one batch does to its messages (insert, change several times,
delete, insert again under a freed id), after its COMMIT every kept count is what counting
the messages afresh gives; and a write from outside the writer is counted by the next batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver.store.sqlite import SQLiteStore, counts

NOW = "2026-12-03T10:00:00.000Z"
LATER = "2026-12-03T10:00:07.250Z"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "store.db"))
    asyncio.run(s.open())
    yield s
    asyncio.run(s.close())


def _kept(conn: sqlite3.Connection) -> dict[str, set[tuple[Any, ...]]]:
    return {
        table: set(conn.execute(f"SELECT * FROM {table} WHERE n != 0").fetchall())
        for table in counts.TABLES
    }


def _level(path: str) -> dict[str, set[tuple[Any, ...]]]:
    """The kept counts, after checking them against a count made afresh (rolled back)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        kept = _kept(conn)
        conn.execute("BEGIN IMMEDIATE")
        counts.recount(conn)
        assert _kept(conn) == kept
        conn.execute("ROLLBACK")
        return kept
    finally:
        conn.close()


def _insert(conn: sqlite3.Connection, message_id: str, **columns: Any) -> int:
    row = {
        "provider": "twilio",
        "message_id": message_id,
        "status": "sent",
        "registered": 0,
        "is_final": 0,
        "created_at": NOW,
        "updated_at": NOW,
        "sent_at": NOW,
        **columns,
    }
    cur = conn.execute(
        f"INSERT INTO messages ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        list(row.values()),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def _final(conn: sqlite3.Connection, pk: int, status: str, error: str | None = None) -> None:
    conn.execute(
        "UPDATE messages SET status = ?, error_code = ?, is_final = 1, final_via = 'callback', "
        "final_at = ?, updated_at = ? WHERE id = ?",
        (status, error, LATER, LATER, pk),
    )


def _batch(store: SQLiteStore, *jobs: Callable[[sqlite3.Connection], Any]) -> None:
    """Run the jobs, in order, in one write batch of the store's writer."""
    store._writer.submit(lambda conn: [job(conn) for job in jobs]).result(timeout=60)


def test_one_batch_that_inserts_changes_and_deletes_leaves_the_counts_level(
    store: SQLiteStore,
) -> None:
    def before(conn: sqlite3.Connection) -> None:
        for i in range(6):
            _insert(conn, f"SMold{i}", provider="mesms" if i % 2 else "twilio")
        conn.execute("UPDATE messages SET message_id = 'u-1:' || id WHERE provider = 'mesms'")

    _batch(store, before)
    before_counts = _level(store.path)
    assert sum(n for (_, n) in before_counts["message_status_counts"]) == 6

    def first(conn: sqlite3.Connection) -> None:
        new = _insert(conn, "SMnew", to_number="+15550001")
        _final(conn, new, "delivered")  # inserted and changed in the batch
        conn.execute("UPDATE messages SET status = 'queued' WHERE message_id = 'SMold0'")
        _final(conn, 1, "undelivered", "30003")  # the same message changed twice
        _final(conn, 6, "expired")  # the newest before the batch (the mark's own id)

    def second(conn: sqlite3.Connection) -> None:
        doomed = _insert(conn, "SMdoomed")
        conn.execute("DELETE FROM messages WHERE id = ?", (doomed,))  # inserted and deleted
        conn.execute("DELETE FROM messages WHERE message_id = 'u-1:2'")  # an old one deleted
        _final(conn, 4, "delivered")  # a recipient of a send, final
        # The last id freed and taken again in the same batch.
        last = conn.execute("SELECT max(id) FROM messages").fetchone()[0]
        conn.execute("DELETE FROM messages WHERE id = ?", (last,))
        assert _insert(conn, "SMreused", status="failed", is_final=1, final_at=LATER) == last

    _batch(store, first, second)
    after = _level(store.path)
    assert after != before_counts
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM pending_counts").fetchone()[0] == 0
        statuses = dict(conn.execute("SELECT status, count(*) FROM messages GROUP BY 1"))
    assert dict(after["message_status_counts"]) == statuses


def test_a_write_from_outside_the_writer_is_counted_by_the_next_batch(
    store: SQLiteStore,
) -> None:
    _batch(store, lambda conn: [_insert(conn, f"SM{i}") for i in range(3)])
    with sqlite3.connect(store.path) as conn:  # by hand, as an operator might
        _final(conn, 2, "delivered")
        _insert(conn, "SMbyhand")
    with sqlite3.connect(store.path) as conn:
        assert dict(conn.execute("SELECT status, n FROM message_status_counts")) == {"sent": 3}
    _batch(store, lambda conn: None)  # any batch, even one that writes nothing
    assert dict(_level(store.path)["message_status_counts"]) == {"sent": 3, "delivered": 1}
