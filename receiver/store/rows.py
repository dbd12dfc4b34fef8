"""What both dialects' rules.RowAccess share: the events' statements, the poll queue's
columns, and the delegation to the dialect's pollqueue module. The SQL is written with
SQLite's placeholder ("?"); a dialect whose placeholder differs sets `mark`.

A dialect subclasses SqlRows with the reads that differ (how a message is read, and locked)
and how it writes message rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar, Protocol

from receiver.engine import Outcome, Status, StatusEvent
from receiver.store.base import DueMessage
from receiver.store.parts import PartRows
from receiver.store.rules import Current, Queued, RowAccess
from receiver.store.sends import SEND_COLUMNS

QUEUED_COLUMNS = (
    "id, provider, message_id, account, status, provider_status, poll_attempts, created_at, "
    "sent_at, poll_lease, next_poll_at"
)


def queued(row: Sequence[Any]) -> Queued:
    """A queued message from a row of QUEUED_COLUMNS."""
    return Queued(DueMessage(*tuple(row)[:9]), row[9], row[10])


def select_due(
    conn: Any, provider: str, now: str, limit: int, *, mark: str = "?", lock: str = ""
) -> list[Queued]:
    """Up to `limit` of the provider's queued messages due at `now`, soonest first; `lock`
    ends the SELECT (PostgreSQL: FOR UPDATE SKIP LOCKED)."""
    rows = conn.execute(
        marked(
            f"SELECT {QUEUED_COLUMNS} FROM messages "
            "WHERE provider = ? AND next_poll_at IS NOT NULL AND next_poll_at <= ? "
            "ORDER BY next_poll_at LIMIT ?" + lock,
            mark,
        ),
        (provider, now, limit),
    ).fetchall()
    return [queued(row) for row in rows]


def select_group(
    conn: Any, provider: str, prefix: str, *, mark: str = "?", lock: str = "", table: str = ""
) -> list[Queued]:
    """The provider's queued messages whose id starts with `prefix`; `lock` ends the SELECT,
    `table` replaces `messages` (SQLite names the index to use)."""
    # The prefix range is a range of the (message_id, provider) index:
    # "<prefix>" .. "<prefix>\U0010ffff" holds exactly the ids starting with it.
    rows = conn.execute(
        marked(
            f"SELECT {QUEUED_COLUMNS} FROM {table or 'messages'} "
            "WHERE provider = ? AND message_id >= ? AND message_id < ? "
            "AND next_poll_at IS NOT NULL" + lock,
            mark,
        ),
        (provider, prefix, prefix + "\U0010ffff"),
    ).fetchall()
    return [queued(row) for row in rows]


_INSERT_EVENT = (
    "INSERT INTO events (provider, message_id, message_pk, source, provider_status, "
    "status, previous_status, outcome, error_code, account, to_number, from_number, "
    "event_time, received_at, dedupe_key, headers, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_HELD_EVENTS = (
    "SELECT id, provider, message_id, provider_status, status, source, account, "
    "to_number, from_number, error_code, event_time FROM events "
    "WHERE provider = ? AND message_id = ? AND message_pk IS NULL "
    "AND outcome = 'pending_unknown' ORDER BY id"
)
_RESOLVE_HELD = (
    "UPDATE events SET outcome = ?, message_pk = ?, previous_status = ?, "
    "resolved_at = ? WHERE id = ?"
)
_ADOPT_EVENTS = (
    "UPDATE events SET message_pk = ? WHERE provider = ? AND message_id = ? AND message_pk IS NULL"
)

_SET_DEADLINE = "UPDATE messages SET deadline_at = ? WHERE id = ? AND deadline_missed IS NULL"
_DUE_DEADLINES = (
    "SELECT id, provider, message_id, status FROM messages "
    "WHERE deadline_at IS NOT NULL AND deadline_missed IS NULL AND deadline_at <= ? "
    "ORDER BY deadline_at LIMIT ?"
)
_DECIDE_DEADLINE = "UPDATE messages SET deadline_missed = ? WHERE id = ?"


# Ids per read of SqlRows.unseen (three times each in the statement: well under SQLite's
# limit).
UNSEEN_CHUNK = 1000


@lru_cache(maxsize=64)
def marked(sql: str, mark: str) -> str:
    """The statement with the dialect's placeholder (the SQL here has no literal "?")."""
    return sql if mark == "?" else sql.replace("?", mark)


