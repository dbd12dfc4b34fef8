"""The ledger's SQL (receiver.ledger, `receiver verify`): pages of messages with their events,
and a message read again, locked, inside a repair's write."""

from __future__ import annotations

from typing import Any

import psycopg

from receiver.ledger import LedgerEvent, LedgerRow, Locked, page_from_rows

# In the order of receiver.ledger.LedgerRow and LedgerEvent.
MESSAGE_COLUMNS = (
    "id, provider, message_id, status, provider_status, is_final <> 0 AS final, final_via, "
    "sent_at, final_at, registered_sent_at, created_at"
)
EVENT_COLUMNS = "id, source, provider_status, status, dedupe_key, received_at, resolved_at"

# One statement, so one snapshot (read committed takes one per statement) of the messages and
# their events while the service writes. LATERAL: each message's events are read on their
# (message_pk, id) index; a plain join may be planned as a scan of every event for each page.
_EVENT = [c.strip() for c in EVENT_COLUMNS.split(",")]
_PAGE = (
    f"SELECT m.*, {', '.join('e.e_' + c for c in _EVENT)} "
    f"FROM (SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > %s ORDER BY id LIMIT %s) m "
    f"LEFT JOIN LATERAL (SELECT {', '.join(f'{c} AS e_{c}' for c in _EVENT)} "
    "FROM events WHERE message_pk = m.id AND message_id = m.message_id AND is_part IS NULL "
    "ORDER BY id) e ON true "
    "ORDER BY m.id, e.e_id"
)


async def page(
    conn: psycopg.AsyncConnection[Any], *, after: int, size: int
) -> list[tuple[LedgerRow, list[LedgerEvent]]]:
    """Up to `size` messages with id > `after`, in id order, each with its events by id."""
    async with conn.transaction():
        # Without statistics (a database just copied or restored) the plan's cost estimate
        # is high enough to JIT-compile it, a second per page for a query of milliseconds.
        await conn.execute("SET LOCAL jit = off")
        cur = await conn.execute(_PAGE, (after, size))
        return page_from_rows(await cur.fetchall())


def locked(conn: psycopg.Connection[Any], pk: int) -> Locked | None:
    """The message `pk` (its row locked: the writer holds the message's advisory lock already,
    and a prune deleting it waits or is waited for) and its events."""
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS}, next_poll_at FROM messages WHERE id = %s FOR UPDATE", (pk,)
    ).fetchone()
    if row is None:
        return None
    events = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE message_pk = %s AND message_id = %s "
        "AND is_part IS NULL ORDER BY id",
        (pk, row[2]),
    ).fetchall()
    return Locked(LedgerRow(*row[:11]), [LedgerEvent(*e) for e in events], row[11])
