"""The messages table's indexes after 0006: one index on the message id, each query still
served by an index (issue 16: every index earns its place)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from receiver.store.rows import QUEUED_COLUMNS
from receiver.store.sqlite import connect, schema

NOW = "2026-12-03T10:00:00.000Z"


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    conn = connect(str(tmp_path / "i.db"))
    schema.migrate(conn)
    return conn


def plan(conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()) -> str:
    return " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_one_index_on_the_message_id_keeps_the_pair_unique(conn: sqlite3.Connection) -> None:
    names = {r[1] for r in conn.execute("PRAGMA index_list(messages)")}
    assert "idx_messages_message_id_provider" in names
    assert not {"idx_messages_message_id", "idx_messages_provider_message_id"} & names
    insert = (
        "INSERT INTO messages (provider, message_id, status, registered, is_final, "
        "created_at, updated_at) VALUES (?, ?, 'sent', 0, 0, ?, ?)"
    )
    conn.execute(insert, ("twilio", "SM1", NOW, NOW))
    conn.execute(insert, ("telecom23", "SM1", NOW, NOW))  # the same id at another provider
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert, ("twilio", "SM1", NOW, NOW))


def test_the_lookups_by_id_and_a_send_group_use_the_message_id_index(
    conn: sqlite3.Connection,
) -> None:
    by_id = plan(conn, "SELECT * FROM messages WHERE message_id = ? ORDER BY id LIMIT 10", ("x",))
    by_pair = plan(
        conn, "SELECT id FROM messages WHERE provider = ? AND message_id = ?", ("t", "x")
    )
    group = plan(
        conn,
        f"SELECT {QUEUED_COLUMNS} FROM messages INDEXED BY idx_messages_message_id_provider "
        "WHERE provider = ? AND message_id >= ? AND message_id < ? AND next_poll_at IS NOT NULL",
        ("mesms", "abc", "abc\U0010ffff"),
    )
    for found in (by_id, by_pair, group):
        assert "idx_messages_message_id_provider" in found and "SCAN" not in found, found
    assert "message_id>? AND message_id<?" in group
