"""Two `receiver serve` instances on one PostgreSQL database share the outbox: each push goes
out from one of them (SKIP LOCKED claims), in order per message, none lost."""

from __future__ import annotations

from pathlib import Path

import httpx
from push_app import PUSH_SECRET, PushApp
from server_process import ServerProcess, signed_callback
from support import WAIT, AppServer, wait_until

MESSAGES = 30


def test_two_instances_send_each_push_once_in_order(tmp_path: Path, pg_url: str) -> None:
    app = PushApp()
    app_server = AppServer(app.asgi()).start()
    env = {
        "DATABASE_URL": pg_url,
        "RECEIVER_PUSH_URL": app_server.base_url + "/push",
        "RECEIVER_PUSH_SECRET": PUSH_SECRET,
        "RECEIVER_PUSH_EVENTS": "all",
        "RECEIVER_PUSH_RETRY_SCHEDULE": "1s,1s,1s",
    }
    instances = [
        ServerProcess(tmp_path / f"unused-{n}.db", log=tmp_path / f"{n}.log", **env).start()
        for n in range(2)
    ]
    sids = [f"SMpg{n:04d}" for n in range(MESSAGES)]
    try:
        with httpx.Client(timeout=WAIT) as client:
            for status in ("sent", "delivered"):
                for n, sid in enumerate(sids):
                    server = instances[n % 2 if status == "sent" else (n + 1) % 2]
                    body, headers = signed_callback(server.callback_url, sid, status)
                    headers["I-Twilio-Idempotency-Token"] = f"idem-{sid}-{status}"
                    response = client.post(server.callback_url, content=body, headers=headers)
                    assert response.status_code == 204
        wait_until(lambda: len(app.received) >= 2 * MESSAGES, what="every push")
    finally:
        for server in instances:
            assert server.terminate() in (0, -15)
        app_server.stop()
    assert app.refused == 0
    # Sent once each: no instance took a push another had claimed.
    assert len(app.requests) == len(set(app.requests)) == 2 * MESSAGES
    for sid, received in app.messages().items():
        assert [p["data"]["status"] for p in received] == ["sent", "delivered"], sid
