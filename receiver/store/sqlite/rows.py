"""rules.RowAccess over the writer's sqlite3 connection: the SQL of recording."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from receiver.engine import MessageState, Outcome, Status, StatusEvent
from receiver.store import rules
from receiver.store.sqlite import pollqueue

_CURRENT_COLUMNS = (
    "id, status, sent_at, final_at, final_via, provider_status, account, to_number, "
    "from_number, registered, created_at, updated_at, poll_attempts, poll_lease, next_poll_at"
)


def _current(row: sqlite3.Row) -> rules.Current:
    return rules.Current(
        row["id"],
        MessageState(Status(row["status"]), row["sent_at"], row["final_at"], row["final_via"]),
        provider_status=row["provider_status"],
        account=row["account"],
        to_number=row["to_number"],
        from_number=row["from_number"],
        registered=bool(row["registered"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        poll_attempts=row["poll_attempts"],
        poll_lease=row["poll_lease"],
        next_poll_at=row["next_poll_at"],
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


def _value(column: str, value: Any) -> Any:
    if column == "metadata" and value is not None:
        return json.dumps(value, separators=(",", ":"))
    return value


class SQLiteRows:
    """rules.RowAccess on the writer's connection, inside its BEGIN IMMEDIATE batch: SQLite
    has one writer at a time, so a row read here holds until the commit without a lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def message_for_event(self, ev: StatusEvent) -> tuple[rules.Current | None, bool]:
        row = self.conn.execute(
            f"SELECT {', '.join('m.' + c for c in _CURRENT_COLUMNS.split(', '))}, "
            "(? IS NOT NULL AND EXISTS (SELECT 1 FROM events "
            "WHERE provider = ? AND dedupe_key = ? AND message_id = ?)) AS seen "
            "FROM (SELECT 1) LEFT JOIN messages m ON m.provider = ? AND m.message_id = ?",
            (ev.dedupe_key, ev.provider, ev.dedupe_key, ev.message_id, ev.provider, ev.message_id),
        ).fetchone()
        seen = bool(row["seen"])
        return (None if row["id"] is None else _current(row)), seen

    def message(self, provider: str, message_id: str) -> rules.Current | None:
        row = self.conn.execute(
            f"SELECT {_CURRENT_COLUMNS} FROM messages WHERE provider = ? AND message_id = ?",
            (provider, message_id),
        ).fetchone()
        return None if row is None else _current(row)

    def insert_message(self, row: Mapping[str, Any]) -> int:
        columns = tuple(row)
        cur = self.conn.execute(_insert_sql(columns), [_value(c, row[c]) for c in columns])
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_message(self, pk: int, changes: Mapping[str, Any]) -> None:
        columns = tuple(changes)
        self.conn.execute(_update_sql(columns), [*(_value(c, changes[c]) for c in columns), pk])

    def insert_event(
        self,
        ev: StatusEvent,
        *,
        message_pk: int | None,
        previous_status: str | None,
        outcome: Outcome,
        received_at: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO events (provider, message_id, message_pk, source, provider_status, "
            "status, previous_status, outcome, error_code, account, to_number, from_number, "
            "event_time, received_at, dedupe_key, headers, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.provider,
                ev.message_id,
                message_pk,
                ev.source,
                ev.provider_status,
                ev.status.value if ev.status else None,
                previous_status,
                outcome.value,
                ev.error_code,
                ev.account,
                ev.to_number,
                ev.from_number,
                ev.event_time,
                received_at,
                ev.dedupe_key,
                json.dumps(dict(ev.headers)) if ev.headers else None,
                ev.body,
            ),
        )

    def held_events(self, provider: str, message_id: str) -> list[tuple[int, StatusEvent]]:
        rows = self.conn.execute(
            "SELECT * FROM events WHERE provider = ? AND message_id = ? "
            "AND message_pk IS NULL AND outcome = 'pending_unknown' ORDER BY id",
            (provider, message_id),
        ).fetchall()
        return [(row["id"], _event_from_row(row)) for row in rows]

    def resolve_held(
        self,
        event_id: int,
        *,
        message_pk: int,
        outcome: Outcome,
        previous_status: str,
        resolved_at: str,
    ) -> None:
        self.conn.execute(
            "UPDATE events SET outcome = ?, message_pk = ?, previous_status = ?, "
            "resolved_at = ? WHERE id = ?",
            (outcome.value, message_pk, previous_status, resolved_at, event_id),
        )

    def adopt_events(self, provider: str, message_id: str, message_pk: int) -> None:
        self.conn.execute(
            "UPDATE events SET message_pk = ? WHERE provider = ? AND message_id = ? "
            "AND message_pk IS NULL",
            (message_pk, provider, message_id),
        )

    # The poll queue's statements are in pollqueue.py, with its reads.
    def due(self, provider: str, now: str, limit: int) -> list[rules.Queued]:
        return pollqueue.due(self.conn, provider, now, limit)

    def group(self, provider: str, prefix: str) -> list[rules.Queued]:
        return pollqueue.group(self.conn, provider, prefix)

    def put_off(self, until: Sequence[tuple[int, str]]) -> None:
        pollqueue.put_off(self.conn, until)

    def lease(self, pks: Sequence[int], owner: str, until: str) -> None:
        pollqueue.lease(self.conn, pks, owner, until)


def _event_from_row(row: sqlite3.Row) -> StatusEvent:
    """A held event, rebuilt from its row to be decided now."""
    return StatusEvent(
        provider=row["provider"],
        message_id=row["message_id"],
        provider_status=row["provider_status"],
        status=Status(row["status"]) if row["status"] else None,
        source=row["source"],
        account=row["account"],
        to_number=row["to_number"],
        from_number=row["from_number"],
        error_code=row["error_code"],
        event_time=row["event_time"],
    )
