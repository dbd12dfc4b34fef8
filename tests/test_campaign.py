"""A me-sms send registered by its uuid alone, swept page by page over real HTTP: it settles
with one page request per 1,000 recipients, a malformed recipient is only its own problem,
and its summary is kept as counts."""

from __future__ import annotations

import time
import uuid as uuids
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mesms_fake import API_KEY, FakeMeSms, FakeSend
from support import AppServer, LiveServer, make_settings, query, wait_until

SIZE = 50_000


@pytest.fixture
def fake() -> Iterator[tuple[FakeMeSms, AppServer]]:
    fake = FakeMeSms()
    server = AppServer(fake.app()).start()
    yield fake, server
    fake.release.set()
    server.stop()


def polling_server(tmp_path: Path, api_base: str, **overrides: Any) -> LiveServer:
    settings = make_settings(
        tmp_path,
        polling=True,
        dlr_grace=0.1,
        poll_backoff=0.2,
        poll_backoff_max=0.5,
        poll_interval=0.1,
        **{"poll_lease": 30.0, "poll_timeout": 10.0, **overrides},
        provider_env={
            "MESMS_API_BASE": api_base,
            "MESMS_API_KEY": API_KEY,
            "MESMS_POLL_RATE": "1000",
        },
    )
    return LiveServer(settings).start()


def summary(server: LiveServer, uuid: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.get(f"/v1/sends/{uuid}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def register_send(server: LiveServer, uuid: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.post("/v1/messages", json={"provider": "mesms", "message_id": uuid})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_send_registered_by_its_uuid_settles_with_one_page_request_per_thousand(
    tmp_path: Path, fake: tuple[FakeMeSms, AppServer]
) -> None:
    api, api_server = fake
    uuid = str(uuids.uuid4())
    api.sends[uuid] = FakeSend(SIZE)
    server = polling_server(tmp_path, api_server.base_url)
    try:
        started = time.monotonic()
        answer = register_send(server, uuid)
        assert answer["created"] is True and answer["message_id"] == uuid
        settled = wait_until(
            lambda: (s := summary(server, uuid))["state"] == "settled" and s,
            timeout=120,
            what=f"{SIZE} recipients final",
        )
        elapsed = time.monotonic() - started
        assert settled["recipients"] == settled["final"] == SIZE
        assert settled["counts"] == {"delivered": SIZE}
        assert settled["sweeps"] == 1 and settled["sweep"] is None
        assert settled["last_sweep"]["created"] == SIZE
        requests = api.pages(uuid)
        assert abs(requests - SIZE / 1000) <= 0.05 * SIZE / 1000, requests
        assert api.requests[(uuid, 0)] == 1
        # Each recipient has its one event (first seen, delivered), and nothing is queued.
        assert query(server, "SELECT count(*) FROM events") == [(SIZE,)]
        assert query(server, "SELECT count(*) FROM messages WHERE next_poll_at IS NOT NULL") == [
            (0,)
        ]
        print(f"\n{SIZE} recipients settled by {requests} page requests in {elapsed:.1f} s")
    finally:
        server.stop()
