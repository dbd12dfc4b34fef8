"""The `receiver` command, run as a user would: as a separate process."""

from __future__ import annotations

import gc
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import free_port, wait_for_healthz

from receiver.cli import tune_gc

BIN = Path(sys.executable).parent / "receiver"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("command", [[str(BIN)], [sys.executable, "-m", "receiver"]])
def test_help_lists_the_commands(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    for name in ("serve", "migrate", "prune", "backup"):
        assert name in result.stdout


def test_migrate_creates_the_database_and_is_repeatable(tmp_path: Path) -> None:
    db = tmp_path / "data" / "r.db"
    first = run(str(BIN), "migrate", env={"RECEIVER_DATABASE": str(db)})
    second = run(str(BIN), "migrate", env={"RECEIVER_DATABASE": str(db)})
    assert first.returncode == 0 and "applied 14 migration(s): 0001_messages_and_events" in (
        first.stdout
    )
    assert second.returncode == 0 and "up to date" in second.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == 14


def test_a_bad_setting_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    result = run(
        str(BIN), "serve", env={"PORT": "eighty", "RECEIVER_DATABASE": str(tmp_path / "x")}
    )
    assert result.returncode == 2
    assert "PORT must be a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_answers_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "RECEIVER_DATABASE": str(tmp_path / "s.db"),
        "RECEIVER_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [str(BIN), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        response = wait_for_healthz(f"http://127.0.0.1:{port}", proc)
        assert response.status_code == 200 and response.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal, as a process should.
    assert proc.returncode in (0, -signal.SIGTERM)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert any('"event": "started"' in line for line in lines)
    assert any('"event": "api_token_unset"' in line for line in lines)
    assert any('"event": "stopped"' in line for line in lines)


def test_an_unusable_database_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run(str(BIN), "serve", env={"RECEIVER_DATABASE": str(blocker / "r.db")})
    assert result.returncode == 1
    assert "cannot open the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_command_line_flags_are_checked_like_settings(tmp_path: Path) -> None:
    result = run(
        str(BIN), "serve", "--port", "70000", env={"RECEIVER_DATABASE": str(tmp_path / "x")}
    )
    assert result.returncode == 2
    assert "PORT must be between 0 and 65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_tunes_the_garbage_collector_for_load() -> None:
    threshold = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == 20_000
        assert gc.get_freeze_count() > 0  # start-up objects are left out of collections
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_serve_on_a_busy_port_stops_before_touching_the_database(tmp_path: Path) -> None:
    """A second instance started by mistake says why and leaves no trace."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        database = tmp_path / "second.db"
        result = run(
            str(BIN),
            "serve",
            "--port",
            str(port),
            env={"RECEIVER_DATABASE": str(database), "RECEIVER_LOG_FORMAT": "json"},
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr and '"started"' not in result.stdout + result.stderr
    assert not database.exists()
