"""Reads on PostgreSQL: a message with its history, the list with its keyset cursor, stats,
export chunks, the status counts. The answers are SQLite's, row for row.

Each is a coroutine over a connection of the store's async pool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import psycopg

from receiver import engine
from receiver.engine import Status
from receiver.store.base import MessageFilter

Conn = psycopg.AsyncConnection[Any]

MESSAGE_COLUMNS = (
    "id, provider, message_id, account, status, provider_status, error_code, to_number, "
    "from_number, metadata, registered, is_final, final_via, created_at, updated_at, sent_at, "
    "final_at, final_reason, poll_attempts, last_polled_at, last_poll_result, next_poll_at"
)
EXPORT_COLUMNS = (
    "id, provider, message_id, status, provider_status, error_code, is_final, final_via, "
    "to_number, from_number, account, registered, metadata, created_at, updated_at, sent_at, "
    "final_at, final_reason"
)
EVENT_COLUMNS = (
    "id, source, provider_status, status, previous_status, outcome, error_code, event_time, "
    "received_at, resolved_at, dedupe_key, headers, body"
)


def message_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": row["provider"],
        "message_id": row["message_id"],
        "status": row["status"],
        "provider_status": row["provider_status"],
        "error_code": row["error_code"],
        "final": bool(row["is_final"]),
        "final_via": row["final_via"],
        "to": row["to_number"],
        "from": row["from_number"],
        "account": row["account"],
        "registered": bool(row["registered"]),
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "sent_at": row["sent_at"],
        "final_at": row["final_at"],
        "final_reason": row["final_reason"],
        "poll": {
            "attempts": row["poll_attempts"],
            "last_polled_at": row["last_polled_at"],
            "last_result": row["last_poll_result"],
            "next_poll_at": row["next_poll_at"],
        },
    }


def event_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "source": row["source"],
        "provider_status": row["provider_status"],
        "status": row["status"],
        "previous_status": row["previous_status"],
        "outcome": row["outcome"],
        "error_code": row["error_code"],
        "event_time": row["event_time"],
        "received_at": row["received_at"],
        "resolved_at": row["resolved_at"],
        "dedupe_key": row["dedupe_key"],
        "headers": json.loads(row["headers"]) if row["headers"] else {},
        "body": row["body"],
    }


async def _dicts(cur: psycopg.AsyncCursor[Any]) -> list[dict[str, Any]]:
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


def filter_sql(f: MessageFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status", f.status),
        ("provider", f.provider),
        ("to_number", f.to_number),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if f.since is not None:
        where.append("created_at >= %s")
        params.append(f.since)
    if f.until is not None:
        where.append("created_at < %s")
        params.append(f.until)
    return where, params


async def _one(conn: Conn, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def _all(conn: Conn, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def get_messages(conn: Conn, message_id: str, provider: str | None) -> list[dict[str, Any]]:
    sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = %s"
    params: list[Any] = [message_id]
    if provider is not None:
        sql += " AND provider = %s"
        params.append(provider)
    # SQLite answers in rowid order without an ORDER BY; id is the same order here.
    cur = await conn.execute(sql + " ORDER BY id LIMIT 10", params)
    return [message_dict(r) for r in await _dicts(cur)]


async def get_events(conn: Conn, provider: str, message_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE message_pk = "
        "(SELECT id FROM messages WHERE provider = %s AND message_id = %s) ORDER BY id",
        (provider, message_id),
    )
    return [event_dict(r) for r in await _dicts(cur)]


async def list_messages(conn: Conn, f: MessageFilter) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first; keyset-paginated on id, so inserts never shift a page."""
    where, params = filter_sql(f)
    if f.before_id is not None:
        where.append("id < %s")
        params.append(f.before_id)
    sql = f"SELECT {MESSAGE_COLUMNS} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT %s"
    params.append(f.limit + 1)
    rows = await _dicts(await conn.execute(sql, params))
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    next_id = rows[-1]["id"] if more and rows else None
    return [message_dict(r) for r in rows], next_id


async def stats(conn: Conn, f: MessageFilter) -> dict[str, Any]:
    """Counts and time-to-final percentiles, in one snapshot (the caller's transaction)."""
    where, params = filter_sql(f)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    counts = {s.value: 0 for s in Status}
    for status, n in await _all(
        conn, f"SELECT status, count(*) FROM messages{clause} GROUP BY status", params
    ):
        counts[status] = n
    total = sum(counts.values())
    final = sum(n for s, n in counts.items() if engine.is_final(s))
    delivered = sum(n for s, n in counts.items() if s in engine.DELIVERED_STATUSES)
    timed = (
        "SELECT extract(epoch FROM final_at::timestamptz - sent_at::timestamptz) AS seconds "
        f"FROM messages{clause}{' AND' if where else ' WHERE'} is_final = 1 "
        "AND sent_at IS NOT NULL AND final_at IS NOT NULL"
    )
    found = await _one(conn, f"SELECT count(*) FROM ({timed}) t", params)
    n_timed = int(found[0]) if found else 0

    async def percentile(p: float) -> float | None:
        if n_timed == 0:
            return None
        rank = max(0, math.ceil(p * n_timed) - 1)  # nearest-rank percentile
        row = await _one(
            conn,
            f"SELECT seconds FROM ({timed}) t ORDER BY seconds LIMIT 1 OFFSET %s",
            [*params, rank],
        )
        assert row is not None
        return round(float(row[0]), 3)

    return {
        "total": total,
        "by_status": counts,
        "final": final,
        "delivered": delivered,
        "delivery_rate": round(delivered / final, 4) if final else None,
        "time_to_final_seconds": {
            "count": n_timed,
            "median": await percentile(0.5),
            "p95": await percentile(0.95),
        },
    }


async def export_chunk(
    conn: Conn, where: list[str], params: list[Any], before: int | None, size: int
) -> list[tuple[Any, ...]]:
    """Up to `size` rows older than id `before`: (id, *EXPORT_COLUMNS values)."""
    where = [*where, "id < %s"] if before is not None else where
    params = [*params, before] if before is not None else params
    sql = f"SELECT {EXPORT_COLUMNS} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await _all(conn, sql + " ORDER BY id DESC LIMIT %s", [*params, size])
    return [(*row[:6], bool(row[6]), *row[7:11], bool(row[11]), *row[12:]) for row in rows]


async def count_by_status(conn: Conn) -> dict[str, int]:
    # The shards kept by triggers (migration 0003): a few rows, however many messages.
    rows = await _all(
        conn, "SELECT status, sum(n) FROM message_status_counts GROUP BY status HAVING sum(n) > 0"
    )
    return {status: int(n) for status, n in rows}
