"""The SQL of sends registered whole (receiver.store.sends) on PostgreSQL: the rules'
statements in the writer's transaction, and the summary's read.

Instances write at the same time here: a page write reads the send's row FOR UPDATE, so two
claimers (one whose lease ran out, one that took the send over) write one after the other,
and the second finds the cursor moved; a claim skips the sends another claim holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import psycopg

from receiver.store import rules
from receiver.store.sends import SEND_COLUMNS, summary

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]

_NAMES = tuple(sorted(SEND_COLUMNS))
_COLUMNS = ", ".join(_NAMES)


def _checked(columns: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(columns) - SEND_COLUMNS
    if unknown:
        raise ValueError(f"not columns of sends: {sorted(unknown)}")
    return columns


@cache
def _update_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = %s" for c in _checked(columns))
    return f"UPDATE sends SET {sets} WHERE provider = %s AND uuid = %s"


def _dict(row: Sequence[Any] | None) -> dict[str, Any] | None:
    return None if row is None else dict(zip(_NAMES, row, strict=True))


class Access:
    """receiver.store.sends.SendAccess in the writer's transaction."""

    def __init__(self, rows: rules.RowAccess, conn: Conn) -> None:
        self.rows = rows
        self.conn = conn

    def get(self, provider: str, uuid: str) -> dict[str, Any] | None:
        return _dict(
            self.conn.execute(
                f"SELECT {_COLUMNS} FROM sends WHERE provider = %s AND uuid = %s FOR UPDATE",
                (provider, uuid),
            ).fetchone()
        )

    def insert(self, row: Mapping[str, Any]) -> None:
        columns = _checked(tuple(row))
        self.conn.execute(
            f"INSERT INTO sends ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            list(row.values()),
        )

    def update(self, provider: str, uuid: str, changes: Mapping[str, Any]) -> None:
        if changes:
            self.conn.execute(_update_sql(tuple(changes)), [*changes.values(), provider, uuid])

    def due(self, provider: str, now: str, limit: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM sends WHERE provider = %s AND next_sweep_at IS NOT NULL "
            "AND next_sweep_at <= %s ORDER BY next_sweep_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (provider, now, limit),
        ).fetchall()
        return [d for d in map(_dict, rows) if d is not None]

    def counts(self, uuid: str) -> dict[str, int]:
        rows = self.conn.execute(_COUNTS, (uuid,)).fetchall()
        return {status: int(n) for status, n in rows}


_COUNTS = (
    "SELECT status, sum(n) FROM send_status_counts WHERE uuid = %s "
    "GROUP BY status HAVING sum(n) > 0"
)


# -- reads, on the read pool ------------------------------------------------------------------


async def send_summary(conn: AsyncConn, uuid: str) -> dict[str, Any] | None:
    """The send's summary; None when neither the send nor any recipient of it is known."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM sends WHERE provider = 'mesms' AND uuid = %s", (uuid,)
        )
        row = _dict(await cur.fetchone())
        cur = await conn.execute(_COUNTS, (uuid,))
        found = {status: int(n) for status, n in await cur.fetchall()}
    if row is None and not found:
        return None
    return summary(uuid, row, found)


async def next_due(conn: AsyncConn, provider: str) -> str | None:
    cur = await conn.execute(
        "SELECT min(next_sweep_at) FROM sends WHERE provider = %s AND next_sweep_at IS NOT NULL",
        (provider,),
    )
    row = await cur.fetchone()
    return row[0] if row else None
