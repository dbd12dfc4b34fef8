"""The dashboard's reads on PostgreSQL (the SQL is receiver.store.dashboard's)."""

from __future__ import annotations

from typing import Any

import psycopg

from receiver.store import dashboard
from receiver.store.dashboard import WindowFigures

Conn = psycopg.AsyncConnection[Any]
MARK = "%s"


async def window(conn: Conn, since: str, provider: str | None, chart_chars: int) -> WindowFigures:
    query = dashboard.WindowQuery(since, provider, chart_chars, MARK)
    # One snapshot: every figure describes the same moment.
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        results = []
        for sql, params in query.statements():
            cur = await conn.execute(sql, params)
            results.append(list(await cur.fetchall()))
        figures = query.figures(results)
        for name, (b, offset) in query.wanted(figures).items():
            sql, params = query.fine(b)
            cur = await conn.execute(sql, params)
            setattr(figures, name, query.pick(list(await cur.fetchall()), offset))
    return figures


async def queue(conn: Conn, now: str) -> list[tuple[str, int, int, str | None]]:
    cur = await conn.execute(dashboard.queue_sql(MARK), (now,))
    return [(p, int(n), int(due or 0), soonest) for p, n, due, soonest in await cur.fetchall()]


async def recent(
    conn: Conn, statuses: tuple[str, ...], since: str, provider: str | None, limit: int
) -> list[dict[str, Any]]:
    rows: list[tuple[Any, ...]] = []
    for status in statuses:
        sql, params = dashboard.recent_sql(status, provider, since, limit, MARK)
        cur = await conn.execute(sql, params)
        rows += list(await cur.fetchall())
    return dashboard.recent_rows(rows, limit)
