"""Retention and backup: deleting old final messages in small batches, and the online copy."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from receiver.store.base import BackupInfo, StoreUnavailable
from receiver.store.sqlite.connection import connect

# A final message's age is taken from its final time; updated_at covers any row without one.
_PRUNABLE = "is_final = 1 AND coalesce(final_at, updated_at) < ?"


def prunable_ids(
    conn: sqlite3.Connection, after: tuple[str, int], older_than: str, batch_size: int
) -> list[tuple[str, int]]:
    """The next prunable messages' (final time, id) after `after`, oldest first, on
    idx_messages_prunable (the expression and the WHERE match the index's exactly)."""
    return [
        (row[0], row[1])
        for row in conn.execute(
            "SELECT coalesce(final_at, updated_at), id FROM messages "
            "WHERE is_final = 1 AND coalesce(final_at, updated_at) < ? "
            "AND (coalesce(final_at, updated_at), id) > (?, ?) "
            "ORDER BY coalesce(final_at, updated_at), id LIMIT ?",
            (older_than, after[0], after[1], batch_size),
        )
    ]


def delete_messages(conn: sqlite3.Connection, ids: list[int], older_than: str) -> tuple[int, int]:
    """Delete those of `ids` still prunable (a late callback may have moved one), with their
    events; (messages, events) deleted."""
    marks = ",".join("?" * len(ids))
    still = [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM messages WHERE id IN ({marks}) AND {_PRUNABLE}", (*ids, older_than)
        )
    ]
    if not still:
        return 0, 0
    marks = ",".join("?" * len(still))
    events = conn.execute(f"DELETE FROM events WHERE message_pk IN ({marks})", still).rowcount
    conn.execute(f"DELETE FROM messages WHERE id IN ({marks})", still)
    conn.execute(f"DELETE FROM message_parts WHERE parent_pk IN ({marks})", still)  # 0013
    return len(still), events


def backup(path: str, target: str, *, busy_timeout_ms: int) -> BackupInfo:
    """SQLite's online backup API in one step: one read transaction, so the copy is a
    consistent snapshot, and under WAL the service's writers are not blocked meanwhile."""
    if not Path(path).is_file():
        raise StoreUnavailable(f"there is no database at {path!r}")
    dest = Path(target)
    if not dest.parent.is_dir():
        raise StoreUnavailable(f"cannot back up to {target!r}: {dest.parent} is not a directory")
    partial_path = dest.with_name(dest.name + ".partial")
    try:
        partial_path.unlink(missing_ok=True)
        source = connect(path, busy_timeout_ms=busy_timeout_ms, read_only=True)
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"cannot back up {path!r}: {exc}") from exc
    try:
        copy = sqlite3.connect(partial_path)
        try:
            source.backup(copy)
            messages = copy.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            copy.close()
        with open(partial_path, "rb") as written:
            os.fsync(written.fileno())  # on disk before it takes the target's name
        os.replace(partial_path, dest)
        _fsync_directory(dest.parent)  # the new name, too, survives a crash
    except (OSError, sqlite3.Error) as exc:
        partial_path.unlink(missing_ok=True)
        raise StoreUnavailable(f"backup to {target!r} failed: {exc}") from exc
    finally:
        source.close()
    return BackupInfo(str(dest), dest.stat().st_size, messages)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
