"""The push outbox on PostgreSQL: claims shared by several instances, and its reads.

A claim locks the pushes it takes with FOR UPDATE SKIP LOCKED (another instance's claim skips
them, so each push goes out from one instance) and leases them to its database session,
named by the session's pid and start time. A lease whose session is gone (the instance died,
or lost its connection) is over at once: an instance restarted after a crash sends what was
owed without waiting for a lease to run out. Instances must connect as one role, so each sees
the others' sessions in pg_stat_activity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from receiver.store import outbox
from receiver.store.base import PushJob

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]
MARK = "%s"

_SESSION = "a.pid::text || '@' || extract(epoch FROM a.backend_start)::text"
_OWN_SESSION = f"(SELECT {_SESSION} FROM pg_stat_activity a WHERE a.pid = pg_backend_pid())"
_STALE = (
    " OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
    f"WHERE a.backend_start IS NOT NULL AND {_SESSION} = p.lease_owner)"
)


def insert_push(conn: Conn, row: Any) -> None:
    outbox.insert_push(conn, row, MARK)


def insert_change_pushes(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
    outbox.insert_change_pushes(conn, rows, MARK)


def message_metadata(conn: Conn, pk: int) -> dict[str, Any] | None:
    return outbox.message_metadata(conn, pk, MARK)


def claim(
    conn: Conn,
    *,
    owner: str,  # unused: the owner is this transaction's session
    now: str,
    lease_until: str,
    endpoints: Sequence[str],
    limit: int,
) -> list[PushJob]:
    if not endpoints:
        return []
    where = outbox.CLAIMABLE.format(endpoints=", ".join("?" * len(endpoints)), stale=_STALE)
    sql = (
        f"WITH picked AS (SELECT p.id FROM pushes p WHERE {where} "
        "ORDER BY p.next_attempt_at, p.id LIMIT ? FOR UPDATE OF p SKIP LOCKED) "
        f"UPDATE pushes SET lease_owner = {_OWN_SESSION}, lease_until = ? FROM picked "
        f"WHERE pushes.id = picked.id RETURNING "
        + ", ".join(f"pushes.{c.strip()}" for c in outbox.JOB_COLUMNS.split(","))
    )
    rows = conn.execute(
        sql.replace("?", MARK), (now, *endpoints, now, limit, lease_until)
    ).fetchall()
    return sorted((outbox.job(row) for row in rows), key=lambda j: j.pk)


def release(conn: Conn, dead: Any) -> int:
    """Nothing to do: a dead session's leases are over by themselves (see the module)."""
    return 0


# -- reads, on the pool ------------------------------------------------------------------------


async def _all(conn: AsyncConn, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    cur = await conn.execute(sql.replace("?", MARK), params)
    return await cur.fetchall()


async def list_pushes(
    conn: AsyncConn,
    status: str | None,
    since: str | None,
    before_id: int | None,
    limit: int,
) -> tuple[list[dict[str, Any]], int | None]:
    sql, params = outbox.list_sql(status, since, before_id, limit)
    return outbox.page(await _all(conn, sql, params), limit)


async def get_push(conn: AsyncConn, webhook_id: str) -> dict[str, Any] | None:
    rows = await _all(
        conn,
        f"SELECT {outbox.PUBLIC_COLUMNS}, {outbox.BODY_COLUMNS} FROM pushes WHERE webhook_id = ?",
        (webhook_id,),
    )
    if not rows:
        return None
    row = rows[0]
    attempts = await _all(
        conn,
        f"SELECT {outbox.ATTEMPT_COLUMNS} FROM push_attempts WHERE push_id = ? ORDER BY id",
        (row[0],),
    )
    return {
        **outbox.public(row),
        "payload": outbox.body(row[13:]),
        "attempts": list(map(outbox.attempt, attempts)),
    }


async def push_stats(conn: AsyncConn) -> dict[str, Any]:
    backlog = await _all(conn, "SELECT count(*) FROM pushes WHERE status = 'pending'")
    oldest = await _all(
        conn, "SELECT created_at FROM pushes WHERE status = 'pending' ORDER BY id LIMIT 1"
    )
    disabled = await _all(conn, "SELECT url, disabled_at, reason FROM push_endpoints")
    return {
        "backlog": int(backlog[0][0]),
        "oldest_created_at": oldest[0][0] if oldest else None,
        "disabled": {row[0]: {"disabled_at": row[1], "reason": row[2]} for row in disabled},
    }


async def next_push_due(conn: AsyncConn) -> str | None:
    rows = await _all(conn, "SELECT min(next_attempt_at) FROM pushes WHERE status = 'pending'")
    return rows[0][0] if rows else None
