"""The dashboard's reads on SQLite (the SQL is receiver.store.dashboard's)."""

from __future__ import annotations

import sqlite3
from typing import Any

from receiver.store import dashboard
from receiver.store.dashboard import WindowFigures


def window(
    conn: sqlite3.Connection, since: str, provider: str | None, chart_chars: int
) -> WindowFigures:
    query = dashboard.WindowQuery(since, provider, chart_chars, "?")
    # One read transaction: every figure describes the same moment.
    conn.execute("BEGIN")
    try:
        figures = query.figures(
            [[tuple(r) for r in conn.execute(sql, params)] for sql, params in query.statements()]
        )
        for name, (b, offset) in query.wanted(figures).items():
            sql, params = query.fine(b)
            rows = [tuple(r) for r in conn.execute(sql, params)]
            setattr(figures, name, query.pick(rows, offset))
    finally:
        conn.execute("COMMIT")
    return figures


def queue(conn: sqlite3.Connection, now: str) -> list[tuple[str, int, int, str | None]]:
    return [
        (p, int(n), int(due or 0), soonest)
        for p, n, due, soonest in conn.execute(dashboard.queue_sql("?"), (now,))
    ]


def recent(
    conn: sqlite3.Connection,
    statuses: tuple[str, ...],
    since: str,
    provider: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    rows: list[tuple[Any, ...]] = []
    for status in statuses:
        sql, params = dashboard.recent_sql(status, provider, since, limit, "?")
        rows += [tuple(r) for r in conn.execute(sql, params)]
    return dashboard.recent_rows(rows, limit)
