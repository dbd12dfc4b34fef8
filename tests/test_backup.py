"""`receiver backup PATH`: a consistent copy of the database, taken while the service writes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from seed import seed_messages
from support import LiveServer, new_sid, post_status, wait_until

StartServer = Callable[..., LiveServer]
BIN = Path(sys.executable).parent / "receiver"


def run_backup(database: Path | str, target: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "backup", str(target)],
        env={**os.environ, "RECEIVER_DATABASE": str(database)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def check_copy(path: Path) -> tuple[int, int]:
    """The copy is a sound database, and each message's status is the one its latest event
    set (a message and its event are written in one transaction); (messages, events)."""
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        torn = conn.execute(
            "SELECT count(*) FROM messages m WHERE m.status IS NOT (SELECT e.status FROM events e "
            "WHERE e.message_pk = m.id ORDER BY e.id DESC LIMIT 1)"
        ).fetchone()[0]
        assert torn == 0
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return messages, events


def test_backup_while_callbacks_are_written_is_a_consistent_copy(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    seed_messages(server.settings.database, 20_000)  # enough pages that the copy takes a while
    sent: list[int] = []
    stop = threading.Event()

    def callbacks() -> None:
        with server.client() as client:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline and len(sent) < 5_000:
                sid = new_sid()
                for status in ("sent", "delivered"):
                    response = post_status(client, server.callback_url, sid, status)
                    sent.append(response.status_code)

    writer = threading.Thread(target=callbacks)
    writer.start()
    try:
        # Callbacks are flowing before the backup starts,
        wait_until(lambda: len(sent) >= 20, what="callbacks under way")
        result = run_backup(server.settings.database, tmp_path / "copy.db")
        during = len(sent)
        wait_until(lambda: len(sent) > during, what="callbacks after the backup")  # and after.
    finally:
        stop.set()
        writer.join(timeout=30)

    assert result.returncode == 0, result.stderr
    assert set(sent) == {204}
    messages, events = check_copy(tmp_path / "copy.db")
    assert f"{messages} messages" in result.stdout
    # The copy has the seeded messages and the callbacks committed before it was taken (the
    # last one's `delivered` perhaps not yet), none of those that came after.
    callback_messages = messages - 20_000
    assert 10 <= callback_messages <= during // 2 + 1
    assert events - 20_000 * 2 in (callback_messages * 2, callback_messages * 2 - 1)
    assert len(sent) > during
    assert not (tmp_path / "copy.db.partial").exists()


def test_backup_into_a_directory_and_over_an_old_copy(tmp_path: Path) -> None:
    database = tmp_path / "live" / "receiver.db"
    database.parent.mkdir()
    seed_messages(database, 3)
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "receiver.db").write_text("an old, stale copy")

    result = run_backup(database, backups)

    assert result.returncode == 0, result.stderr
    assert check_copy(backups / "receiver.db") == (3, 6)
    assert str(backups / "receiver.db") in result.stdout


def test_backup_refuses_to_overwrite_the_database_itself(tmp_path: Path) -> None:
    database = tmp_path / "receiver.db"
    seed_messages(database, 3)
    result = run_backup(database, database)
    assert result.returncode == 2 and "the database itself" in result.stderr
    assert check_copy(database) == (3, 6)


def test_backup_of_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    result = run_backup(tmp_path / "nothing.db", tmp_path / "copy.db")
    assert result.returncode == 1
    assert "there is no database" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nothing.db").exists() and not (tmp_path / "copy.db").exists()


def test_backup_into_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    database = tmp_path / "receiver.db"
    seed_messages(database, 1)
    result = run_backup(database, tmp_path / "no-such-dir" / "copy.db")
    assert result.returncode == 1
    assert "is not a directory" in result.stderr and "Traceback" not in result.stderr


def test_the_copy_serves_as_the_database_of_a_new_service(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    sid = new_sid()
    with server.client() as client:
        assert post_status(client, server.callback_url, sid, "delivered").status_code == 204
    copy = tmp_path / "restored" / "receiver.db"
    copy.parent.mkdir()
    assert run_backup(server.settings.database, copy).returncode == 0
    restored = start_server(database=str(copy))
    response = httpx.get(f"{restored.base_url}/v1/messages/{sid}", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "delivered"
