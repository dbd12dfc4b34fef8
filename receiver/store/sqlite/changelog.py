"""The change log's reads on SQLite's read connections (receiver.store.changelog's SQL)."""

from __future__ import annotations

import sqlite3
from typing import Any

from receiver.store import changelog

_NEXT_DEADLINE = (
    "SELECT min(deadline_at) FROM messages "
    "WHERE deadline_at IS NOT NULL AND deadline_missed IS NULL"
)


def changes_after(conn: sqlite3.Connection, after: int, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(changelog.CHANGE_SELECT, (after, limit)).fetchall()
    return [changelog.change(tuple(row)) for row in rows]


def marks(conn: sqlite3.Connection) -> tuple[int, int]:
    return changelog.marks(tuple(conn.execute(changelog.MARKS).fetchone()))


def next_deadline(conn: sqlite3.Connection) -> str | None:
    row = conn.execute(_NEXT_DEADLINE).fetchone()
    return row[0] if row else None


def last_old(conn: sqlite3.Connection, older_than: str) -> int | None:
    """The last change logged before `older_than` (None: none is)."""
    row = conn.execute(changelog.LAST_OLD, (older_than,)).fetchone()
    return row[0] if row else None
