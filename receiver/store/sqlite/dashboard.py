"""The dashboard's reads on SQLite (the SQL is receiver.store.dashboard's)."""

from __future__ import annotations

import sqlite3
from typing import Any

from receiver.store import dashboard
from receiver.store.dashboard import WindowFigures


def window(
    conn: sqlite3.Connection, since: str, provider: str | None, chart_chars: int
) -> WindowFigures:
    params: list[Any] = [dashboard.bucket_of(since)]
    if provider is not None:
        params.append(provider)
    # One read transaction: every figure describes the same moment.
    conn.execute("BEGIN")
    try:
        results = [
            [tuple(row) for row in conn.execute(sql, params)]
            for sql in dashboard.window_sql(provider, chart_chars, "?")
        ]
    finally:
        conn.execute("COMMIT")
    return dashboard.window_figures(results)


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
