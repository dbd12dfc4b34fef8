"""The long poll, GET /v1/messages/{id}?wait=, over a real server: woken by the commit of the
DLR that answers it (never by reading on a timer), bounded by its wait, capped in number."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from realtime_support import hub_of
from server_process import ServerProcess, signed_callback
from support import (
    WAIT,
    LiveServer,
    assert_error,
    new_sid,
    post_status,
    status_params,
    twilio_form,
    wait_until,
)


def register(server: LiveServer, *sids: str, **fields: object) -> None:
    with server.client() as client:
        body = {"messages": [{"provider": "twilio", "message_id": s, **fields} for s in sids]}
        response = client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text


def test_a_wait_answers_within_half_a_second_of_the_dlr_that_makes_it_final(
    server: LiveServer,
) -> None:
    sid = new_sid()
    register(server, sid)
    with ThreadPoolExecutor(1) as pool, server.client() as client:
        started = time.monotonic()
        waiting = pool.submit(client.get, f"/v1/messages/{sid}", params={"wait": "30s"})
        wait_until(lambda: hub_of(server).waiters == 1, what="the request to wait")
        assert post_status(client, server.callback_url, sid, "sent").status_code == 204
        assert not waiting.done()  # sent is not final: it waits on
        assert post_status(client, server.callback_url, sid, "delivered").status_code == 204
        dlr_committed = time.monotonic()
        answer = waiting.result(timeout=WAIT)
        answered = time.monotonic()
    assert answer.status_code == 200
    assert answer.json()["status"] == "delivered" and answer.json()["final"] is True
    assert answered - dlr_committed < 0.5, answered - dlr_committed
    assert answered - started < 10
    assert hub_of(server).waiters == 0


def test_a_wait_on_a_message_that_never_changes_answers_after_the_wait_with_its_state(
    server: LiveServer,
) -> None:
    sid = new_sid()
    register(server, sid)
    with server.client() as client:
        started = time.monotonic()
        answer = client.get(f"/v1/messages/{sid}", params={"wait": "2s"})
        took = time.monotonic() - started
        plain = client.get(f"/v1/messages/{sid}")
    assert answer.status_code == 200
    assert answer.json() == plain.json()  # the same body as without `wait`
    assert 2.0 <= took < 2.0 + 5.0, took


def test_a_final_message_answers_at_once_and_an_unknown_one_is_404_at_once(
    server: LiveServer,
) -> None:
    sid = new_sid()
    with server.client() as client:
        post_status(client, server.callback_url, sid, "delivered")
        started = time.monotonic()
        answer = client.get(f"/v1/messages/{sid}", params={"wait": "60s"})
        unknown = client.get("/v1/messages/SMnobody", params={"wait": "60s"})
        took = time.monotonic() - started
    assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    assert_error(unknown, 404, "message_not_found")
    assert took < 5


def test_until_change_answers_at_the_first_status_change(server: LiveServer) -> None:
    sid = new_sid()
    register(server, sid)
    with ThreadPoolExecutor(1) as pool, server.client() as client:
        waiting = pool.submit(
            client.get, f"/v1/messages/{sid}", params={"wait": "30s", "until": "change"}
        )
        wait_until(lambda: hub_of(server).waiters == 1, what="the request to wait")
        post_status(client, server.callback_url, sid, "sent")
        answer = waiting.result(timeout=WAIT)
    assert answer.status_code == 200 and answer.json()["status"] == "sent"


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"wait": "61s"}, "wait"),
        ({"wait": "2m"}, "wait"),
        ({"wait": "soon"}, "wait"),
        ({"wait": "-1"}, "wait"),
        ({"wait": "5s", "until": "delivered"}, "until"),
    ],
)
def test_a_bad_wait_or_until_is_a_400_naming_it(
    server: LiveServer, params: dict[str, str], parameter: str
) -> None:
    sid = new_sid()
    register(server, sid)
    with server.client() as client:
        error = assert_error(
            client.get(f"/v1/messages/{sid}", params=params), 400, "invalid_parameter"
        )
    assert error["details"]["parameter"] == parameter


def test_past_the_cap_a_wait_gets_429_with_retry_after(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(max_waiters=2)
    sids = [new_sid() for _ in range(3)]
    register(server, *sids)
    with ThreadPoolExecutor(2) as pool, server.client() as client:
        waiting = [
            pool.submit(client.get, f"/v1/messages/{sid}", params={"wait": "30s"})
            for sid in sids[:2]
        ]
        wait_until(lambda: hub_of(server).waiters == 2, what="two requests to wait")
        refused = client.get(f"/v1/messages/{sids[2]}", params={"wait": "30s"})
        for sid in sids[:2]:
            post_status(client, server.callback_url, sid, "delivered")
        assert all(w.result(timeout=WAIT).status_code == 200 for w in waiting)
    assert_error(refused, 429, "too_many_waiting")
    assert refused.headers["Retry-After"] == "1"


WAITERS = 1000


def test_a_thousand_waiters_are_each_woken_by_their_own_dlr(
    start_server: Callable[..., LiveServer],
) -> None:
    """Each of 1,000 long polls on its own message answers with that message delivered, once
    its DLR is committed (and not before: every one is still waiting when the DLRs start)."""
    server = start_server()
    sids = [new_sid() for _ in range(WAITERS)]
    register(server, *sids)
    url = server.callback_url
    signed = {sid: twilio_form(url, status_params(sid, "delivered")) for sid in sids}

    async def scenario() -> tuple[list[httpx.Response], float]:
        limits = httpx.Limits(max_connections=WAITERS + 50, max_keepalive_connections=100)
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=120, limits=limits
        ) as client:
            waits = [
                asyncio.create_task(client.get(f"/v1/messages/{sid}", params={"wait": "60s"}))
                for sid in sids
            ]
            deadline = time.monotonic() + 90
            while hub_of(server).waiters < WAITERS:
                assert time.monotonic() < deadline, hub_of(server).waiters
                assert not any(w.done() for w in waits)
                await asyncio.sleep(0.05)
            started = time.monotonic()
            gate = asyncio.Semaphore(50)

            async def dlr(sid: str) -> int:
                body, headers = signed[sid]
                async with gate:
                    return (await client.post(url, content=body, headers=headers)).status_code

            codes = await asyncio.gather(*(dlr(sid) for sid in sids))
            assert set(codes) == {204}
            answers = await asyncio.wait_for(asyncio.gather(*waits), 90)
            return answers, time.monotonic() - started

    answers, took = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [200] * WAITERS
    assert [a.json()["message_id"] for a in answers] == sids
    assert {a.json()["status"] for a in answers} == {"delivered"}
    assert took < 60, took
    assert hub_of(server).waiters == 0


def gauges(base_url: str) -> tuple[float, float]:
    """(receiver_waiting_requests, receiver_streams) as /metrics says now."""
    found = {}
    for line in httpx.get(base_url + "/metrics", timeout=WAIT).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("receiver_waiting_requests", "receiver_streams"):
            found[name] = float(value)
    return found.get("receiver_waiting_requests", -1), found.get("receiver_streams", -1)


def test_stopping_the_service_answers_waiters_at_once_and_exits_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "r.db").start()
    try:
        sid = new_sid()
        with httpx.Client(base_url=server.base_url, timeout=WAIT) as client:
            body, headers = signed_callback(server.callback_url, sid, "sent")
            assert (
                client.post(server.callback_url, content=body, headers=headers).status_code == 204
            )
        with (
            ThreadPoolExecutor(1) as pool,
            httpx.Client(base_url=server.base_url, timeout=WAIT) as client,
        ):
            waiting = pool.submit(client.get, f"/v1/messages/{sid}", params={"wait": "60s"})
            with client.stream("GET", "/v1/stream") as stream:
                assert stream.status_code == 200
                wait_until(
                    lambda: gauges(server.base_url) == (1.0, 1.0), what="a wait and a stream"
                )
                started = time.monotonic()
                code = server.terminate(timeout=WAIT)
                took = time.monotonic() - started
            answer = waiting.result(timeout=WAIT)
    finally:
        server.stop()
    assert code == 0
    assert answer.status_code == 200 and answer.json()["status"] == "sent"
    assert took < 10, took
