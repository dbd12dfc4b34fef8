"""The SQL of sends registered whole (receiver.store.sends) on PostgreSQL: the rules'
statements in the writer's transaction, and the summary's read.

Instances write at the same time here: a page write reads the send's row FOR UPDATE, so two
claimers (one whose lease ran out, one that took the send over) write one after the other,
and the second finds the cursor moved; a claim skips the sends another claim holds.
"""

from __future__ import annotations

from typing import Any

import psycopg

from receiver.store.rows import SEND_NAMES, SqlSends, send_dict
from receiver.store.sends import summary

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]

_COLUMNS = ", ".join(SEND_NAMES)


class Access(SqlSends):
    """receiver.store.sends.SendAccess in the writer's transaction (SQL: receiver.store.rows)."""

    mark = "%s"
    lock = " FOR UPDATE"
    claim_lock = " FOR UPDATE SKIP LOCKED"

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
        row = send_dict(await cur.fetchone())
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
