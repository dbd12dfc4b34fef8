"""Wake-ups across instances on PostgreSQL: a change committed on instance B wakes a long poll
and a stream on instance A (the change log's NOTIFY, sent in the change's own transaction)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from realtime_support import events_only, sse
from server_process import ServerProcess
from support import WAIT, new_sid, status_params, twilio_form, wait_until
from test_realtime import gauges


def two_instances(tmp_path: Path, url: str) -> list[ServerProcess]:
    processes = [
        ServerProcess(
            tmp_path / f"unused-{n}.db",
            log=tmp_path / f"i{n}.log",
            DATABASE_URL=url,
        )
        for n in range(2)
    ]
    for process in processes:
        process.start()
    return processes


def deliver(instance: ServerProcess, sid: str, status: str) -> None:
    body, headers = twilio_form(instance.callback_url, status_params(sid, status))
    response = httpx.post(instance.callback_url, content=body, headers=headers, timeout=WAIT)
    assert response.status_code == 204, response.text


def test_a_waiter_on_one_instance_is_woken_by_a_dlr_recorded_on_another(
    tmp_path: Path, pg_url: str
) -> None:
    a, b = two_instances(tmp_path, pg_url)
    try:
        sid = new_sid()
        with httpx.Client(base_url=a.base_url, timeout=WAIT) as client:
            registered = client.post("/v1/messages", json={"provider": "twilio", "message_id": sid})
            assert registered.status_code == 201
            with ThreadPoolExecutor(1) as pool, client.stream("GET", "/v1/stream") as response:
                stream = events_only(sse(response))
                waiting = pool.submit(client.get, f"/v1/messages/{sid}", params={"wait": "30s"})
                wait_until(lambda: gauges(a.base_url) == (1.0, 1.0), what="a wait and a stream")
                deliver(b, sid, "sent")
                sent = next(stream)
                deliver(b, sid, "delivered")
                committed = time.monotonic()
                answer = waiting.result(timeout=WAIT)
                answered = time.monotonic()
                delivered = next(stream)
    finally:
        a.stop()
        b.stop()
    assert answer.json()["status"] == "delivered"
    assert answered - committed < 0.5, answered - committed
    assert [sent.json()["status"], delivered.json()["status"]] == ["sent", "delivered"]
    assert int(delivered.id or 0) > int(sent.id or 0)
