"""rules.RowAccess over the writer's sqlite3 connection: the SQL of recording."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from receiver.engine import MessageState, Status, StatusEvent
from receiver.store import rules
from receiver.store.parts import Part
from receiver.store.rows import SqlRows
from receiver.store.sqlite import bulk, outbox, pollqueue

_CURRENT_COLUMNS = (
    "id, status, sent_at, final_at, final_via, provider_status, account, to_number, "
    "from_number, registered, created_at, updated_at, poll_attempts, poll_lease, next_poll_at, "
    "parts"
)

# The event's message, if any, whether its delivery id was seen before, and, when there is
# no such message, whether the id is a multipart message's part: one statement.
_LOOKUP = (
    f"SELECT {', '.join('m.' + c for c in _CURRENT_COLUMNS.split(', '))}, "
    "(? IS NOT NULL AND EXISTS (SELECT 1 FROM events "
    "WHERE provider = ? AND dedupe_key = ? AND message_id = ?)) AS seen, "
    "(m.id IS NULL AND EXISTS (SELECT 1 FROM message_parts "
    "WHERE provider = ? AND part_id = ?)) AS a_part "
    "FROM (SELECT 1) LEFT JOIN messages m ON m.provider = ? AND m.message_id = ?"
)


_STATUSES = {status.value: status for status in Status}  # cheaper than Status(value)


def _current(row: sqlite3.Row) -> rules.Current:
    # By position (the order of _CURRENT_COLUMNS): on the path of every callback.
    (pk, status, sent_at, final_at, final_via, provider_status, account, to_number) = row[:8]
    (from_number, registered, created_at, updated_at, attempts, lease, next_poll_at) = row[8:15]
    parts = row[15]
    return rules.Current(
        pk,
        MessageState(_STATUSES[status], sent_at, final_at, final_via),
        provider_status=provider_status,
        account=account,
        to_number=to_number,
        from_number=from_number,
        registered=bool(registered),
        created_at=created_at,
        updated_at=updated_at,
        poll_attempts=attempts,
        poll_lease=lease,
        next_poll_at=next_poll_at,
        parts=parts,
    )


@lru_cache(maxsize=64)
def _update_sql(columns: tuple[str, ...]) -> str:
    unknown = set(columns) - rules.MESSAGE_COLUMNS
    if unknown:
        raise ValueError(f"not a column the rules write: {sorted(unknown)}")
    return f"UPDATE messages SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"


@lru_cache(maxsize=16)
def _insert_sql(columns: tuple[str, ...]) -> str:
    unknown = set(columns) - rules.MESSAGE_COLUMNS
    if unknown:
        raise ValueError(f"not a column the rules write: {sorted(unknown)}")
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO messages ({', '.join(columns)}) VALUES ({marks})"


def _values(row: Mapping[str, Any]) -> list[Any]:
    """The row's values in order, metadata (a dict) as compact JSON text."""
    values = list(row.values())
    if row.get("metadata") is not None:
        values[list(row).index("metadata")] = json.dumps(row["metadata"], separators=(",", ":"))
    return values


class SQLiteRows(SqlRows):
    """rules.RowAccess on the writer's connection, inside its BEGIN IMMEDIATE batch: SQLite
    has one writer at a time, so a row read here holds until the commit without a lock."""

    queue = pollqueue
    outbox = outbox
    conn: sqlite3.Connection
    # (provider, id) of the unknown message the last lookup found no part for either: the
    # rules' next question, part(), is answered without a statement (and only once).
    _not_a_part: tuple[str, str] | None = None

    def message_for_event(self, ev: StatusEvent) -> tuple[rules.Current | None, bool]:
        provider, message_id = ev.provider, ev.message_id
        row = self.conn.execute(
            _LOOKUP,
            (ev.dedupe_key, provider, ev.dedupe_key, message_id, *(provider, message_id) * 2),
        ).fetchone()
        seen = bool(row["seen"])
        if row["id"] is not None:
            return _current(row), seen
        self._not_a_part = None if row["a_part"] else (provider, message_id)
        return None, seen

    def part(self, provider: str, part_id: str) -> Part | None:
        if self._not_a_part == (provider, part_id):
            self._not_a_part = None
            return None
        return super().part(provider, part_id)

    def insert_part(self, row: Mapping[str, Any]) -> None:
        self._not_a_part = None
        super().insert_part(row)

    def message(self, provider: str, message_id: str) -> rules.Current | None:
        row = self.conn.execute(
            f"SELECT {_CURRENT_COLUMNS} FROM messages WHERE provider = ? AND message_id = ?",
            (provider, message_id),
        ).fetchone()
        return None if row is None else _current(row)

    def insert_message(self, row: Mapping[str, Any]) -> int:
        cur = self.conn.execute(_insert_sql(tuple(row)), _values(row))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_message(self, pk: int, changes: Mapping[str, Any]) -> None:
        self.conn.execute(_update_sql(tuple(changes)), [*_values(changes), pk])

    def insert_registered(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        columns = _columns(rows)
        ids = bulk.insert_registered(self.conn, columns, [bulk.values(r, columns) for r in rows])
        return [ids[(row["provider"], row["message_id"])] for row in rows]


def _columns(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Every column any of the rows sets, checked."""
    columns = tuple(dict.fromkeys(c for row in rows for c in row))
    unknown = set(columns) - rules.MESSAGE_COLUMNS
    if unknown:
        raise ValueError(f"not a column the rules write: {sorted(unknown)}")
    return columns
