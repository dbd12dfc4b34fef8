"""The poll queue's SQL: the reads and writes of a claim (the rules decide which rows and the
leases: rules.claim_due), and the queue's reads for the scheduler and the metrics.

Claims run in the writer's BEGIN IMMEDIATE batch, so a second claimer, another process
included, waits for the lock and then finds the rows leased.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from receiver.store.rows import select_due, select_group
from receiver.store.rules import Queued


def due(conn: sqlite3.Connection, provider: str, now: str, limit: int) -> list[Queued]:
    return select_due(conn, provider, now, limit)


def group(conn: sqlite3.Connection, provider: str, prefix: str) -> list[Queued]:
    # Without statistics SQLite would rather walk the provider's whole due queue
    # (idx_messages_due) than the prefix's range of the message id index.
    return select_group(
        conn, provider, prefix, table="messages INDEXED BY idx_messages_message_id_provider"
    )


def put_off(conn: sqlite3.Connection, until: Sequence[tuple[int, str | None]]) -> None:
    conn.executemany(
        "UPDATE messages SET next_poll_at = ? WHERE id = ?", [(at, pk) for pk, at in until]
    )


def lease(conn: sqlite3.Connection, pks: Sequence[int], owner: str, until: str) -> None:
    conn.executemany(
        "UPDATE messages SET next_poll_at = ?, poll_lease = ? WHERE id = ?",
        [(until, owner, pk) for pk in pks],
    )


# -- reads, on the read connections -----------------------------------------------------------


def queued_providers(conn: sqlite3.Connection) -> list[str]:
    # One index seek per provider (a skip scan), however many messages wait.
    found: list[str] = []
    while True:
        row = conn.execute(
            "SELECT min(provider) FROM messages WHERE next_poll_at IS NOT NULL AND provider > ?",
            (found[-1] if found else "",),
        ).fetchone()
        if row is None or row[0] is None:
            return found
        found.append(row[0])


def next_due(conn: sqlite3.Connection, provider: str) -> str | None:
    row = conn.execute(
        "SELECT min(next_poll_at) FROM messages WHERE provider = ? AND next_poll_at IS NOT NULL",
        (provider,),
    ).fetchone()
    return row[0] if row else None


def due_count(conn: sqlite3.Connection, provider: str, now: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM messages "
        "WHERE provider = ? AND next_poll_at IS NOT NULL AND next_poll_at <= ?",
        (provider, now),
    ).fetchone()
    return int(row[0])
