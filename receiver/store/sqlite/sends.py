"""The SQL of sends registered whole (receiver.store.sends): the rules' statements on the
writer's connection, and the summary's read. The writer's BEGIN IMMEDIATE makes each claim
and each page write the only writer of its moment, so a read here holds to the commit."""

from __future__ import annotations

import sqlite3
from typing import Any

from receiver.store.rows import SEND_NAMES, SqlSends, send_dict
from receiver.store.sends import summary
from receiver.store.sqlite import counts as kept_counts

_COLUMNS = ", ".join(SEND_NAMES)


class Access(SqlSends):
    """receiver.store.sends.SendAccess on the writer's connection (SQL: receiver.store.rows)."""

    def counts(self, uuid: str) -> dict[str, int]:
        kept_counts.fold(self.conn)  # this batch's changes so far, counted
        return counts(self.conn, uuid)


def counts(conn: sqlite3.Connection, uuid: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, n FROM send_status_counts WHERE uuid = ? AND n > 0", (uuid,)
    ).fetchall()
    return {status: int(n) for status, n in rows}


# -- reads, on the read connections -----------------------------------------------------------


def send_summary(conn: sqlite3.Connection, uuid: str) -> dict[str, Any] | None:
    """The send's summary; None when neither the send nor any recipient of it is known."""
    conn.execute("BEGIN")  # one snapshot: the counts and the sweep's progress agree
    try:
        row = send_dict(
            conn.execute(
                f"SELECT {_COLUMNS} FROM sends WHERE provider = 'mesms' AND uuid = ?", (uuid,)
            ).fetchone()
        )
        found = counts(conn, uuid)
    finally:
        conn.execute("COMMIT")
    if row is None and not found:
        return None
    return summary(uuid, row, found)


def next_due(conn: sqlite3.Connection, provider: str) -> str | None:
    row = conn.execute(
        "SELECT min(next_sweep_at) FROM sends WHERE provider = ? AND next_sweep_at IS NOT NULL",
        (provider,),
    ).fetchone()
    return row[0] if row else None
