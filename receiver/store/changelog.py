"""The change log's SQL, once for both dialects (placeholders aside): the changes after an id
with what the stream's data needs of their message, the marks a stream starts and resumes
from, and pruning. The rows are written by the triggers of migration 0008."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from receiver.changes import change_data
from receiver.store.rows import marked

CHANGE_SELECT = (
    "SELECT c.id, c.kind, c.provider, c.message_id, c.previous_status, c.status, "
    "c.provider_status, c.error_code, m.final_via, m.to_number, m.account, m.metadata, "
    "m.sent_at, m.final_at FROM changes c LEFT JOIN messages m ON m.id = c.message_pk "
    "WHERE c.id > ? ORDER BY c.id LIMIT ?"
)
_NAMES = (
    "id",
    "kind",
    "provider",
    "message_id",
    "previous_status",
    "status",
    "provider_status",
    "error_code",
    "final_via",
    "to_number",
    "account",
    "metadata",
    "sent_at",
    "final_at",
)
MARKS = "SELECT (SELECT max(id) FROM changes), (SELECT through FROM changes_pruned WHERE id = 1)"
LAST_OLD = "SELECT max(id) FROM changes WHERE created_at < ?"
DELETE_UPTO = "DELETE FROM changes WHERE id <= ?"
_MARK_PRUNED = (
    "INSERT INTO changes_pruned (id, through) VALUES (1, ?) "
    "ON CONFLICT (id) DO UPDATE SET through = excluded.through"
)


def change(row: Sequence[Any]) -> dict[str, Any]:
    """A change from a CHANGE_SELECT row: its id, kind and data (receiver.changes)."""
    named = dict(zip(_NAMES, row, strict=True))
    return {"id": named["id"], "kind": named["kind"], "data": change_data(named)}


def marks(row: Sequence[Any] | None) -> tuple[int, int]:
    """(the last change id, the last id pruned) from a MARKS row; 0 for none."""
    last, pruned = row if row is not None else (None, None)
    return max(last or 0, pruned or 0), pruned or 0


def prune(conn: Any, through: int, mark: str = "?") -> int:
    """Delete the changes up to id `through` (found by the dialect's last_old, on a read
    connection), noting it as the last id pruned; the number deleted. On the writer."""
    deleted = conn.execute(marked(DELETE_UPTO, mark), (through,)).rowcount
    conn.execute(marked(_MARK_PRUNED, mark), (through,))
    return int(deleted or 0)
