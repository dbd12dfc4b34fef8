"""The rules' row access (receiver.store.rules.RowAccess) over one PostgreSQL transaction.

Other instances write the same rows at the same time, so every read of a message the rules
decide on takes its lock first (receiver_lock_message, migration 0005): the decision holds
until the commit. Each method is one statement, as on SQLite; those whose result is not read
(inserts of events, updates) travel with the next read in the writer's pipeline. The claims'
statements are in pollqueue.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import psycopg

from receiver.engine import MessageState, Status, StatusEvent
from receiver.store.postgres import outbox, pollqueue
from receiver.store.postgres.connection import escape
from receiver.store.rows import SqlRows
from receiver.store.rules import MESSAGE_COLUMNS, Current

Conn = psycopg.Connection[Any]


def lock_key(provider: str, message_id: str) -> str:
    """What a message's advisory lock is a hash of, as receiver_lock_message computes it."""
    return provider + "\n" + message_id


def _current(row: Sequence[Any]) -> Current | None:
    """A message from receiver_lock_message's row (schema.CURRENT_COLUMNS), None if absent."""
    if row[0] is None:
        return None
    return Current(
        row[0],
        MessageState(Status(row[1]), row[2], row[3], row[4]),
        provider_status=row[5],
        account=row[6],
        to_number=row[7],
        from_number=row[8],
        registered=bool(row[9]),
        created_at=row[10],
        updated_at=row[11],
        poll_attempts=row[12],
        poll_lease=row[13],
        next_poll_at=row[14],
        parts=row[16],  # row[15] is `seen` (migration 0015 added `parts` after it)
    )


def _column_value(name: str, value: Any) -> Any:
    if name in ("registered", "is_final") and value is not None:
        return int(value)
    if name == "metadata" and value is not None and not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"))
    return value


def _record_value(name: str, value: Any) -> Any:
    """A column's value inside the bulk INSERT's JSON, whose text skips the connection's NUL
    escape: escaped here instead (JSON's \\u0000 is not text PostgreSQL takes)."""
    value = _column_value(name, value)
    return escape(value) if isinstance(value, str) else value


@cache
def _insert_sql(columns: tuple[str, ...]) -> str:
    return (
        f"INSERT INTO messages ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) RETURNING id"
    )


@cache
def _update_sql(columns: tuple[str, ...]) -> str:
    return f"UPDATE messages SET {', '.join(f'{c} = %s' for c in columns)} WHERE id = %s"


def _checked(row: Mapping[str, Any]) -> tuple[str, ...]:
    columns = tuple(row)
    unknown = set(columns) - MESSAGE_COLUMNS
    if unknown:
        raise ValueError(f"not columns of messages: {sorted(unknown)}")
    return columns


class PgRows(SqlRows):
    """RowAccess for the transaction open on `conn` (the writer thread's)."""

    mark = "%s"
    queue = pollqueue
    outbox = outbox
    deadline_lock = " FOR UPDATE SKIP LOCKED"  # another instance deciding them keeps them
    conn: Conn

    def message_for_event(self, ev: StatusEvent) -> tuple[Current | None, bool]:
        row = self.conn.execute(
            "SELECT * FROM receiver_lock_message(%s, %s, %s)",
            (ev.provider, ev.message_id, ev.dedupe_key),
        ).fetchone()
        assert row is not None  # the function always answers one row
        return _current(row), bool(row[15])

    def message(self, provider: str, message_id: str) -> Current | None:
        row = self.conn.execute(
            "SELECT * FROM receiver_lock_message(%s, %s, NULL)", (provider, message_id)
        ).fetchone()
        assert row is not None
        return _current(row)

    def insert_message(self, row: Mapping[str, Any]) -> int:
        columns = _checked(row)
        values = [_column_value(c, row[c]) for c in columns]
        found = self.conn.execute(_insert_sql(columns), values).fetchone()
        assert found is not None
        return int(found[0])

    def update_message(self, pk: int, changes: Mapping[str, Any]) -> None:
        if not changes:
            return
        columns = _checked(changes)
        values = [_column_value(c, changes[c]) for c in columns]
        self.conn.execute(_update_sql(columns), [*values, pk])

    def insert_registered(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        # One INSERT for the batch: its rows are counted once, from the statement's transition
        # table (migration 0012).
        if not rows:
            return []
        columns = tuple(dict.fromkeys(c for row in rows for c in row))
        unknown = set(columns) - MESSAGE_COLUMNS
        if unknown:
            raise ValueError(f"not columns of messages: {sorted(unknown)}")
        records = [{c: _record_value(c, row.get(c)) for c in columns} for row in rows]
        found = self.conn.execute(
            _bulk_insert_sql(columns), (json.dumps(records, separators=(",", ":")),)
        ).fetchall()
        ids = {(provider, message_id): pk for pk, provider, message_id in found}
        return [ids[(row["provider"], row["message_id"])] for row in rows]


@cache
def _bulk_insert_sql(columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    return (
        f"INSERT INTO messages ({names}) SELECT {names} "
        "FROM json_populate_recordset(NULL::messages, %s::json) "
        "RETURNING id, provider, message_id"
    )
