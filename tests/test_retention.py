"""Retention: final messages past RECEIVER_RETENTION_DAYS go, with their events, in small
batches that let callbacks through; by the service's own task and by `receiver prune`."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from seed import seed_messages
from support import WAIT, LiveServer, make_settings, wait_until

from receiver import retention
from receiver.app import create_app
from receiver.engine import Status, StatusEvent
from receiver.store.sqlite import SQLiteStore

StartServer = Callable[..., LiveServer]
BIN = Path(sys.executable).parent / "receiver"


def counts(path: str | Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        return (
            conn.execute("SELECT count(*) FROM messages").fetchone()[0],
            conn.execute("SELECT count(*) FROM events").fetchone()[0],
        )


def message_ids(path: str | Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT message_id FROM messages")}


def seed_mix(path: Path) -> dict[str, list[str]]:
    """Old final messages (to prune), recent final ones and old unfinished ones (to keep)."""
    return {
        "old_final": seed_messages(path, 7, prefix="SMold", status="undelivered", age_days=100),
        "recent_final": seed_messages(path, 3, prefix="SMnew", age_days=10),
        "old_sent": seed_messages(path, 2, prefix="SMsent", status="sent", age_days=100),
    }


def test_prune_deletes_final_messages_past_the_window_with_their_events(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    seeded = seed_mix(path)
    store = SQLiteStore(str(path))
    asyncio.run(store.open())
    try:
        result = asyncio.run(store.prune(retention.cutoff(90), batch_size=3))
    finally:
        asyncio.run(store.close())
    assert (result.messages, result.events, result.batches) == (7, 14, 3)
    assert message_ids(path) == set(seeded["recent_final"] + seeded["old_sent"])
    assert counts(path) == (5, 10)
    with sqlite3.connect(path) as conn:  # no event is left pointing at a deleted message
        assert conn.execute(
            "SELECT count(*) FROM events WHERE message_pk NOT IN (SELECT id FROM messages)"
        ).fetchone() == (0,)


def old_left(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        left: int = conn.execute(
            "SELECT count(*) FROM messages WHERE message_id LIKE 'SMold%'"
        ).fetchone()[0]
    return left


def test_callbacks_are_committed_between_prune_batches(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    seed_messages(path, 3_000, prefix="SMold", age_days=100, events=3)
    store = SQLiteStore(str(path))

    async def scenario() -> tuple[int, list[int], int]:
        await store.open()
        try:
            pruning = asyncio.create_task(store.prune(retention.cutoff(90), batch_size=500))
            # How many old messages each callback saw pruned while it waited: counted, not
            # timed, so a slow machine changes nothing.
            pruned_meanwhile: list[int] = []
            deadline = time.monotonic() + WAIT
            while (
                not pruning.done() and time.monotonic() < deadline and len(pruned_meanwhile) < 5000
            ):
                before = old_left(path)
                await store.record(
                    [StatusEvent("twilio", f"SMlive{len(pruned_meanwhile)}", "sent", Status.SENT)]
                )
                pruned_meanwhile.append(before - old_left(path))
            return (await pruning).batches, pruned_meanwhile, (await pruning).messages
        finally:
            await store.close()

    batches, pruned_meanwhile, pruned = asyncio.run(scenario())
    assert pruned == 3_000 and batches == 6
    # Callbacks went on while the prune ran, each waiting at most for the batch under way and
    # the one committed with it (a prune in one transaction would hold the first for all 3,000).
    assert len(pruned_meanwhile) >= 3
    assert max(pruned_meanwhile) <= 2 * 500
    assert counts(path) == (len(pruned_meanwhile), len(pruned_meanwhile))


def test_the_service_prunes_at_start_and_keeps_what_is_not_due(
    tmp_path: Path, start_server: StartServer
) -> None:
    seeded = seed_mix(tmp_path / "receiver.db")
    with structlog.testing.capture_logs() as logs:
        server = start_server(retention_days=30)
        with server.client() as client:
            last_old = f"/v1/messages/{seeded['old_final'][-1]}"
            wait_until(lambda: client.get(last_old).status_code == 404, what="the old pruned")
            for message_id in seeded["old_final"]:
                assert client.get(f"/v1/messages/{message_id}").status_code == 404
            for message_id in seeded["recent_final"] + seeded["old_sent"]:
                assert client.get(f"/v1/messages/{message_id}/events").status_code == 200
    pruned = next(e for e in logs if e["event"] == "pruned")
    assert (pruned["messages"], pruned["events"]) == (7, 14)
    assert counts(tmp_path / "receiver.db") == (5, 10)


def retention_tasks(tmp_path: Path, days: int) -> list[str]:
    """The retention tasks running inside the app's lifespan with RECEIVER_RETENTION_DAYS=days."""

    async def run() -> list[str]:
        app = create_app(make_settings(tmp_path, retention_days=days))
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0)
            return [t.get_name() for t in asyncio.all_tasks() if not t.done()]

    return [name for name in asyncio.run(run()) if name == "receiver-retention"]


