"""The SQL of sends registered whole (receiver.store.sends): the rules' statements on the
writer's connection, and the summary's read. The writer's BEGIN IMMEDIATE makes each claim
and each page write the only writer of its moment, so a read here holds to the commit."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from receiver.store import rules
from receiver.store.sends import SEND_COLUMNS, summary

_COLUMNS = ", ".join(sorted(SEND_COLUMNS))


def _checked(columns: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(columns) - SEND_COLUMNS
    if unknown:
        raise ValueError(f"not columns of sends: {sorted(unknown)}")
    return columns


@lru_cache(maxsize=32)
def _update_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = ?" for c in _checked(columns))
    return f"UPDATE sends SET {sets} WHERE provider = ? AND uuid = ?"


def _dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return None if row is None else {k: row[k] for k in row.keys()}  # noqa: SIM118


class Access:
    """receiver.store.sends.SendAccess on the writer's connection."""

    def __init__(self, rows: rules.RowAccess, conn: sqlite3.Connection) -> None:
        self.rows = rows
        self.conn = conn

    def get(self, provider: str, uuid: str) -> dict[str, Any] | None:
        return _dict(
            self.conn.execute(
                f"SELECT {_COLUMNS} FROM sends WHERE provider = ? AND uuid = ?", (provider, uuid)
            ).fetchone()
        )

    def insert(self, row: Mapping[str, Any]) -> None:
        columns = _checked(tuple(row))
        self.conn.execute(
            f"INSERT INTO sends ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            list(row.values()),
        )

    def update(self, provider: str, uuid: str, changes: Mapping[str, Any]) -> None:
        if changes:
            self.conn.execute(_update_sql(tuple(changes)), [*changes.values(), provider, uuid])

    def due(self, provider: str, now: str, limit: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM sends WHERE provider = ? AND next_sweep_at IS NOT NULL "
            "AND next_sweep_at <= ? ORDER BY next_sweep_at LIMIT ?",
            (provider, now, limit),
        ).fetchall()
        return [d for d in map(_dict, rows) if d is not None]

    def counts(self, uuid: str) -> dict[str, int]:
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
        row = _dict(
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
