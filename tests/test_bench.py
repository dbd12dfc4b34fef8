"""bench/run.py's PostgreSQL side (`--database URL`), without running wrk: its database of its
own, the check that every acknowledged callback is stored once, and the durability check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pg import PgServer

from receiver.store.postgres import schema

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from harness import PgDatabase, check_receiver_database  # noqa: E402


def test_a_run_gets_a_fresh_database_that_is_dropped_at_the_end(pg_server: PgServer) -> None:
    run = PgDatabase.create(pg_server.url())
    assert run.created is not None and run.url == pg_server.url(run.created)
    with psycopg.connect(run.url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (run.created,)
    run.drop()
    with psycopg.connect(pg_server.url()) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (run.created,))
        assert found.fetchone() is None


def test_the_durability_check_reads_the_servers_settings(pg_server: PgServer) -> None:
    """The test server runs with fsync off, which a benchmark must not pass for durable."""
    run = PgDatabase.create(pg_server.url())
    try:
        ok, how = run.durability()
    finally:
        run.drop()
    assert not ok
    assert "fsync=off" in how and "synchronous_commit=off" in how


def _store(url: str, rows: list[tuple[str, str]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        schema.migrate(conn)
        for pk, (sid, outcome) in enumerate(rows, start=1):
            conn.execute(
                "INSERT INTO messages (id, provider, message_id, status, registered, is_final, "
                "created_at, updated_at) VALUES (%s, 'twilio', %s, 'delivered', 0, 1, 'x', 'x') "
                "ON CONFLICT DO NOTHING",
                (pk, sid),
            )
            conn.execute(
                "INSERT INTO events (provider, message_id, message_pk, source, provider_status, "
                "outcome, received_at) VALUES ('twilio', %s, %s, 'callback', 'delivered', %s, "
                "'x')",
                (sid, pk, outcome),
            )


def test_the_database_check_reads_postgresql(pg_url: str) -> None:
    _store(pg_url, [("SMa", "applied"), ("SMb", "applied")])
    ok, lines = check_receiver_database(pg_url, ["SMa", "SMb"], in_flight=0)
    assert ok, lines
    assert lines[0] == "integrity_check: not on PostgreSQL"


@pytest.mark.parametrize(
    ("rows", "acked"),
    [
        ([("SMa", "applied")], ["SMa", "SMb"]),  # an acknowledged callback is missing
        ([("SMa", "applied"), ("SMa", "duplicate")], ["SMa"]),  # stored twice
    ],
    ids=["missing", "twice"],
)
def test_the_database_check_fails_on_postgresql_as_on_sqlite(
    pg_url: str, rows: list[tuple[str, str]], acked: list[str]
) -> None:
    _store(pg_url, rows)
    ok, lines = check_receiver_database(pg_url, acked, in_flight=0)
    assert not ok, lines


def test_the_postgresql_server_needs_a_database_url() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--servers", "receiver,postgresql"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "the postgresql server needs --database URL" in result.stderr
