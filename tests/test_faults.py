"""Faults during a batch: a locked database, a full disk, a shutdown with requests in flight.

Each fault fails only the requests it touches (503, so the provider retries), later requests
succeed, and nothing is ever half-written.
"""

from __future__ import annotations

import resource
import signal
import socket
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from server_process import ServerProcess, event_counts, integrity, signed_callback
from support import WAIT, LiveServer, assert_error, new_sid, wait_until


def post_all(url: str, sids: list[str]) -> list[httpx.Response]:
    """Post one callback per sid, all at once, so they share the writer's batches."""

    def post(sid: str) -> httpx.Response:
        body, headers = signed_callback(url, sid)
        return httpx.post(url, content=body, headers=headers, timeout=WAIT)

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


def sockets_on(port: int) -> list[tuple[str, bool, int, int]]:
    """Every TCP socket on this host with `port` at one end (Linux's /proc/net/tcp): its state
    ("0A" listening, "01" established), whether `port` is its own end (the server's side), and
    the bytes in its send and receive queues."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if port in (local, remote):
            tx, rx = (int(n, 16) for n in fields[4].split(":"))
            found.append((fields[3], local == port, tx, rx))
    return found


def requests_read(port: int, count: int) -> bool:
    """`count` connections to `port` whose requests the server has read to the last byte: none
    left in a client's send queue or in the server's receive queue. Only then is a request the
    server's (an accepted connection with a request under way), which a graceful shutdown must
    answer; before that, a SIGTERM could close the connection unanswered."""
    open_ = [s for s in sockets_on(port) if s[0] == "01"]
    served = [s for s in open_ if s[1]]
    return len(served) >= count and all(tx == 0 and rx == 0 for _, _, tx, rx in open_)


def listening(port: int) -> bool:
    return any(state == "0A" for state, *_ in sockets_on(port))


def send_callback(url: str, sid: str) -> socket.socket:
    """Write a signed callback for `sid`, whole, on a connection of its own; the answer is read
    from the returned socket later."""
    body, headers = signed_callback(url, sid)
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    sock = socket.create_connection((parts.hostname, parts.port), timeout=WAIT)
    sock.sendall(head.encode() + body)
    return sock


def answer_status(sock: socket.socket) -> int:
    """The status code of the answer on `sock` (then closed)."""
    with sock:
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


def test_sigterm_lets_in_flight_requests_finish_and_commit(tmp_path: Path) -> None:
    database = tmp_path / "term.db"
    log = tmp_path / "server.log"
    # A long busy timeout: the requests wait for the lock for as long as the test holds it.
    server = ServerProcess(
        database, log=log, RECEIVER_LOG_LEVEL="info", RECEIVER_DB_BUSY_TIMEOUT_MS="120000"
    ).start()
    assert server.proc is not None
    sids = [new_sid() for _ in range(8)]
    # Hold the write lock so the requests are still waiting on their batch when SIGTERM lands.
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    connections: list[socket.socket] = []
    try:
        connections = [send_callback(server.callback_url, sid) for sid in sids]
        wait_until(lambda: requests_read(server.port, len(sids)), what="the requests read")
        server.proc.send_signal(signal.SIGTERM)
        # Shutting down (no longer listening), with the requests still in flight.
        wait_until(lambda: not listening(server.port), what="the shutdown to begin")
        blocker.execute("ROLLBACK")  # the batch can commit now, during shutdown
        statuses = [answer_status(sock) for sock in connections]
    finally:
        for sock in connections:
            sock.close()
        blocker.close()
        code = server.proc.wait(timeout=WAIT)
        server.stop()
    assert statuses == [204] * len(sids)
    assert code in (0, -15)
    assert_once_each(database, sids)
    assert integrity(database) == "ok"
    assert '"event": "stopped"' in log.read_text()
