"""`receiver copy --from FILE --to URL`: a SQLite database moved into an empty PostgreSQL one,
every row and id kept; and `receiver backup`, which on PostgreSQL points at pg_dump."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pg import PgServer
from support import LiveServer, new_sid, post_status

from receiver.store.copy import CopyFailed, copy_database, open_source
from receiver.store.postgres import connection, schema

BIN = Path(sys.executable).parent / "receiver"
StartServer = Callable[..., LiveServer]
TABLES = ("messages", "events")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECEIVER_", "TWILIO_")) and k not in ("DATABASE_URL", "DYNO")
    }
    return subprocess.run(
        [str(BIN), *args], env=clean | env, capture_output=True, text=True, timeout=120
    )


def build_source(start_server: StartServer) -> Path:
    """A SQLite database written by the service itself: registered messages, callbacks with
    their duplicates and a stale `sent`, callbacks held for messages not registered yet, and
    the polling queue; one raw body holding a NUL (SQLite keeps it; PostgreSQL text cannot)."""
    server = start_server(unknown_messages="hold")
    sids = [new_sid() for _ in range(12)]
    with server.client() as client:
        response = client.post(
            "/v1/messages",
            json={"messages": [{"provider": "twilio", "message_id": sid} for sid in sids]},
        )
        assert response.status_code == 200, response.text
        for sid in sids[:8]:
            for status in ("sent", "delivered", "delivered", "sent"):  # a retry, a stale sent
                assert post_status(client, server.callback_url, sid, status).status_code == 204
        for _ in range(3):  # held: nobody registered these
            held = post_status(client, server.callback_url, new_sid(), "delivered")
            assert held.status_code == 204
        parts = [new_sid(), new_sid()]  # a multipart message, one part delivered
        response = client.post(
            "/v1/messages", json={"provider": "twilio", "message_id": "long-1", "parts": parts}
        )
        assert response.status_code == 201, response.text
        assert post_status(client, server.callback_url, parts[0], "delivered").status_code == 204
    server.stop()
    path = Path(server.settings.database)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET body = body || char(0) || 'after-nul' WHERE id = 1")
    return path


def rows(conn: Any, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    names = ", ".join(columns)
    return [tuple(row) for row in conn.execute(f"SELECT {names} FROM {table} ORDER BY id")]


def test_copy_moves_every_row_with_its_id_and_prints_the_counts(
    start_server: StartServer, pg_url: str
) -> None:
    source = build_source(start_server)
    result = run("copy", "--from", str(source), "--to", pg_url)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(source) as lite, connection.connect(pg_url) as pg:
        for table in TABLES:
            columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
            assert rows(pg, table, columns) == rows(lite, table, columns), table
        counts = {
            "messages": 13,  # held callbacks make no message, parts are not messages
            "message parts": 2,
            "events": 8 * 4 + 3 + 1,
            "held events (pending_unknown)": 3,
            "messages due for polling": 5,  # registered, never final
        }
        assert lite.execute("SELECT count(*) FROM messages").fetchone()[0] == counts["messages"]
        body = pg.execute("SELECT body FROM events WHERE id = 1").fetchone()[0]
        assert body.endswith("\x00after-nul")
        # New rows are numbered after the copied ones.
        (next_id,) = pg.execute(
            "INSERT INTO messages (provider, message_id, status, registered, is_final, "
            "created_at, updated_at) VALUES ('twilio', 'SMnew', 'queued', 1, 0, 'x', 'x') "
            "RETURNING id"
        ).fetchone()
        assert next_id == 14
        # The /metrics counts, kept by the target's triggers as the rows went in.
        by_status = dict(
            pg.execute("SELECT status, sum(n) FROM message_status_counts GROUP BY status")
        )
        expected = dict(lite.execute("SELECT status, count(*) FROM messages GROUP BY status"))
        assert {s: n for s, n in by_status.items() if n} == expected | {"queued": 1}
    lines = result.stdout.splitlines()
    assert lines[-6].split() == ["source", "target"]
    for line, (name, count) in zip(lines[-5:], counts.items(), strict=True):
        assert line.split() == [*name.split(), str(count), str(count)]
    assert "password" not in result.stdout


def test_copy_refuses_a_target_that_holds_data_and_leaves_it_as_it_was(
    start_server: StartServer, pg_url: str
) -> None:
    source = build_source(start_server)
    assert run("copy", "--from", str(source), "--to", pg_url).returncode == 0
    with sqlite3.connect(source) as conn:
        conn.execute("DELETE FROM events WHERE message_pk IS NULL")
    again = run("copy", "--from", str(source), "--to", pg_url)
    assert again.returncode == 2
    assert again.stderr == (
        "receiver: copy refused: the target database already holds messages: copy into an "
        "empty database (a new one, or drop its receiver tables first)\n"
    )
    assert again.stdout == ""
    with connection.connect(pg_url) as pg:
        assert pg.execute("SELECT count(*) FROM events").fetchone()[0] == 8 * 4 + 3 + 1


def test_copy_into_a_new_database_migrates_it_first(
    start_server: StartServer, pg_server: PgServer
) -> None:
    """The target's tables are created by the copy itself: no `receiver migrate` before it."""
    source = build_source(start_server)
    target = pg_server.create_database()
    result = run("copy", "--from", str(source), "--to", target)
    assert result.returncode == 0, result.stderr
    steps = len(schema.STEPS)
    assert f"applied {steps} migration(s)" in result.stdout
    with connection.connect(target) as pg:
        assert pg.execute("SELECT count(*) FROM _receiver_migrations").fetchone()[0] == steps


