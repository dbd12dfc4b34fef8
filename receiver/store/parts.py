"""Multipart messages (a concatenated SMS sent as several segments): the parts' table and the
SQL both dialects share to read and write it (migration 0013). The rules are in rules.py.

A part is not a message: it has no row in `messages`, so counts, the dashboard, the change
log and pushes see its message once. Its events are kept under its message (events.message_pk)
with the part's own id as their message_id; its state is its row here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

from receiver.engine import FINAL_STATUSES, MessageState, Status

# The table, with each dialect's types ({pk}, {text}, {big}).
MESSAGE_PARTS = (
    "CREATE TABLE message_parts (id {pk}, parent_pk {big} NOT NULL, provider {text} NOT NULL, "
    "part_id {text} NOT NULL, position INTEGER NOT NULL, status {text} NOT NULL, "
    "provider_status {text}, error_code {text}, sent_at {text}, final_at {text}, "
    "final_via {text}, updated_at {text} NOT NULL)"
)
MESSAGE_PARTS_INDEXES = (
    # A callback's id is looked up here when it is not a message's.
    "CREATE UNIQUE INDEX idx_message_parts_id ON message_parts (provider, part_id)",
    "CREATE INDEX idx_message_parts_parent ON message_parts (parent_pk, position)",
)

# The columns the rules write (insert_part, update_part).
PART_COLUMNS = frozenset(
    {
        "parent_pk",
        "provider",
        "part_id",
        "position",
        "status",
        "provider_status",
        "error_code",
        "sent_at",
        "final_at",
        "final_via",
        "updated_at",
    }
)


class Part(NamedTuple):
    """A part as the rules read it, with its message's key and id."""

    pk: int
    parent_pk: int
    parent_id: str  # the message's message_id
    part_id: str
    position: int
    state: MessageState
    provider_status: str | None = None


_SELECT = (
    "SELECT p.id, p.parent_pk, m.message_id, p.part_id, p.position, p.status, p.sent_at, "
    "p.final_at, p.final_via, p.provider_status "
    "FROM message_parts p JOIN messages m ON m.id = p.parent_pk "
)
_PART = _SELECT + "WHERE p.provider = ? AND p.part_id = ?"
_PARTS_OF = _SELECT + "WHERE p.parent_pk = ? ORDER BY p.position"
_FINAL = ", ".join(f"'{s.value}'" for s in sorted(FINAL_STATUSES))


def part(row: Sequence[Any]) -> Part:
    return Part(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        MessageState(Status(row[5]), row[6], row[7], row[8]),
        row[9],
    )


@lru_cache(maxsize=16)
def _checked(columns: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(columns) - PART_COLUMNS
    if unknown:
        raise ValueError(f"not columns of message_parts: {sorted(unknown)}")
    return columns


class PartRows:
    """The parts' half of rules.RowAccess, in the SQL both dialects share (SQLite's "?"
    placeholder; a dialect sets `mark`). Each part's writes are serialised by its id's lock
    (the callback's); its message's by the message's (rules read it with rows.message)."""

    mark: ClassVar[str] = "?"
    conn: Any

    def _sql(self, sql: str) -> str:
        return sql if self.mark == "?" else sql.replace("?", self.mark)

    def part(self, provider: str, part_id: str) -> Part | None:
        row = self.conn.execute(self._sql(_PART), (provider, part_id)).fetchone()
        return None if row is None else part(row)

    def parts_of(self, parent_pk: int) -> list[Part]:
        return [part(row) for row in self.conn.execute(self._sql(_PARTS_OF), (parent_pk,))]

    def pending_parts(self, parent_pks: Sequence[int]) -> dict[int, list[Part]]:
        """The parts not final yet of those of these messages that have parts, in order."""
        if not parent_pks:
            return {}
        marks = ", ".join("?" * len(parent_pks))
        found: dict[int, list[Part]] = {}
        rows = self.conn.execute(
            self._sql(
                f"{_SELECT}WHERE p.parent_pk IN ({marks}) AND p.status NOT IN ({_FINAL}) "
                "ORDER BY p.parent_pk, p.position"
            ),
            list(parent_pks),
        )
        for row in rows:
            found.setdefault(row[1], []).append(part(row))
        return found

    def insert_part(self, row: Mapping[str, Any]) -> None:
        columns = _checked(tuple(row))
        self.conn.execute(
            self._sql(
                f"INSERT INTO message_parts ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})"
            ),
            list(row.values()),
        )

    def update_part(self, pk: int, changes: Mapping[str, Any]) -> None:
        columns = _checked(tuple(changes))
        self.conn.execute(
            self._sql(
                f"UPDATE message_parts SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"
            ),
            [*changes.values(), pk],
        )

    def mark_part_events(self, parent_pk: int, part_id: str, *, latest: bool = False) -> None:
        """Mark the events kept under `parent_pk` with the part's id as the part's (events.
        is_part, migration 0015): needed when the part's id is its message's own. All of them
        (at the registration, before the message has folds of its own), or the latest only
        (the one just inserted: the message's lock, held, keeps other writers of that id out)."""
        if latest:
            sql = (
                "UPDATE events SET is_part = 1 WHERE id = (SELECT max(id) FROM events "
                "WHERE message_pk = ? AND message_id = ?)"
            )
        else:
            sql = "UPDATE events SET is_part = 1 WHERE message_pk = ? AND message_id = ?"
        self.conn.execute(self._sql(sql), (parent_pk, part_id))

    def adopt_message(self, pk: int, parent_pk: int) -> None:
        """The message `pk` (created by an early callback for what is a part) becomes a part of
        `parent_pk`: its events move to the parent, and its row goes."""
        self.conn.execute(
            self._sql("UPDATE events SET message_pk = ? WHERE message_pk = ?"), (parent_pk, pk)
        )
        self.conn.execute(self._sql("DELETE FROM messages WHERE id = ?"), (pk,))
