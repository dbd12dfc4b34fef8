"""Reads on PostgreSQL: a message with its history, the list with its keyset cursor, stats,
export chunks, the status counts. The answers are SQLite's (receiver.store.answers).

Each is a coroutine over a connection of the store's async pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from receiver.store import answers
from receiver.store.answers import nearest_rank
from receiver.store.base import MessageFilter

Conn = psycopg.AsyncConnection[Any]
MARK = "%s"


def filter_sql(f: MessageFilter) -> tuple[list[str], list[Any]]:
    return answers.filter_sql(f, MARK)


async def _dicts(cur: psycopg.AsyncCursor[Any]) -> list[dict[str, Any]]:
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def _one(conn: Conn, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def _all(conn: Conn, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def get_messages(conn: Conn, message_id: str, provider: str | None) -> list[dict[str, Any]]:
    sql, params = answers.messages_sql(message_id, provider, MARK)
    return answers.messages(await _dicts(await conn.execute(sql, params)))


async def get_events(conn: Conn, provider: str, message_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(answers.events_sql(MARK), (provider, message_id))
    return [answers.event_dict(r) for r in await _dicts(cur)]


async def list_messages(conn: Conn, f: MessageFilter) -> tuple[list[dict[str, Any]], int | None]:
    sql, params = answers.page_sql(f, MARK)
    return answers.page(await _dicts(await conn.execute(sql, params)), f)


async def stats(conn: Conn, f: MessageFilter) -> dict[str, Any]:
    """Counts and time-to-final percentiles, in one snapshot."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return await _summarize(conn, f)


async def _summarize(conn: Conn, f: MessageFilter) -> dict[str, Any]:
    where, params = filter_sql(f)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    counts = dict(
        await _all(conn, f"SELECT status, count(*) FROM messages{clause} GROUP BY status", params)
    )
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
        row = await _one(
            conn,
            f"SELECT seconds FROM ({timed}) t ORDER BY seconds LIMIT 1 OFFSET %s",
            [*params, nearest_rank(p, n_timed)],
        )
        assert row is not None
        return round(float(row[0]), 3)

    return answers.summary(counts, n_timed, await percentile(0.5), await percentile(0.95))


async def export_chunk(
    conn: Conn, where: list[str], params: list[Any], before: int | None, size: int
) -> list[tuple[Any, ...]]:
    """Up to `size` rows older than id `before`: (id, *EXPORT_COLUMNS values)."""
    sql, params = answers.export_sql(where, params, before, size, MARK)
    return [answers.export_row(row) for row in await _all(conn, sql, params)]


async def count_by_status(conn: Conn) -> dict[str, int]:
    # The shards kept by triggers (migration 0003): a few rows, however many messages.
    rows = await _all(
        conn, "SELECT status, sum(n) FROM message_status_counts GROUP BY status HAVING sum(n) > 0"
    )
    return {status: int(n) for status, n in rows}
