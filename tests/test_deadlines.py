"""Registration deadlines over a real server: a message not delivered by its deadline emits
one `message.deadline_missed` (stream) and shows `deadline_missed: true`; one delivered in time
emits none. The OTP pattern: register with a deadline, wait, fall back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from realtime_support import events_only, hub_of, sse
from support import WAIT, LiveServer, assert_error, new_sid, post_status, wait_until


def register(server: LiveServer, *items: dict[str, object]) -> None:
    with server.client() as client:
        body = {"messages": [{"provider": "twilio", **item} for item in items]}
        response = client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text


def test_a_missed_deadline_emits_one_event_and_one_delivered_in_time_none(
    server: LiveServer,
) -> None:
    late, on_time = new_sid(), new_sid()
    with server.client() as client, server.client() as listener:
        with listener.stream("GET", "/v1/stream") as response:
            stream = events_only(sse(response))
            started = time.monotonic()
            register(
                server,
                {"message_id": late, "deadline": "2s"},
                {"message_id": on_time, "deadline": 1},  # seconds, as a number
            )
            post_status(client, server.callback_url, on_time, "delivered")
            seen = [next(stream)]
            while seen[-1].event != "message.deadline_missed":
                seen.append(next(stream))
            took = time.monotonic() - started
            # Once: the next event for it is its DLR's, not a second miss.
            post_status(client, server.callback_url, late, "delivered")
            seen.append(next(stream))
        shown = client.get(f"/v1/messages/{late}").json()
        kept = client.get(f"/v1/messages/{on_time}").json()
    kinds = [(e.event, e.json()["message_id"]) for e in seen]
    assert kinds == [
        ("message.status_changed", on_time),
        ("message.deadline_missed", late),
        ("message.status_changed", late),
    ]
    missed = seen[1].json()
    assert missed["status"] == "registered" and missed["final"] is False
    assert 2.0 <= took < 2.0 + 10, took
    assert shown["deadline_missed"] is True and shown["status"] == "delivered"
    assert kept["deadline_missed"] is False and kept["deadline"] is not None


def test_a_wait_until_change_answers_when_the_deadline_is_missed(server: LiveServer) -> None:
    """The OTP pattern's wait: no DLR within the deadline, and the app knows at the deadline."""
    sid = new_sid()
    register(server, {"message_id": sid, "deadline": "1s"})
    with ThreadPoolExecutor(1) as pool, server.client() as client:
        started = time.monotonic()
        waiting = pool.submit(
            client.get, f"/v1/messages/{sid}", params={"wait": "30s", "until": "change"}
        )
        answer = waiting.result(timeout=WAIT)
        took = time.monotonic() - started
    assert answer.json()["deadline_missed"] is True
    assert took < 10, took
    wait_until(lambda: hub_of(server).waiters == 0)


@pytest.mark.parametrize("deadline", ["soon", "-5s", -1, True, "", {"s": 1}, 10**9])
def test_a_bad_deadline_is_refused_naming_the_field(server: LiveServer, deadline: object) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/messages",
            json={"provider": "twilio", "message_id": new_sid(), "deadline": deadline},
        )
    error = assert_error(response, 400, "invalid_message")
    assert error["details"]["field"] == "deadline"


def test_a_deadline_as_an_iso_time_is_kept_as_given(server: LiveServer) -> None:
    sid = new_sid()
    register(server, {"message_id": sid, "deadline": "2030-01-02T03:04:05+01:00"})
    with server.client() as client:
        shown = client.get(f"/v1/messages/{sid}").json()
    assert shown["deadline"] == "2030-01-02T02:04:05.000Z"
    assert shown["deadline_missed"] is False