def test_retention_runs_as_a_task_of_the_service_unless_it_is_zero(tmp_path: Path) -> None:
    assert retention_tasks(tmp_path, 90) == ["receiver-retention"]
    assert retention_tasks(tmp_path, 0) == []


def run_prune(path: Path, *args: str, days: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECEIVER_DATABASE": str(path)}
    if days is not None:
        env["RECEIVER_RETENTION_DAYS"] = days
    return subprocess.run(
        [str(BIN), "prune", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_receiver_prune_deletes_what_is_due_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    seeded = seed_mix(path)
    result = run_prune(path, "--days", "30", days="365")  # the flag overrides the variable
    assert result.returncode == 0, result.stderr
    assert "pruned 7 message(s)" in result.stdout
    assert message_ids(path) == set(seeded["recent_final"] + seeded["old_sent"])
    again = run_prune(path, days="5")
    assert "pruned 3 message(s)" in again.stdout
    assert message_ids(path) == set(seeded["old_sent"])


def test_receiver_prune_with_retention_off_deletes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    seed_mix(path)
    result = run_prune(path, days="0")
    assert result.returncode == 0 and "retention is off" in result.stdout
    assert counts(path) == (12, 24)
    bad = run_prune(path, "--days", "-1")
    assert bad.returncode == 2
    assert "RECEIVER_RETENTION_DAYS must be between 0 and 36500" in bad.stderr


def test_receiver_prune_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    """Run from the wrong directory, prune says so rather than make an empty database."""
    path = tmp_path / "elsewhere.db"
    result = run_prune(path, days="30")
    assert result.returncode == 1 and "there is no database" in result.stderr
    assert not path.exists()
    off = run_prune(path, "--days", "0")
    assert off.returncode == 0 and "--days 0 keeps everything" in off.stdout


def test_receiver_prune_beside_the_running_service_lets_its_writes_through(
    start_server: StartServer,
) -> None:
    """Two processes write the file: the service's registrations wait for a batch at most."""
    server = start_server(retention_days=0)
    path = Path(server.settings.database)
    seed_messages(path, 1_200, prefix="SMold", age_days=100)
    with server.client() as client:
        proc = subprocess.Popen(
            [str(BIN), "prune", "--days", "30"],
            env={**os.environ, "RECEIVER_DATABASE": str(path)},
            stdout=subprocess.PIPE,
            text=True,
        )
        statuses = []
        while proc.poll() is None and len(statuses) < 500:
            statuses.append(
                client.post(
                    "/v1/messages", json={"provider": "twilio", "message_id": f"SMx{len(statuses)}"}
                ).status_code
            )
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "pruned 1200 message(s)" in output
    assert statuses and set(statuses) == {201}
    assert counts(path)[0] == len(statuses)
