"""The ledger's SQL (receiver.ledger, `receiver verify`): pages of messages with their events,
and a message read again inside a repair's write."""

from __future__ import annotations

import sqlite3

from receiver.ledger import LedgerEvent, LedgerRow, Locked, page_from_rows

# In the order of receiver.ledger.LedgerRow and LedgerEvent.
MESSAGE_COLUMNS = (
    "id, provider, message_id, status, provider_status, is_final, final_via, sent_at, "
    "final_at, registered_sent_at, created_at"
)
EVENT_COLUMNS = "id, source, provider_status, status, dedupe_key, received_at, resolved_at"

# One statement, so one snapshot of the messages and their events while the service writes;
# the events are found on their (message_pk, id) index. A multipart message (receiver.store.parts)
# replays its own events only, the folds of its parts it recorded; its parts' carry their ids.
_PAGE = (
    f"SELECT {', '.join('m.' + c for c in MESSAGE_COLUMNS.split(', '))}, "
    f"{', '.join('e.' + c for c in EVENT_COLUMNS.split(', '))} "
    f"FROM (SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > ? ORDER BY id LIMIT ?) m "
    "LEFT JOIN events e ON e.message_pk = m.id AND e.message_id = m.message_id "
    "AND e.is_part IS NULL "  # a first part's under the message's id (migration 0015)
    "ORDER BY m.id, e.id"
)


def page(
    conn: sqlite3.Connection, *, after: int, size: int
) -> list[tuple[LedgerRow, list[LedgerEvent]]]:
    """Up to `size` messages with id > `after`, in id order, each with its events by id."""
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: a million messages make two million rows
    return page_from_rows(cur.execute(_PAGE, (after, size)))


def locked(conn: sqlite3.Connection, pk: int) -> Locked | None:
    """The message `pk` and its events, inside the writer's transaction (SQLite has one
    writer: what it reads holds until its commit without a lock)."""
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS}, next_poll_at FROM messages WHERE id = ?", (pk,)
    ).fetchone()
    if row is None:
        return None
    events = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE message_pk = ? AND message_id = ? "
        "AND is_part IS NULL ORDER BY id",
        (pk, row[2]),
    ).fetchall()
    return Locked(LedgerRow(*tuple(row)[:11]), [LedgerEvent(*e) for e in events], row[11])
