"""Faults during a batch: a locked database, a full disk, a shutdown with requests in flight.

Each fault fails only the requests it touches (503, so the provider retries), later requests
succeed, and nothing is ever half-written.
"""

from __future__ import annotations

import resource
import signal
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from server_process import ServerProcess, event_counts, integrity, signed_callback
from support import LiveServer, assert_error, new_sid


def post_all(url: str, sids: list[str]) -> list[httpx.Response]:
    """Post one callback per sid, all at once, so they share the writer's batches."""

    def post(sid: str) -> httpx.Response:
        body, headers = signed_callback(url, sid)
        return httpx.post(url, content=body, headers=headers, timeout=20)

    with ThreadPoolExecutor(len(sids)) as pool:
        return list(pool.map(post, sids))


def stored_messages(database: Path, sids: list[str]) -> set[str]:
    conn = sqlite3.connect(database)
    try:
        marks = ",".join("?" * len(sids))
        return {
            r[0]
            for r in conn.execute(
                f"SELECT message_id FROM messages WHERE message_id IN ({marks})", sids
            )
        }
    finally:
        conn.close()


def assert_once_each(database: Path, sids: list[str]) -> None:
    counts = event_counts(database)
    for sid in sids:
        assert counts[(sid, "applied")] == 1
        assert sum(n for (s, _), n in counts.items() if s == sid) == 1


def assert_absent(database: Path, sids: list[str]) -> None:
    counts = event_counts(database)
    assert not [s for (s, _) in counts if s in sids]
    assert not stored_messages(database, sids)


def test_a_write_lock_held_past_the_busy_timeout_fails_that_batch_only(
    tmp_path: Path, start_server: Callable[..., LiveServer]
) -> None:
    server = start_server(db_busy_timeout_ms=150)
    database = Path(server.settings.database)
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process writing, and not letting go
    refused_sids = [new_sid() for _ in range(6)]
    try:
        refused = post_all(server.callback_url, refused_sids)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for response in refused:
        assert_error(response, 503, "store_unavailable")
        assert response.headers["retry-after"]
    assert_absent(database, refused_sids)

    later = [new_sid() for _ in range(6)]
    assert [r.status_code for r in post_all(server.callback_url, later)] == [204] * 6
    # Twilio retries the refused ones; now they are recorded, once.
    assert [r.status_code for r in post_all(server.callback_url, refused_sids)] == [204] * 6
    assert_once_each(database, later + refused_sids)
    assert integrity(database) == "ok"


def test_a_full_disk_fails_that_batch_only(tmp_path: Path) -> None:
    """A file-size limit on the running server (RLIMIT_FSIZE, set with Linux's prlimit) makes
    every write that grows a file fail, as a full disk would; lifting it lets requests through."""
    database = tmp_path / "full.db"
    server = ServerProcess(database).start()  # output discarded: a log file would hit the limit
    assert server.proc is not None
    pid = server.proc.pid
    try:
        warm = [new_sid()]
        assert [r.status_code for r in post_all(server.callback_url, warm)] == [204]
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
        try:
            refused_sids = [new_sid() for _ in range(6)]
            refused = post_all(server.callback_url, refused_sids)
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
        for response in refused:
            assert_error(response, 503, "store_unavailable")
        later = [new_sid() for _ in range(6)]
        assert [r.status_code for r in post_all(server.callback_url, later)] == [204] * 6
        assert [r.status_code for r in post_all(server.callback_url, refused_sids)] == [204] * 6
    finally:
        code = server.terminate()
    assert code in (0, -15)
    assert integrity(database) == "ok"
    assert_once_each(database, warm + later + refused_sids)


def established(port: int) -> int:
    """Open TCP connections to `port` on this host (Linux's /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            count += 1
    return count


def test_sigterm_lets_in_flight_requests_finish_and_commit(tmp_path: Path) -> None:
    database = tmp_path / "term.db"
    log = tmp_path / "server.log"
    server = ServerProcess(database, log=log, RECEIVER_LOG_LEVEL="info").start()
    sids = [new_sid() for _ in range(8)]
    # Hold the write lock so the requests are still waiting on their batch when SIGTERM lands.
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with ThreadPoolExecutor(1) as pool:
            responses = pool.submit(post_all, server.callback_url, sids)
            assert server.proc is not None
            deadline = time.monotonic() + 10
            while established(server.port) < len(sids):
                assert time.monotonic() < deadline, "the requests never reached the server"
                time.sleep(0.01)
            time.sleep(0.2)  # read, parsed, and waiting on the writer
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)  # shutting down, with the requests still in flight
            blocker.execute("ROLLBACK")  # the batch can commit now, during shutdown
            results = responses.result(timeout=20)
    finally:
        blocker.close()
        code = server.proc.wait(timeout=20) if server.proc else None
        server.stop()
    assert [r.status_code for r in results] == [204] * len(sids)
    assert code in (0, -15)
    assert_once_each(database, sids)
    assert integrity(database) == "ok"
    assert '"event": "stopped"' in log.read_text()