def test_an_empty_source_copies_nothing_and_says_so(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "empty.db"
    assert run("migrate", RECEIVER_DATABASE=str(source)).returncode == 0
    result = run("copy", "--from", str(source), "--to", pg_url)
    assert result.returncode == 0, result.stderr
    assert [line.split()[-2:] for line in result.stdout.splitlines()[-4:]] == [["0", "0"]] * 4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: None, "there is no SQLite database at {path}"),
        (lambda path: path.write_bytes(b"not sqlite at all" * 100), "is not a SQLite database"),
        (
            lambda path: sqlite3.connect(path).execute("CREATE TABLE notes (id)"),
            "is not a receiver database",
        ),
        (
            lambda path: sqlite3.connect(path).executescript(
                "CREATE TABLE messages (id); CREATE TABLE events (id)"
            ),
            "is not migrated to this version",
        ),
    ],
    ids=["missing", "not-sqlite", "other-database", "not-migrated"],
)
def test_copy_refuses_a_source_it_cannot_read_as_receivers(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    """Refused before any connection to the target, which need not even exist."""
    path = tmp_path / "source.db"
    make(path)
    result = run("copy", "--from", str(path), "--to", "postgresql://u:s3cret@127.0.0.1:9/none")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("receiver: copy refused: ")
    assert message.format(path=path) in result.stderr
    assert "s3cret" not in result.stderr


def test_copy_refuses_a_target_that_is_not_postgresql(tmp_path: Path) -> None:
    result = run("copy", "--from", str(tmp_path / "a.db"), "--to", str(tmp_path / "b.db"))
    assert result.returncode == 2
    assert result.stderr.startswith("receiver: --to must be a PostgreSQL URL")


def test_copy_to_an_unreachable_database_fails_without_showing_the_password(
    start_server: StartServer,
) -> None:
    source = build_source(start_server)
    result = run("copy", "--from", str(source), "--to", "postgresql://u:s3cret@127.0.0.1:9/none")
    assert result.returncode == 1
    assert result.stderr.startswith("receiver: copy into postgresql://u:***@127.0.0.1:9/none")
    assert "s3cret" not in result.stderr + result.stdout


def test_backup_with_database_url_says_how_to_use_pg_dump(tmp_path: Path) -> None:
    result = run(
        "backup",
        str(tmp_path / "copy.db"),
        DATABASE_URL="postgresql://u:s3cret@127.0.0.1:9/none",
    )
    assert result.returncode == 2
    assert 'pg_dump --format=custom "$DATABASE_URL" > receiver.dump' in result.stderr
    assert result.stdout == "" and not (tmp_path / "copy.db").exists()


def test_the_service_on_the_copy_answers_as_it_did_on_the_file(
    start_server: StartServer, pg_url: str
) -> None:
    """Messages, their histories, stats and the list's pages read the same after the move,
    and a list cursor handed out before it still pages on from where it was."""
    source = build_source(start_server)
    sqlite_server = start_server(database=str(source))
    with sqlite_server.client() as client:
        before = _answers(client)
        first = client.get("/v1/messages", params={"limit": 5}).json()
    sqlite_server.stop()
    assert len(before["list"]) == 13 and first["next_cursor"] and before["page 2"]["messages"]
    assert run("copy", "--from", str(source), "--to", pg_url).returncode == 0
    pg_server = start_server(database=str(source.with_name("unused.db")), database_url=pg_url)
    with pg_server.client() as client:
        assert _answers(client) == before
        page = client.get("/v1/messages", params={"limit": 5, "cursor": first["next_cursor"]})
        assert page.json() == before["page 2"]
    assert not source.with_name("unused.db").exists()


def _answers(client: Any) -> dict[str, Any]:
    listed = client.get("/v1/messages", params={"limit": 100}).json()["messages"]
    answers: dict[str, Any] = {"list": listed, "stats": client.get("/v1/stats").json()}
    first = client.get("/v1/messages", params={"limit": 5}).json()
    answers["page 2"] = client.get(
        "/v1/messages", params={"limit": 5, "cursor": first["next_cursor"]}
    ).json()
    for item in listed:
        path = f"/v1/messages/{item['message_id']}"
        answers[path] = client.get(path).json()
        answers[path + "/events"] = client.get(path + "/events").json()
    return answers


def test_a_copy_whose_counts_differ_keeps_nothing(start_server: StartServer, pg_url: str) -> None:
    """All or nothing: a target that ends up with other counts than the source (here a trigger
    adds a row) is rolled back whole, and says which counts differ."""
    path = build_source(start_server)
    with connection.connect(pg_url) as pg:
        schema.migrate(pg)
        pg.execute(
            "CREATE FUNCTION one_more() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO events (id, provider, message_id, source, provider_status, outcome, "
            "received_at) VALUES (1000000, 'twilio', 'SMextra', 'callback', 'sent', 'applied', "
            "'x'); "
            "RETURN NULL; END $$"
        )
        pg.execute(
            "CREATE TRIGGER one_more AFTER INSERT ON messages FOR EACH ROW "
            "WHEN (NEW.id = 1) EXECUTE FUNCTION one_more()"
        )
        source = open_source(path)
        try:
            with pytest.raises(CopyFailed, match="the counts differ: nothing was copied") as error:
                copy_database(source, pg, migrate=schema.migrate)
        finally:
            source.close()
        assert "events" in str(error.value)
        for table in TABLES:
            assert pg.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
