"""Reads on the read-only connections: one message, its history, the list (keyset cursor),
stats, export chunks and the per-status counts. Each is a function of the connection; the
answers' shape is receiver.store.answers'."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from receiver.store import answers
from receiver.store.answers import nearest_rank
from receiver.store.base import MessageFilter


def filter_sql(f: MessageFilter) -> tuple[list[str], list[Any]]:
    return answers.filter_sql(f, "?")


def _dicts(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    """The rows as dicts by column name, as the PostgreSQL dialect's are: a sqlite3.Row finds
    a column by comparing its name with each column's in turn, and answers.message_dict reads
    some thirty (about 60k instructions a message, more than the lookup's own SQLite work)."""
    cur = conn.cursor()
    cur.row_factory = None
    cur.execute(sql, params)
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


def get_messages(
    conn: sqlite3.Connection, message_id: str, provider: str | None
) -> list[dict[str, Any]]:
    sql, params = answers.messages_sql(message_id, provider)
    return answers.messages(_dicts(conn, sql, params))


def get_events(conn: sqlite3.Connection, provider: str, message_id: str) -> list[dict[str, Any]]:
    rows = _dicts(conn, answers.events_sql(), (provider, message_id))
    return [answers.event_dict(r) for r in rows]


def list_messages(
    conn: sqlite3.Connection, f: MessageFilter
) -> tuple[list[dict[str, Any]], int | None]:
    sql, params = answers.page_sql(f)
    return answers.page(_dicts(conn, sql, params), f)


def stats(conn: sqlite3.Connection, f: MessageFilter) -> dict[str, Any]:
    # One read transaction, so counts and percentiles describe the same snapshot.
    conn.execute("BEGIN")
    try:
        return _summarize(f, conn)
    finally:
        conn.execute("COMMIT")


def _summarize(f: MessageFilter, conn: sqlite3.Connection) -> dict[str, Any]:
    where, params = filter_sql(f)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    counts = dict(
        conn.execute(f"SELECT status, count(*) FROM messages{clause} GROUP BY status", params)
    )
    timed = (
        f"SELECT (julianday(final_at) - julianday(sent_at)) * 86400.0 AS seconds "
        f"FROM messages{clause}{' AND' if where else ' WHERE'} is_final = 1 "
        "AND sent_at IS NOT NULL AND final_at IS NOT NULL"
    )
    n_timed = conn.execute(f"SELECT count(*) FROM ({timed})", params).fetchone()[0]

    def percentile(p: float) -> float | None:
        if n_timed == 0:
            return None
        value = conn.execute(
            f"SELECT seconds FROM ({timed}) ORDER BY seconds LIMIT 1 OFFSET ?",
            [*params, nearest_rank(p, n_timed)],
        ).fetchone()[0]
        return round(float(value), 3)

    return answers.summary(counts, n_timed, percentile(0.5), percentile(0.95))


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    # Kept by triggers (migration 0003): a few rows, however many messages there are.
    rows = conn.execute("SELECT status, n FROM message_status_counts WHERE n > 0")
    return {status: n for status, n in rows}


def export_chunk(
    conn: sqlite3.Connection, where: list[str], params: list[Any], before: int | None, size: int
) -> list[tuple[Any, ...]]:
    """Up to `size` rows older than id `before`: (id, *EXPORT_COLUMNS values)."""
    sql, params = answers.export_sql(where, params, before, size)
    return [answers.export_row(row) for row in conn.execute(sql, params)]
