"""The change log's reads on PostgreSQL's read pool (receiver.store.changelog's SQL)."""

from __future__ import annotations

from typing import Any

import psycopg

from receiver.store import changelog
from receiver.store.rows import marked

Conn = psycopg.AsyncConnection[Any]
MARK = "%s"

_NEXT_DEADLINE = (
    "SELECT min(deadline_at) FROM messages "
    "WHERE deadline_at IS NOT NULL AND deadline_missed IS NULL"
)


async def changes_after(conn: Conn, after: int, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(marked(changelog.CHANGE_SELECT, MARK), (after, limit))
    return [changelog.change(row) for row in await cur.fetchall()]


async def marks(conn: Conn) -> tuple[int, int]:
    cur = await conn.execute(changelog.MARKS)
    return changelog.marks(await cur.fetchone())


async def next_deadline(conn: Conn) -> str | None:
    cur = await conn.execute(_NEXT_DEADLINE)
    row = await cur.fetchone()
    return row[0] if row else None


async def last_old(conn: Conn, older_than: str) -> int | None:
    cur = await conn.execute(marked(changelog.LAST_OLD, MARK), (older_than,))
    row = await cur.fetchone()
    return row[0] if row else None
