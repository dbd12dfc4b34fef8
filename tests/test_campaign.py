"""A me-sms send registered by its uuid alone, swept page by page over real HTTP: it settles
with one page request per 1,000 recipients, a malformed recipient is only its own problem,
and its summary is kept as counts."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid as uuids
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from mesms_fake import API_KEY, FakeMeSms, FakeSend, msisdn
from server_process import ROOT, ServerProcess
from support import (
    WAIT,
    AppServer,
    LiveServer,
    assert_error,
    make_settings,
    query,
    wait_until,
)

from receiver.engine import format_time
from receiver.polling.base import DueMessage
from receiver.polling.mesms import MeSmsStatusClient
from receiver.settings import Settings

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


def test_one_malformed_recipient_is_counted_and_kept_and_the_other_999_settle(
    tmp_path: Path, fake: tuple[FakeMeSms, AppServer]
) -> None:
    api, api_server = fake
    uuid = str(uuids.uuid4())
    api.sends[uuid] = FakeSend(1000, malformed=frozenset({500}))
    server = polling_server(tmp_path, api_server.base_url)
    try:
        register_send(server, uuid)
        wait_until(
            lambda: summary(server, uuid)["final"] == 999, what="the other 999 recipients final"
        )
        found = summary(server, uuid)
        assert found["recipients"] == 999 and found["counts"] == {"delivered": 999}
        assert found["malformed"] == 1
        assert found["malformed_sample"] == [f'{{"msisdn": "{msisdn(500)}", "status": 7}}']
        with server.client() as client:
            ready = client.get("/readyz").json()
        assert ready["polling"]["mesms"]["state"] == "polling"  # not paused
        assert api.requests[(uuid, 0)] == 1
    finally:
        server.stop()


def test_a_send_and_its_recipients_register_in_one_batch_and_bad_uuids_are_refused(
    tmp_path: Path,
) -> None:
    server = LiveServer(make_settings(tmp_path)).start()
    uuid = str(uuids.uuid4())
    try:
        with server.client() as client:
            batch = [
                {"provider": "twilio", "message_id": "SM" + "0" * 32},
                {"provider": "mesms", "message_id": uuid, "account": "shop"},
                {"provider": "mesms", "message_id": f"{uuid}:{msisdn(1)}"},
            ]
            answer = client.post("/v1/messages", json=batch).json()
            assert [m["message_id"] for m in answer["messages"]] == [m["message_id"] for m in batch]
            assert answer["created"] == 3
            found = client.get(f"/v1/sends/{uuid}").json()
            assert found["tracked"] and found["account"] == "shop" and found["state"] == "waiting"
            assert found["recipients"] == 1 and found["counts"] == {"registered": 1}
            # The uuid is not a message: the send is read at /v1/sends/.
            assert client.get(f"/v1/messages/{uuid}").status_code == 404
            assert_error(client.get(f"/v1/sends/{uuids.uuid4()}"), 404, "send_not_found")
            assert_error(client.get("/v1/sends/not-a-uuid"), 400, "invalid_parameter")
            assert_error(client.get(f"/v1/sends/{uuid}?x=1"), 400, "unknown_parameter")
    finally:
        server.stop()


def test_kill_9_mid_sweep_resumes_from_the_stored_cursor_and_settles_each_recipient_once(
    tmp_path: Path, fake: tuple[FakeMeSms, AppServer]
) -> None:
    api, api_server = fake
    uuid, size = str(uuids.uuid4()), 20_000
    api.sends[uuid] = FakeSend(size)
    api.hold_at = 8000  # the sweep is stopped there: that page's request is never answered
    env = {
        "RECEIVER_POLLING": "1",
        "RECEIVER_DLR_GRACE": "0.1s",
        "RECEIVER_POLL_INTERVAL": "0.1s",
        "RECEIVER_POLL_LEASE": "2s",
        "RECEIVER_POLL_TIMEOUT": "1s",
        "MESMS_API_BASE": api_server.base_url,
        "MESMS_API_KEY": API_KEY,
        "MESMS_POLL_RATE": "1000",
    }
    database = tmp_path / "receiver.db"
    first = ServerProcess(database, log=tmp_path / "first.log", **env).start()
    try:
        with httpx.Client(base_url=first.base_url, timeout=WAIT) as client:
            body = {"provider": "mesms", "message_id": uuid}
            assert client.post("/v1/messages", json=body).status_code == 201
        assert api.held.wait(WAIT * 2), "the sweep never reached the held page"
        first.kill()
    finally:
        first.stop()
    api.hold_at = None
    api.release.set()
    second = ServerProcess(database, log=tmp_path / "second.log", **env).start()
    try:

        def settled() -> dict[str, Any] | None:
            with httpx.Client(base_url=second.base_url, timeout=WAIT) as client:
                found: dict[str, Any] = client.get(f"/v1/sends/{uuid}").json()
            return found if found["state"] == "settled" else None

        found = wait_until(settled, timeout=WAIT * 3, what="the resumed sweep to settle")
    finally:
        second.stop()
    assert found["final"] == found["recipients"] == size
    assert api.requests[(uuid, 0)] == 1  # resumed at the stored cursor, never from the start
    assert all(api.requests[(uuid, after)] == 1 for after in range(0, size, 1000) if after != 8000)
    assert api.requests[(uuid, 8000)] == 2  # the page in flight at the kill, asked again
    conn = sqlite3.connect(database)
    try:
        kept = conn.execute("SELECT count(*), count(DISTINCT message_id) FROM events").fetchone()
    finally:
        conn.close()
    assert kept == (size, size)  # each recipient settled once


def poll_once(env: dict[str, str]) -> subprocess.Popen[str]:
    """`receiver poll --once` as its own process (a cron job beside the service)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "MESMS_"))}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "receiver", "poll", "--once"],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_poll_once_job_and_the_service_on_one_file_take_turns_and_continue_each_other(
    tmp_path: Path, fake: tuple[FakeMeSms, AppServer]
) -> None:
    """The job sweeps for one lease and hands the send back; the service continues from its
    cursor; a second job while the service sweeps never asks about the send at the same time."""
    api, api_server = fake
    uuid, size = str(uuids.uuid4()), 10_000
    api.sends[uuid] = FakeSend(size)
    api.delay = 0.3  # a page takes a while: a claim (1 s, the lease less a timeout) gets ~3
    timing = {"poll_lease": 2.0, "poll_timeout": 1.0}
    env = {
        "RECEIVER_DATABASE": str(tmp_path / "receiver.db"),
        "RECEIVER_LOG_LEVEL": "warning",
        "RECEIVER_POLL_LEASE": "2s",
        "RECEIVER_POLL_TIMEOUT": "1s",
        "MESMS_API_BASE": api_server.base_url,
        "MESMS_API_KEY": API_KEY,
        "MESMS_POLL_RATE": "1000",
    }
    quiet = LiveServer(make_settings(tmp_path, **timing)).start()  # registration only
    try:
        sent = format_time(datetime.now(UTC) - timedelta(hours=1))  # due at once
        with quiet.client() as client:
            body = {"provider": "mesms", "message_id": uuid, "sent_at": sent}
            assert client.post("/v1/messages", json=body).status_code == 201
    finally:
        quiet.stop()
    job = poll_once(env)
    out, _ = job.communicate(timeout=WAIT)
    assert job.returncode == 0, out
    by_job = api.pages(uuid)
    assert 0 < by_job < size // 1000, out
    server = polling_server(tmp_path, api_server.base_url, **timing)
    try:
        wait_until(lambda: api.pages(uuid) > by_job, what="the service to continue the sweep")
        second = poll_once(env)  # while the service sweeps
        out, _ = second.communicate(timeout=WAIT)
        assert second.returncode == 0, out
        found = wait_until(
            lambda: (s := summary(server, uuid))["state"] == "settled" and s,
            timeout=WAIT * 2,
            what="the send settled",
        )
    finally:
        server.stop()
    assert found["final"] == size and found["sweeps"] == 1
    assert api.max_in_flight[uuid] == 1  # never swept by both at once
    assert {after: n for (u, after), n in api.requests.items() if u == uuid} == {
        after: 1 for after in range(0, size, 1000)
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("66812345670", id="recipient-text"),
        pytest.param({"msisdn": "66812345670"}, id="no-status"),
        pytest.param({"msisdn": "66812345670", "status": 1}, id="status-int"),
        pytest.param({"msisdn": None, "status": "success"}, id="no-msisdn"),
    ],
)
async def test_a_sweep_of_recipients_registered_one_by_one_reads_past_a_malformed_one(
    bad: object,
) -> None:
    """The sweep of a send whose recipients were registered one by one tolerates it too."""
    good = {"msisdn": "66812345678", "status": "success"}
    send = "0f8fad5b-d9cb-469f-a165-70867728950e"

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [bad, good], "hasMore": False})

    settings = Settings(provider_env=MappingProxyType({"MESMS_API_KEY": "k"}))
    message = DueMessage(
        1, "mesms", f"{send}:66812345678", None, "queued", "pending", 0, "2026", None
    )
    observed: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        answers = await MeSmsStatusClient(settings).poll(http, [message], observed.append)
    (answer,) = answers
    assert answer.event is not None and answer.event.provider_status == "success"
    assert observed == ["ok"]
