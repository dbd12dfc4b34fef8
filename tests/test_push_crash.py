"""kill -9 with pushes owed: after a restart each is delivered, none lost, without waiting for
the dead process's leases to run out; a duplicate keeps its original webhook-id."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import httpx
from push_app import PUSH_SECRET, PushApp
from server_process import ServerProcess, signed_callback
from support import WAIT, AppServer, wait_until

MESSAGES = 40
CONCURRENCY = 5
TIMEOUT = 40.0  # a claim's lease is twice this and 30 s: far longer than the wait below


def test_kill_9_with_pushes_owed_loses_none_and_resends_at_once(tmp_path: Path) -> None:
    app = PushApp(holding=True)
    app_server = AppServer(app.asgi()).start()
    env = {
        "RECEIVER_PUSH_URL": app_server.base_url + "/push",
        "RECEIVER_PUSH_SECRET": PUSH_SECRET,
        "RECEIVER_PUSH_TIMEOUT": f"{TIMEOUT:g}s",
        "RECEIVER_PUSH_CONCURRENCY": str(CONCURRENCY),
        # Short: a push meeting a passing network error on the way is retried within the wait.
        "RECEIVER_PUSH_RETRY_SCHEDULE": "1s,1s,1s",
    }
    database = tmp_path / "push.db"
    server = ServerProcess(database, log=tmp_path / "first.log", **env).start()
    sids = [f"SMpush{n:04d}" for n in range(MESSAGES)]
    try:
        with httpx.Client(timeout=WAIT) as client:
            for sid in sids:
                body, headers = signed_callback(server.callback_url, sid)
                response = client.post(server.callback_url, content=body, headers=headers)
                assert response.status_code == 204
        # Some pushes are in flight (held by the app, leased), the rest owed: kill -9 now.
        wait_until(lambda: len(app.requests) == CONCURRENCY, what="pushes in flight")
        server.kill()
    finally:
        server.stop()
    assert app.received == []
    app.holding = False  # the app is answering again

    restarted = ServerProcess(database, log=tmp_path / "second.log", **env).start()
    started = time.monotonic()
    try:
        wait_until(
            lambda: {r.payload["data"]["message_id"] for r in app.received} == set(sids),
            timeout=WAIT,
            what="every owed push delivered",
        )
        elapsed = time.monotonic() - started
    finally:
        assert restarted.terminate() in (0, -15)
        app_server.stop()
    assert elapsed < 2 * TIMEOUT  # the leases held at the kill did not have to run out
    ids: dict[str, set[str]] = defaultdict(set)
    for r in app.received:
        ids[r.payload["data"]["message_id"]].add(r.webhook_id)
    # Each message's push, however often it came, came with its one webhook-id; the pushes
    # in flight at the kill were sent again with theirs.
    assert all(len(found) == 1 for found in ids.values())
    held = set(app.requests[:CONCURRENCY])
    assert held <= {r.webhook_id for r in app.received}
    duplicates = len(app.received) - len(sids)
    assert duplicates >= 0