class QueueStatements(Protocol):
    """A dialect's pollqueue module: the statements of a claim, on the writer's connection."""

    def due(self, conn: Any, provider: str, now: str, limit: int) -> list[Queued]: ...
    def group(self, conn: Any, provider: str, prefix: str) -> list[Queued] | None: ...
    def put_off(self, conn: Any, until: Sequence[tuple[int, str | None]]) -> None: ...
    def lease(self, conn: Any, pks: Sequence[int], owner: str, until: str) -> None: ...


class OutboxStatements(Protocol):
    """A dialect's outbox module: the push rows the rules write, on the writer's connection."""

    def insert_push(self, conn: Any, row: Mapping[str, Any]) -> None: ...
    def insert_change_pushes(self, conn: Any, rows: Sequence[tuple[Any, ...]]) -> None: ...
    def message_metadata(self, conn: Any, pk: int) -> dict[str, Any] | None: ...


class SqlRows(PartRows):
    """The statements of rules.RowAccess that are the same SQL in every dialect."""

    mark: ClassVar[str] = "?"
    queue: QueueStatements  # the dialect's pollqueue module
    outbox: OutboxStatements  # the dialect's outbox module

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    # The message reads and writes differ (how a read locks, how values are stored).
    def message_for_event(self, ev: StatusEvent) -> tuple[Current | None, bool]:
        raise NotImplementedError

    def message(self, provider: str, message_id: str) -> Current | None:
        raise NotImplementedError

    def insert_message(self, row: Mapping[str, Any]) -> int:
        raise NotImplementedError

    def update_message(self, pk: int, changes: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def insert_registered(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        raise NotImplementedError

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
            marked(_INSERT_EVENT, self.mark),
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
        rows = self.conn.execute(marked(_HELD_EVENTS, self.mark), (provider, message_id)).fetchall()
        return [(row[0], _held_event(row)) for row in rows]

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
            marked(_RESOLVE_HELD, self.mark),
            (outcome.value, message_pk, previous_status, resolved_at, event_id),
        )

    def adopt_events(self, provider: str, message_id: str, message_pk: int) -> None:
        self.conn.execute(marked(_ADOPT_EVENTS, self.mark), (message_pk, provider, message_id))

    # The poll queue's statements are in the dialect's pollqueue.py, with its reads.
    def due(self, provider: str, now: str, limit: int) -> list[Queued]:
        return self.queue.due(self.conn, provider, now, limit)

    def group(self, provider: str, prefix: str) -> list[Queued] | None:
        return self.queue.group(self.conn, provider, prefix)

    def put_off(self, until: Sequence[tuple[int, str | None]]) -> None:
        self.queue.put_off(self.conn, until)

    def lease(self, pks: Sequence[int], owner: str, until: str) -> None:
        self.queue.lease(self.conn, pks, owner, until)

    # The push outbox's statements are in the dialect's outbox.py.
    def insert_push(self, row: Mapping[str, Any]) -> None:
        self.outbox.insert_push(self.conn, row)

    def insert_change_pushes(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.outbox.insert_change_pushes(self.conn, rows)

    def message_metadata(self, pk: int) -> dict[str, Any] | None:
        return self.outbox.message_metadata(self.conn, pk)

    # Deadlines (migration 0008): undecided ones are in idx_messages_deadline.
    deadline_lock: ClassVar[str] = ""  # ends the due read (PostgreSQL: FOR UPDATE SKIP LOCKED)

    def set_deadline(self, pk: int, deadline_at: str) -> None:
        self.conn.execute(
            marked(_SET_DEADLINE, self.mark),
            (deadline_at, pk),
        )

    def due_deadlines(self, now: str, limit: int) -> list[tuple[int, str, str, str]]:
        rows = self.conn.execute(
            marked(_DUE_DEADLINES + self.deadline_lock, self.mark), (now, limit)
        ).fetchall()
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    def decide_deadline(self, pk: int, missed: bool) -> None:
        self.conn.execute(marked(_DECIDE_DEADLINE, self.mark), (int(missed), pk))

    def unseen(self, provider: str, message_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(message_ids), UNSEEN_CHUNK):
            chunk = list(message_ids[i : i + UNSEEN_CHUNK])
            marks = ", ".join([self.mark] * len(chunk))
            rows = self.conn.execute(
                f"SELECT message_id FROM messages WHERE provider = {self.mark} "
                f"AND message_id IN ({marks}) UNION ALL "
                f"SELECT message_id FROM events WHERE provider = {self.mark} "
                f"AND message_id IN ({marks}) AND message_pk IS NULL UNION ALL "
                # A multipart message's part (receiver.store.parts) is known too.
                f"SELECT part_id FROM message_parts WHERE provider = {self.mark} "
                f"AND part_id IN ({marks})",
                [provider, *chunk, provider, *chunk, provider, *chunk],
            ).fetchall()
            found.update(row[0] for row in rows)
        return set(message_ids) - found

    def tracked_send(self, provider: str, prefix: str) -> bool:
        # A group registered whole (receiver.store.sends) is kept under its prefix's id.
        row = self.conn.execute(
            marked("SELECT 1 FROM sends WHERE provider = ? AND uuid = ?", self.mark),
            (provider, prefix.removesuffix(":")),
        ).fetchone()
        return row is not None


def _held_event(row: Sequence[Any]) -> StatusEvent:
    """A held event, rebuilt from its row (_HELD_EVENTS) to be decided now."""
    return StatusEvent(
        provider=row[1],
        message_id=row[2],
        provider_status=row[3],
        status=Status(row[4]) if row[4] else None,
        source=row[5],
        account=row[6],
        to_number=row[7],
        from_number=row[8],
        error_code=row[9],
        event_time=row[10],
    )


# -- sends registered whole (receiver.store.sends) ----------------------------------------------

SEND_NAMES = tuple(sorted(SEND_COLUMNS))
_SEND_SELECT = f"SELECT {', '.join(SEND_NAMES)} FROM sends"


def checked_send_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(columns) - SEND_COLUMNS
    if unknown:
        raise ValueError(f"not columns of sends: {sorted(unknown)}")
    return columns


@lru_cache(maxsize=64)
def _send_update(columns: tuple[str, ...], mark: str) -> str:
    sets = ", ".join(f"{c} = ?" for c in checked_send_columns(columns))
    return marked(f"UPDATE sends SET {sets} WHERE provider = ? AND uuid = ?", mark)


def send_dict(row: Sequence[Any] | None) -> dict[str, Any] | None:
    """A sends row read with SEND_NAMES' columns, as a dict (None: no row)."""
    return None if row is None else dict(zip(SEND_NAMES, row, strict=True))


class SqlSends:
    """receiver.store.sends.SendAccess in the SQL both dialects share: a dialect sets its
    placeholder and the locks its reads take, and how it counts a send's recipients."""

    mark: ClassVar[str] = "?"
    lock: ClassVar[str] = ""  # ends the read of one send (PostgreSQL: FOR UPDATE)
    claim_lock: ClassVar[str] = ""  # ends a claim's read (PostgreSQL: FOR UPDATE SKIP LOCKED)

    def __init__(self, rows: RowAccess, conn: Any) -> None:
        self.rows = rows
        self.conn = conn

    def get(self, provider: str, uuid: str) -> dict[str, Any] | None:
        sql = marked(f"{_SEND_SELECT} WHERE provider = ? AND uuid = ?{self.lock}", self.mark)
        return send_dict(self.conn.execute(sql, (provider, uuid)).fetchone())

    def insert(self, row: Mapping[str, Any]) -> None:
        columns = checked_send_columns(tuple(row))
        self.conn.execute(
            f"INSERT INTO sends ({', '.join(columns)}) "
            f"VALUES ({', '.join([self.mark] * len(columns))})",
            list(row.values()),
        )

    def update(self, provider: str, uuid: str, changes: Mapping[str, Any]) -> None:
        if changes:
            self.conn.execute(
                _send_update(tuple(changes), self.mark), [*changes.values(), provider, uuid]
            )

    def due(self, provider: str, now: str, limit: int) -> list[dict[str, Any]]:
        sql = marked(
            f"{_SEND_SELECT} WHERE provider = ? AND next_sweep_at IS NOT NULL "
            f"AND next_sweep_at <= ? ORDER BY next_sweep_at LIMIT ?{self.claim_lock}",
            self.mark,
        )
        rows = self.conn.execute(sql, (provider, now, limit)).fetchall()
        return [d for d in map(send_dict, rows) if d is not None]
