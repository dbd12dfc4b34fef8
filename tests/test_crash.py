"""kill -9 under load: every acknowledged callback survives exactly once, and the file is sound."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from server_process import ServerProcess, event_counts, integrity, signed_callback
from support import POLL_INTERVAL, WAIT

WORKERS = 8
PER_WORKER = 300  # bounded: the kill normally comes long before this
KILL_AFTER_ACKS = 150


def test_kill_9_under_load_keeps_every_acknowledged_callback_exactly_once(
    tmp_path: Path,
) -> None:
    database = tmp_path / "crash.db"
    server = ServerProcess(database, log=tmp_path / "first.log").start()
    acked: list[str] = []  # list.append is atomic: the workers share it
    sent: list[str] = []

    def load(worker: int) -> None:
        with httpx.Client(timeout=WAIT) as client:
            for _ in range(PER_WORKER):
                sid = f"SM{worker:02d}{uuid.uuid4().hex[2:]}"
                body, headers = signed_callback(server.callback_url, sid)
                sent.append(sid)
                try:
                    response = client.post(server.callback_url, content=body, headers=headers)
                except httpx.TransportError:
                    return  # killed under us: this one may or may not have been committed
                assert response.status_code == 204, response.text
                acked.append(sid)

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(WORKERS)]
    try:
        for thread in threads:
            thread.start()
        # Bounded so a stalled server fails the test below instead of hanging it.
        deadline = time.monotonic() + WAIT
        while len(acked) < KILL_AFTER_ACKS and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        server.kill()  # mid-load: requests are in flight and a batch may be half-done
        for thread in threads:
            thread.join(timeout=WAIT)
    finally:
        server.stop()
    assert len(acked) >= KILL_AFTER_ACKS
    assert len(sent) > len(acked)  # some were in flight at the kill
    assert integrity(database) == "ok"

    restarted = ServerProcess(database, log=tmp_path / "second.log").start()
    try:
        counts = event_counts(database)
        for sid in acked:
            assert counts[(sid, "applied")] == 1, sid
        # Nothing is stored twice, and nothing that was never sent is stored.
        assert all(n == 1 for n in counts.values())
        assert {sid for sid, _ in counts} <= set(sent)

        # Twilio retries what it saw no answer for; for a committed callback that is a duplicate.
        resent = acked[:20]
        with httpx.Client(timeout=WAIT) as client:
            for sid in resent:
                body, headers = signed_callback(restarted.callback_url, sid)
                response = client.post(restarted.callback_url, content=body, headers=headers)
                assert response.status_code == 204
                history = client.get(f"{restarted.base_url}/v1/messages/{sid}/events").json()
                assert [e["outcome"] for e in history["events"]] == ["applied", "duplicate"]
                assert history["message"]["status"] == "delivered"
        # Every stored status is the fold of its events, checked while the service runs.
        ledger = subprocess.run(
            [str(Path(sys.executable).parent / "receiver"), "verify"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env={**os.environ, "RECEIVER_DATABASE": str(database)},
        )
        assert ledger.returncode == 0, ledger.stdout + ledger.stderr
        assert f"{len(counts)} message(s) checked" in ledger.stdout
    finally:
        assert restarted.terminate() in (0, -15)
    assert integrity(database) == "ok"
