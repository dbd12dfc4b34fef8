"""GET /v1/stream over a real server: changes in commit order, resumed exactly from
Last-Event-ID, filtered, pinged, reset past retention, capped, and never slowing callbacks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from realtime_support import Sse, events_only, hub_of, sse
from support import LiveServer, assert_error, new_sid, post_status, wait_until

from receiver.engine import format_time
from receiver.store.sqlite import SQLiteStore


def register(server: LiveServer, *sids: str, **fields: object) -> None:
    with server.client() as client:
        body = {"messages": [{"provider": "twilio", "message_id": s, **fields} for s in sids]}
        response = client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text


def take(stream: Iterator[Sse], n: int) -> list[Sse]:
    return [next(stream) for _ in range(n)]


def seen(events: list[Sse]) -> list[tuple[str, str | None, str]]:
    return [
        (e.json()["message_id"], e.json()["previous_status"], e.json()["status"]) for e in events
    ]


def test_200_changes_arrive_in_commit_order_and_a_reconnect_gets_exactly_the_rest(
    server: LiveServer,
) -> None:
    sids = [new_sid() for _ in range(100)]
    register(server, *sids)
    expected = [(s, "registered", "sent") for s in sids] + [(s, "sent", "delivered") for s in sids]
    with server.client() as client, server.client() as listener:
        with listener.stream("GET", "/v1/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for sid in sids:
                assert post_status(client, server.callback_url, sid, "sent").status_code == 204
            for sid in sids:
                assert post_status(client, server.callback_url, sid, "delivered").status_code == 204
            first = take(events_only(sse(response)), 50)
        assert seen(first) == expected[:50]
        ids = [int(e.id or 0) for e in first]
        assert ids == sorted(set(ids))
        assert {e.event for e in first} == {"message.status_changed"}

        resume = {"Last-Event-ID": str(ids[-1])}
        with listener.stream("GET", "/v1/stream", headers=resume) as response:
            stream = events_only(sse(response))
            rest = take(stream, 150)
            # Nothing else: the next event is the one committed after this point.
            late = new_sid()
            post_status(client, server.callback_url, late, "sent")
            [after] = take(stream, 1)
    assert seen(rest) == expected[50:]
    rest_ids = [int(e.id or 0) for e in rest]
    assert rest_ids == sorted(set(rest_ids)) and rest_ids[0] > ids[-1]
    assert seen([after]) == [(late, None, "sent")]  # created by its callback: a change too
    assert int(after.id or 0) > rest_ids[-1]


def test_the_data_is_the_push_payloads(server: LiveServer) -> None:
    sid = new_sid()
    register(server, sid, to="+15550001111", metadata={"order": 7})
    with (
        server.client() as client,
        server.client() as listener,
        listener.stream("GET", "/v1/stream") as response,
    ):
        post_status(client, server.callback_url, sid, "delivered")
        [event] = take(events_only(sse(response)), 1)
    data = event.json()
    assert list(data) == [
        "provider",
        "message_id",
        "status",
        "previous_status",
        "provider_status",
        "error_code",
        "final",
        "final_via",
        "to",
        "account",
        "metadata",
        "sent_at",
        "final_at",
    ]
    assert data["status"] == "delivered" and data["final"] is True
    assert data["final_via"] == "callback" and data["final_at"]
    assert data["to"] == "+15550001111" and data["metadata"] == {"order": 7}


def test_filters_pass_only_the_changes_asked_for(server: LiveServer) -> None:
    wanted, other = new_sid(), new_sid()
    with server.client() as client, server.client() as listener:
        with listener.stream(
            "GET", "/v1/stream", params={"provider": "twilio", "message_id": wanted}
        ) as response:
            post_status(client, server.callback_url, other, "sent")
            post_status(client, server.callback_url, wanted, "sent")
            post_status(client, server.callback_url, other, "delivered")
            post_status(client, server.callback_url, wanted, "delivered")
            got = take(events_only(sse(response)), 2)
        assert seen(got) == [(wanted, None, "sent"), (wanted, "sent", "delivered")]
        unknown = client.get("/v1/stream", params={"provider": "nope"})
        assert_error(unknown, 400, "invalid_parameter")
        assert_error(client.get("/v1/stream", params={"since": "1"}), 400, "unknown_parameter")


def test_an_idle_stream_gets_a_comment_ping(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(stream_ping=1.0)
    with server.client() as listener, listener.stream("GET", "/v1/stream") as response:
        started = time.monotonic()
        [block] = take(sse(response), 1)
        took = time.monotonic() - started
    assert block.event is None and block.comments and "ping" in block.comments[0]
    assert took < 5


def test_a_last_event_id_older_than_retention_gets_reset(server: LiveServer) -> None:
    sids = [new_sid() for _ in range(3)]
    with server.client() as client:
        for sid in sids:
            post_status(client, server.callback_url, sid, "delivered")

    async def prune() -> None:
        store = SQLiteStore(server.settings.database)
        await store.open()
        try:
            await store.prune(format_time(datetime.now(UTC) + timedelta(days=1)))
        finally:
            await store.close()

    asyncio.run(prune())
    kept = new_sid()
    with (
        server.client() as client,
        server.client() as listener,
        listener.stream("GET", "/v1/stream", headers={"Last-Event-ID": "1"}) as response,
    ):
        stream = events_only(sse(response))
        [reset] = take(stream, 1)
        post_status(client, server.callback_url, kept, "sent")
        [after] = take(stream, 1)
    assert reset.event == "reset"
    assert reset.json()["last_event_id"] == 1
    assert int(reset.id or 0) >= 3
    assert seen([after]) == [(kept, None, "sent")]


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "99999999999999999999"])
def test_a_bad_last_event_id_is_a_400(server: LiveServer, value: str) -> None:
    with server.client() as client:
        response = client.get("/v1/stream", headers={"Last-Event-ID": value})
    assert_error(response, 400, "invalid_last_event_id")


def test_past_the_cap_a_stream_gets_429_and_a_closed_one_frees_its_place(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(max_streams=1)
    with server.client() as listener, server.client() as client:
        with listener.stream("GET", "/v1/stream") as response:
            assert response.status_code == 200
            refused = client.get("/v1/stream")
        assert_error(refused, 429, "too_many_waiting")
        assert refused.headers["Retry-After"] == "1"
        wait_until(lambda: hub_of(server).streams == 0, what="the closed stream to go")
        with client.stream("GET", "/v1/stream") as again:
            assert again.status_code == 200


def test_a_slow_reader_does_not_slow_callbacks(server: LiveServer) -> None:
    """A stream nobody reads (its socket buffers full) holds only itself up: callbacks are
    answered as fast as with no stream, and the stream, read later, has every change."""
    sids = [new_sid() for _ in range(300)]
    # Large events (metadata) fill the socket buffers long before the last callback.
    register(server, *sids, metadata={"pad": "x" * 3000})

    def post_all(client: httpx.Client, status: str) -> float:
        started = time.monotonic()
        for sid in sids:
            assert post_status(client, server.callback_url, sid, status).status_code == 204
        return time.monotonic() - started

    with server.client() as client, server.client() as listener:
        alone = post_all(client, "sent")
        with listener.stream("GET", "/v1/stream", headers={"Last-Event-ID": "0"}) as response:
            behind = post_all(client, "delivered")
            got = take(events_only(sse(response)), 600)
    assert seen(got) == [(s, "registered", "sent") for s in sids] + [
        (s, "sent", "delivered") for s in sids
    ]
    # Shared machine: a generous bound, but a blocked stream would stall callbacks outright.
    assert behind < max(3 * alone, alone + 5), (alone, behind)
