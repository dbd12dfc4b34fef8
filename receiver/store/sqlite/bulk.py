"""Registered messages inserted in bulk (rules.RowAccess.insert_registered): one statement for
a batch. No trigger counts them row by row: the write batch's fold counts every message newer
than the last (receiver.store.sqlite.counts). A registered message is no change (the change
log's insert trigger only logs a message a callback created), so nothing goes to the log.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any


def _insert_sql(columns: Sequence[str]) -> str:
    picks = ", ".join(f"value ->> {i}" for i in range(len(columns)))
    return (
        f"INSERT INTO messages ({', '.join(columns)}) SELECT {picks} FROM json_each(?) "
        "RETURNING id, provider, message_id"
    )


def _insert_one_sql(columns: Sequence[str]) -> str:
    return (
        f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        "RETURNING id, provider, message_id"
    )


def insert_registered(
    conn: sqlite3.Connection, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> dict[tuple[str, str], int]:
    """Insert the rows (values in the order of `columns`, each a registered message) in one
    statement; each one's id by (provider, message_id)."""
    if not rows:
        return {}
    # SQLite's JSON functions end a string at an escaped NUL, which a stored id may hold (the
    # store keeps NUL): such rows go in one by one, still counted with the rest.
    plain: list[Sequence[Any]] = []
    odd: list[Sequence[Any]] = []
    for row in rows:
        (odd if any(isinstance(v, str) and "\x00" in v for v in row) else plain).append(row)
    found = conn.execute(
        _insert_sql(columns), (json.dumps(plain, separators=(",", ":")),)
    ).fetchall()
    one = _insert_one_sql(columns)
    found += [conn.execute(one, row).fetchone() for row in odd]
    return {(row[1], row[2]): row[0] for row in found}


def values(row: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
    """A row's values in the order of `columns` (a missing one NULL), as JSON can carry them:
    bools as 1/0, metadata as compact JSON text."""
    out = []
    for c in columns:
        value = row.get(c)
        if isinstance(value, bool):
            value = int(value)
        elif c == "metadata" and value is not None:
            value = json.dumps(value, separators=(",", ":"))
        out.append(value)
    return out
