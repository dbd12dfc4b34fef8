"""The push outbox on SQLite: claims (in the writer's BEGIN IMMEDIATE batch, so a second
claimer, another process included, waits and then finds the rows leased), and its reads.

A claim's owner is this process (host, pid and a token of this start): a process that finds
leases of a dead one, or of its own earlier self, releases them when it starts, so pushes
owed at a crash go out at once rather than when the lease runs out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from receiver.store import outbox
from receiver.store.base import PushJob

insert_push = outbox.insert_push
insert_change_pushes = outbox.insert_change_pushes
message_metadata = outbox.message_metadata


def claim(
    conn: sqlite3.Connection,
    *,
    owner: str,
    now: str,
    lease_until: str,
    endpoints: Sequence[str],
    limit: int,
) -> list[PushJob]:
    if not endpoints:
        return []
    where = outbox.CLAIMABLE.format(endpoints=", ".join("?" * len(endpoints)), stale="")
    rows = conn.execute(
        # The due index, oldest first, reads only the due pushes, however long the backlog:
        # without statistics the planner would take idx_pushes_status and sort them all.
        f"SELECT {outbox.JOB_COLUMNS} FROM pushes p INDEXED BY idx_pushes_due WHERE {where} "
        "ORDER BY p.next_attempt_at, p.id LIMIT ?",
        (now, *endpoints, now, limit),
    ).fetchall()
    conn.executemany(
        "UPDATE pushes SET lease_owner = ?, lease_until = ? WHERE id = ?",
        [(owner, lease_until, row[0]) for row in rows],
    )
    return [outbox.job((*tuple(row)[:5], owner, *tuple(row)[6:])) for row in rows]


def release(conn: sqlite3.Connection, dead: Callable[[str], bool]) -> int:
    """Release the leases whose owner is `dead`; how many pushes."""
    owners = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT lease_owner FROM pushes "
            "WHERE status = 'pending' AND lease_owner IS NOT NULL"
        )
    ]
    released = 0
    for owner in filter(dead, owners):
        released += conn.execute(
            "UPDATE pushes SET lease_owner = NULL, lease_until = NULL "
            "WHERE status = 'pending' AND lease_owner = ?",
            (owner,),
        ).rowcount
    return released


# -- reads, on the read connections -----------------------------------------------------------


def list_pushes(
    conn: sqlite3.Connection,
    status: str | None,
    since: str | None,
    before_id: int | None,
    limit: int,
) -> tuple[list[dict[str, Any]], int | None]:
    sql, params = outbox.list_sql(status, since, before_id, limit)
    return outbox.page(conn.execute(sql, params).fetchall(), limit)


def get_push(conn: sqlite3.Connection, webhook_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {outbox.PUBLIC_COLUMNS}, {outbox.BODY_COLUMNS} FROM pushes WHERE webhook_id = ?",
        (webhook_id,),
    ).fetchone()
    if row is None:
        return None
    attempts = conn.execute(
        f"SELECT {outbox.ATTEMPT_COLUMNS} FROM push_attempts WHERE push_id = ? ORDER BY id",
        (row[0],),
    ).fetchall()
    return {
        **outbox.public(row),
        "payload": outbox.body(row[13:]),
        "attempts": list(map(outbox.attempt, attempts)),
    }


def push_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """The backlog, the oldest pending push's creation time, and the disabled endpoints."""
    backlog = conn.execute("SELECT count(*) FROM pushes WHERE status = 'pending'").fetchone()[0]
    oldest = conn.execute(
        "SELECT created_at FROM pushes WHERE status = 'pending' ORDER BY id LIMIT 1"
    ).fetchone()
    disabled = conn.execute("SELECT url, disabled_at, reason FROM push_endpoints").fetchall()
    return {
        "backlog": int(backlog),
        "oldest_created_at": oldest[0] if oldest else None,
        "disabled": {row[0]: {"disabled_at": row[1], "reason": row[2]} for row in disabled},
    }


def next_push_due(conn: sqlite3.Connection) -> str | None:
    """When the soonest pending push is due (the first entry of idx_pushes_due); None when
    there is none. It may be leased or wait behind an older one: the dispatcher looks again."""
    row = conn.execute(
        "SELECT min(next_attempt_at) FROM pushes WHERE status = 'pending'"
    ).fetchone()
    return row[0] if row else None
