"""Reads on the read-only connections: one message, its history, the list (keyset cursor),
stats, export chunks and the per-status counts. Each is a function of the connection."""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from receiver import engine
from receiver.engine import Status
from receiver.store.base import MessageFilter

_MESSAGE_COLUMNS = (
    "id, provider, message_id, account, status, provider_status, error_code, to_number, "
    "from_number, metadata, registered, is_final, final_via, created_at, updated_at, sent_at, "
    "final_at, final_reason, poll_attempts, last_polled_at, last_poll_result, next_poll_at"
)
_EXPORT_COLUMNS = (
    "id, provider, message_id, status, provider_status, error_code, is_final, final_via, "
    "to_number, from_number, account, registered, metadata, created_at, updated_at, sent_at, "
    "final_at, final_reason"
)
_EVENT_COLUMNS = (
    "id, source, provider_status, status, previous_status, outcome, error_code, event_time, "
    "received_at, resolved_at, dedupe_key, headers, body"
)


def get_messages(
    message_id: str, provider: str | None, conn: sqlite3.Connection
) -> list[dict[str, Any]]:
    sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id = ?"
    params: list[Any] = [message_id]
    if provider is not None:
        sql += " AND provider = ?"
        params.append(provider)
    return [_message_dict(r) for r in conn.execute(sql + " LIMIT 10", params)]


def get_events(provider: str, message_id: str, conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE message_pk = "
        "(SELECT id FROM messages WHERE provider = ? AND message_id = ?) ORDER BY id",
        (provider, message_id),
    )
    return [_event_dict(r) for r in rows]


def list_messages(
    f: MessageFilter, conn: sqlite3.Connection
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first; keyset-paginated on id, so inserts never shift a page."""
    where, params = filter_sql(f)
    if f.before_id is not None:
        where.append("id < ?")
        params.append(f.before_id)
    sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(f.limit + 1)
    rows = conn.execute(sql, params).fetchall()
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    next_id = rows[-1]["id"] if more and rows else None
    return [_message_dict(r) for r in rows], next_id


def stats(f: MessageFilter, conn: sqlite3.Connection) -> dict[str, Any]:
    # One read transaction, so counts and percentiles describe the same snapshot.
    conn.execute("BEGIN")
    try:
        return _summarize(f, conn)
    finally:
        conn.execute("COMMIT")


def _summarize(f: MessageFilter, conn: sqlite3.Connection) -> dict[str, Any]:
    where, params = filter_sql(f)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    counts = {s.value: 0 for s in Status}
    for status, n in conn.execute(
        f"SELECT status, count(*) FROM messages{clause} GROUP BY status", params
    ):
        counts[status] = n
    total = sum(counts.values())
    final = sum(n for s, n in counts.items() if engine.is_final(s))
    delivered = sum(n for s, n in counts.items() if s in engine.DELIVERED_STATUSES)
    timed = (
        f"SELECT (julianday(final_at) - julianday(sent_at)) * 86400.0 AS seconds "
        f"FROM messages{clause}{' AND' if where else ' WHERE'} is_final = 1 "
        "AND sent_at IS NOT NULL AND final_at IS NOT NULL"
    )
    n_timed = conn.execute(f"SELECT count(*) FROM ({timed})", params).fetchone()[0]

    def percentile(p: float) -> float | None:
        if n_timed == 0:
            return None
        rank = max(0, math.ceil(p * n_timed) - 1)  # nearest-rank percentile
        value = conn.execute(
            f"SELECT seconds FROM ({timed}) ORDER BY seconds LIMIT 1 OFFSET ?",
            [*params, rank],
        ).fetchone()[0]
        return round(float(value), 3)

    return {
        "total": total,
        "by_status": counts,
        "final": final,
        "delivered": delivered,
        "delivery_rate": round(delivered / final, 4) if final else None,
        "time_to_final_seconds": {
            "count": n_timed,
            "median": percentile(0.5),
            "p95": percentile(0.95),
        },
    }


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    # Kept by triggers (migration 0003): a few rows, however many messages there are.
    rows = conn.execute("SELECT status, n FROM message_status_counts WHERE n > 0")
    return {status: n for status, n in rows}


def filter_sql(f: MessageFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status", f.status),
        ("provider", f.provider),
        ("to_number", f.to_number),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if f.since is not None:
        where.append("created_at >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("created_at < ?")
        params.append(f.until)
    return where, params


def export_chunk(
    where: list[str], params: list[Any], before: int | None, size: int, conn: sqlite3.Connection
) -> list[tuple[Any, ...]]:
    """Up to `size` rows older than id `before`: (id, *EXPORT_COLUMNS values)."""
    where = [*where, "id < ?"] if before is not None else where
    params = [*params, before] if before is not None else params
    sql = f"SELECT {_EXPORT_COLUMNS} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, size]).fetchall()
    return [
        (*row[:6], bool(row["is_final"]), *row[7:11], bool(row["registered"]), *row[12:])
        for row in rows
    ]


def _message_dict(row: sqlite3.Row) -> dict[str, Any]:
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


def _event_dict(row: sqlite3.Row) -> dict[str, Any]:
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
