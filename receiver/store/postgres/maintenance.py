"""Retention and backup on PostgreSQL: prune with SQLite's answers; backups are pg_dump's job."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[Any]

# A final message's age is taken from its final time; updated_at covers any row without one.
_PRUNABLE = "is_final = 1 AND coalesce(final_at, updated_at) < %s"

BACKUP_ADVICE = (
    "receiver backup copies a SQLite file; this store is PostgreSQL, whose own tool makes a "
    "consistent copy while the service runs: "
    'pg_dump --format=custom --file=receiver.dump "$DATABASE_URL" '
    '(restore with pg_restore --clean --dbname "$DATABASE_URL" receiver.dump), or use your '
    "provider's backups (Heroku: heroku pg:backups:capture)"
)


async def prunable_ids(
    conn: psycopg.AsyncConnection[Any], after: tuple[str, int], older_than: str, batch_size: int
) -> list[tuple[str, int]]:
    """The next prunable messages' (final time, id) after `after`, oldest first, on
    idx_messages_prunable (the expression and the WHERE match the index's)."""
    cur = await conn.execute(
        "SELECT coalesce(final_at, updated_at), id FROM messages "
        f"WHERE {_PRUNABLE} AND (coalesce(final_at, updated_at), id) > (%s, %s) "
        "ORDER BY coalesce(final_at, updated_at), id LIMIT %s",
        (older_than, after[0], after[1], batch_size),
    )
    rows = await cur.fetchall()
    return [(row[0], row[1]) for row in rows]


def delete_messages(conn: Conn, ids: list[int], older_than: str) -> tuple[int, int]:
    """Delete those of `ids` still prunable (a late callback may have moved one), with their
    events; (messages, events) deleted.

    The condition is checked on each row as it is deleted, after any writer holding it has
    committed, and the events go after the messages: an event a callback added meanwhile is
    seen, and goes with its message.
    """
    still = [
        row[0]
        for row in conn.execute(
            f"DELETE FROM messages WHERE id = ANY(%s) AND {_PRUNABLE} RETURNING id",
            (ids, older_than),
        ).fetchall()
    ]
    if not still:
        return 0, 0
    conn.execute("DELETE FROM message_parts WHERE parent_pk = ANY(%s)", (still,))  # 0013
    # A count read back rather than rowcount, which pipeline mode leaves unknown until later.
    found = conn.execute(
        "WITH gone AS (DELETE FROM events WHERE message_pk = ANY(%s) RETURNING 1) "
        "SELECT count(*) FROM gone",
        (still,),
    ).fetchone()
    return len(still), int(found[0]) if found else 0
