"""Tests for receiver.api.messages and receiver.api.auth: the query API the business's app uses,
against the real server (uvicorn on 127.0.0.1, a fresh SQLite file), and who may call it.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    LiveServer,
    assert_error,
    make_settings,
    new_sid,
    post_status,
    send_head_only,
    status_params,
    twilio_form,
    wait_until,
)

from receiver.app import create_app
from receiver.engine import Status
from receiver.settings import Settings
from receiver.store.base import format_time

StartServer = Callable[..., LiveServer]

TOKEN = "s3cret"
REMOTE = "203.0.113.7"  # TEST-NET-3: never a real client, never loopback
TO = "+15550000001"
OTHER_TO = "+15550000002"
FROM = "+15550009999"
MESSAGE_FIELDS = {
    "provider",
    "message_id",
    "status",
    "provider_status",
    "error_code",
    "final",
    "final_via",
    "to",
    "from",
    "account",
    "registered",
    "metadata",
    "created_at",
    "updated_at",
    "sent_at",
    "final_at",
    "final_reason",
    "poll",
    "deadline",
    "deadline_missed",
}


# -- helpers ---------------------------------------------------------------------------------


def sid(n: int | str) -> str:
    """A Twilio-shaped message SID."""
    return f"SM{n:032x}" if isinstance(n, int) else f"SM{n}"


def message(message_id: str, **fields: Any) -> dict[str, Any]:
    """A registration body for one message."""
    return {"provider": "twilio", "message_id": message_id, "to": TO, "from": FROM, **fields}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def listed(client: httpx.Client, **params: Any) -> list[str]:
    """The message ids GET /v1/messages returns for `params`, in order (one page)."""
    return [m["message_id"] for m in ok(client.get("/v1/messages", params=params))["messages"]]


def callback(client: httpx.Client, server: LiveServer, message_id: str, *statuses: str) -> None:
    for status in statuses:
        response = post_status(client, server.callback_url, message_id, status)
        assert response.status_code == 204, response.text


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One default server for tests that check errors or touch only their own message ids."""
    server = LiveServer(make_settings(tmp_path_factory.mktemp("shared"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(shared: LiveServer) -> Iterator[httpx.Client]:
    # A connection per request: after a failure (a 500 closes its connection) the next test
    # still gets a clean answer instead of a reset.
    with shared.client(headers={"Connection": "close"}) as c:
        yield c


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with RECEIVER_API_TOKEN set."""
    server = LiveServer(make_settings(tmp_path_factory.mktemp("guarded"), api_token=TOKEN)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded_client(guarded: LiveServer) -> Iterator[httpx.Client]:
    """A client of the guarded server that sends no token of its own."""
    with guarded.client(headers={"Connection": "close"}) as c:
        yield c


@asynccontextmanager
async def in_process(
    settings: Settings, client: tuple[str, int]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, seen from `client`, with its lifespan run as a server would run it.

    httpx.ASGITransport sends no lifespan events, so the lifespan is entered here and its state
    handed to each request, as uvicorn does.
    """
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        transport = httpx.ASGITransport(app=with_state, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as c:
            yield c


# Every endpoint of the query API, as (method, path, body).
API_CALLS = [
    ("GET", "/v1/messages", None),
    ("POST", "/v1/messages", message("SMauth")),
    ("GET", "/v1/messages/SMauth", None),
    ("GET", "/v1/messages/SMauth/events", None),
    ("GET", "/v1/stats", None),
]
API_IDS = [f"{method} {path}" for method, path, _ in API_CALLS]


# -- registration ----------------------------------------------------------------------------


def test_registering_a_message_is_201_then_200_and_changes_nothing(client: httpx.Client) -> None:
    message_id = new_sid()
    # An hour ago, written at +01:00: a fixed date would fall past RECEIVER_POLL_MAX_AGE one day
    # and get a warning.
    sent = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sent_at = sent.astimezone(timezone(timedelta(hours=1))).isoformat()
    body = message(message_id, sent_at=sent_at, metadata={"order": 42})

    first = ok(client.post("/v1/messages", json=body), 201)
    assert first == {
        "provider": "twilio",
        "message_id": message_id,
        "created": True,
        "status": "registered",
        "pending_applied": 0,
    }
    stored = ok(client.get(f"/v1/messages/{message_id}"))

    again = ok(client.post("/v1/messages", json=body), 200)
    assert again == {**first, "created": False}
    assert ok(client.get(f"/v1/messages/{message_id}")) == stored
    assert stored["sent_at"] == format_time(sent)
    assert stored["metadata"] == {"order": 42}


@pytest.mark.parametrize("wrap", [list, lambda items: {"messages": items}], ids=["array", "object"])
def test_a_batch_registers_in_order_and_idempotently(
    client: httpx.Client, wrap: Callable[[list[Any]], Any]
) -> None:
    ids = [new_sid() for _ in range(3)]
    batch = wrap([message(i) for i in ids])

    first = ok(client.post("/v1/messages", json=batch))
    assert first["created"] == 3
    assert [(r["message_id"], r["created"]) for r in first["messages"]] == [(i, True) for i in ids]

    again = ok(client.post("/v1/messages", json=batch))
    assert again["created"] == 0
    assert [(r["message_id"], r["created"]) for r in again["messages"]] == [(i, False) for i in ids]


def test_a_batch_takes_1000_messages_and_refuses_1001(client: httpx.Client) -> None:
    full = [message(new_sid()) for _ in range(1001)]
    error = assert_error(client.post("/v1/messages", json=full), 400, "batch_too_large")
    assert error["details"] == {"limit": 1000}
    assert_error(client.get(f"/v1/messages/{full[0]['message_id']}"), 404, "message_not_found")

    assert ok(client.post("/v1/messages", json=full[:1000]))["created"] == 1000
    assert ok(client.post("/v1/messages", json={"messages": full[1:]}))["created"] == 1


BAD_MESSAGES = [
    pytest.param({"provider": "nexmo"}, "provider", id="unknown-provider"),
    pytest.param({"provider": None}, "provider", id="missing-provider"),
    pytest.param({"provider": ["twilio"]}, "provider", id="provider-not-a-string"),
    pytest.param({"message_id": None}, "message_id", id="missing-message-id"),
    pytest.param({"message_id": 123}, "message_id", id="message-id-not-a-string"),
    pytest.param({"message_id": "  "}, "message_id", id="blank-message-id"),
    pytest.param({"message_id": "S" * 257}, "message_id", id="message-id-too-long"),
    pytest.param({"to": 15550000001}, "to", id="to-not-a-string"),
    pytest.param({"from": ["+1555"]}, "from", id="from-not-a-string"),
    pytest.param({"sent_at": "yesterday"}, "sent_at", id="sent-at-not-a-time"),
    pytest.param({"sent_at": 1764064800}, "sent_at", id="sent-at-a-number"),
    pytest.param({"sent_at": "0001-01-01T00:00:00+01:00"}, "sent_at", id="sent-at-out-of-range"),
    pytest.param({"metadata": "order 42"}, "metadata", id="metadata-not-an-object"),
    pytest.param({"metadata": [42]}, "metadata", id="metadata-a-list"),
    pytest.param({"metadata": {"note": "x" * 4096}}, "metadata", id="metadata-too-big"),
    pytest.param({"status": "delivered"}, "status", id="unknown-field"),
]


@pytest.mark.parametrize(("change", "field"), BAD_MESSAGES)
def test_a_bad_message_is_400_with_its_index_and_nothing_is_stored(
    client: httpx.Client, change: dict[str, Any], field: str
) -> None:
    good, bad = new_sid(), new_sid()
    item = {k: v for k, v in {**message(bad), **change}.items() if v is not None}

    error = assert_error(
        client.post("/v1/messages", json=[message(good), item]), 400, "invalid_message"
    )
    # An unknown field's answer also lists the allowed ones (tests/test_registration.py).
    error["details"].pop("allowed", None)
    assert error["details"] == {"index": 1, "field": field}
    assert_error(client.get(f"/v1/messages/{good}"), 404, "message_not_found")

    single = assert_error(client.post("/v1/messages", json=item), 400, "invalid_message")
    single["details"].pop("allowed", None)
    assert single["details"] == {"index": 0, "field": field}


@pytest.mark.parametrize(
    ("body", "index"),
    [
        pytest.param([], None, id="empty-array"),
        pytest.param({"messages": []}, None, id="empty-batch"),
        pytest.param({"messages": "SM1"}, None, id="batch-not-a-list"),
        pytest.param(42, None, id="a-number"),
        pytest.param("SM1", None, id="a-string"),
        pytest.param([message("SMok"), "SM1"], 1, id="item-not-an-object"),
        pytest.param(
            {"messages": [message("SMextra")], "dry_run": True},
            None,
            id="unknown-key-beside-messages",
        ),
    ],
)
def test_a_body_that_is_not_messages_is_400(
    client: httpx.Client, body: Any, index: int | None
) -> None:
    error = assert_error(client.post("/v1/messages", json=body), 400, "invalid_message")
    assert error.get("details", {}).get("index") == index


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"provider": "twilio",', id="truncated"),
        pytest.param(b"provider=twilio&message_id=SM1", id="a-form"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-too-deep"),
        # Python parses these but could never serve them back: each would make every later
        # read of the message, and of any list holding it, fail.
        pytest.param(b'{"provider":"twilio","message_id":"SMnan","metadata":{"x":NaN}}', id="nan"),
        pytest.param(
            b'{"provider":"twilio","message_id":"SMinf","metadata":{"x":-Infinity}}', id="infinity"
        ),
        pytest.param(
            b'{"provider":"twilio","message_id":"SMbig","metadata":{"x":1e400}}',
            id="number-out-of-range",
        ),
        pytest.param(b'{"provider":"twilio","message_id":"SM\\ud800"}', id="lone-surrogate"),
        pytest.param(
            b'{"provider":"twilio","message_id":"SMs","metadata":{"\\udfff":1}}',
            id="lone-surrogate-in-metadata",
        ),
    ],
)
def test_a_body_that_is_not_json_is_400_invalid_json(client: httpx.Client, body: bytes) -> None:
    assert_error(client.post("/v1/messages", content=body), 400, "invalid_json")
    ok(client.get("/v1/messages", params={"limit": 10}))  # nothing unservable was stored


# -- events before registration --------------------------------------------------------------


def test_a_callback_for_an_unknown_message_creates_it_and_registration_fills_it_in(
    shared: LiveServer, client: httpx.Client
) -> None:
    """unknown_messages=create (the default)."""
    message_id = new_sid()
    callback(client, shared, message_id, "delivered")
    created = ok(client.get(f"/v1/messages/{message_id}"))
    assert created["status"] == "delivered"
    assert created["registered"] is False
    assert created["to"] == status_params(message_id, "delivered")["To"]

    registration = message(message_id, sent_at="2026-11-25T10:00:00Z", metadata={"a": 1})
    assert ok(client.post("/v1/messages", json=registration), 200) == {
        "provider": "twilio",
        "message_id": message_id,
        "created": False,
        "status": "delivered",
        "pending_applied": 0,
    }
    filled = ok(client.get(f"/v1/messages/{message_id}"))

    assert filled["registered"] is True
    assert (filled["to"], filled["from"]) == (TO, FROM)
    assert filled["sent_at"] == "2026-11-25T10:00:00.000Z"
    assert filled["metadata"] == {"a": 1}
    unchanged = ("status", "final", "final_at", "provider_status", "created_at", "account")
    assert {k: filled[k] for k in unchanged} == {k: created[k] for k in unchanged}


def test_held_callbacks_wait_for_registration_then_apply_in_order(
    start_server: StartServer,
) -> None:
    """unknown_messages=hold: events for an unknown message are kept, not applied, until the
    app registers it."""
    server = start_server(unknown_messages="hold")
    message_id = sid(1)
    with server.client() as client:
        callback(client, server, message_id, "sent", "delivered", "sent")
        assert_error(client.get(f"/v1/messages/{message_id}"), 404, "message_not_found")
        assert_error(client.get(f"/v1/messages/{message_id}/events"), 404, "message_not_found")
        assert listed(client) == []

        registered = ok(client.post("/v1/messages", json=message(message_id)), 201)
        assert registered == {
            "provider": "twilio",
            "message_id": message_id,
            "created": True,
            "status": "delivered",
            "pending_applied": 3,
        }
        history = ok(client.get(f"/v1/messages/{message_id}/events"))

        again = ok(client.post("/v1/messages", json=message(message_id)), 200)
        assert (again["status"], again["pending_applied"]) == ("delivered", 0)
        assert ok(client.get(f"/v1/messages/{message_id}/events")) == history

    assert history["message"]["status"] == "delivered"
    events = history["events"]
    assert [(e["status"], e["previous_status"], e["outcome"]) for e in events] == [
        ("sent", "registered", "applied"),
        ("delivered", "sent", "applied"),
        ("sent", "delivered", "regression"),
    ]
    assert all(e["received_at"] <= e["resolved_at"] for e in events)


# -- reading one message ---------------------------------------------------------------------


def test_a_message_reads_with_its_current_status_and_fields(
    shared: LiveServer, client: httpx.Client
) -> None:
    message_id = new_sid()
    ok(client.post("/v1/messages", json=message(message_id, metadata={"order": 7})), 201)
    callback(client, shared, message_id, "sent", "delivered")
    found = ok(client.get(f"/v1/messages/{message_id}"))
    assert ok(client.get(f"/v1/messages/{message_id}", params={"provider": "twilio"})) == found

    assert set(found) == MESSAGE_FIELDS
    assert {
        k: found[k]
        for k in (
            "provider",
            "message_id",
            "status",
            "provider_status",
            "final",
            "final_via",
            "to",
            "from",
            "registered",
            "metadata",
        )
    } == {
        "provider": "twilio",
        "message_id": message_id,
        "status": "delivered",
        "provider_status": "delivered",
        "final": True,
        "final_via": "callback",
        "to": TO,
        "from": FROM,
        "registered": True,
        "metadata": {"order": 7},
    }
    assert found["created_at"] <= found["sent_at"] <= found["final_at"] == found["updated_at"]


def test_an_id_used_by_two_providers_is_409_until_the_provider_is_named(
    shared: LiveServer, client: httpx.Client
) -> None:
    """Only Twilio exists today, so the second provider's row is written straight to the file,
    as a second adapter would leave it."""
    message_id = new_sid()
    ok(client.post("/v1/messages", json=message(message_id)), 201)
    with sqlite3.connect(shared.settings.database) as conn:
        conn.execute(
            "INSERT INTO messages (provider, message_id, status, registered, is_final, "
            "created_at, updated_at) VALUES ('other', ?, 'sent', 1, 0, '2026-01-01', '2026-01-01')",
            (message_id,),
        )
    for path in (f"/v1/messages/{message_id}", f"/v1/messages/{message_id}/events"):
        error = assert_error(client.get(path), 409, "ambiguous_message_id")
        assert error["details"]["providers"] == ["other", "twilio"]
    named = ok(client.get(f"/v1/messages/{message_id}", params={"provider": "twilio"}))
    assert (named["provider"], named["status"]) == ("twilio", "registered")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/messages/SMnothere",
        "/v1/messages/SMnothere?provider=twilio",
        "/v1/messages/SMnothere/events",
    ],
)
def test_an_unknown_message_is_404(client: httpx.Client, path: str) -> None:
    assert_error(client.get(path), 404, "message_not_found")


def test_events_are_the_whole_history_with_outcomes_in_arrival_order(
    shared: LiveServer, client: httpx.Client
) -> None:
    message_id = new_sid()
    ok(client.post("/v1/messages", json=message(message_id)), 201)
    callback(client, shared, message_id, "sent", "failed", "undelivered", "sent", "failed")
    history = ok(client.get(f"/v1/messages/{message_id}/events"))

    assert history["message"]["status"] == "failed"
    events = history["events"]
    assert [(e["provider_status"], e["previous_status"], e["outcome"]) for e in events] == [
        ("sent", "registered", "applied"),
        ("failed", "sent", "applied"),
        ("undelivered", "failed", "conflict"),  # same rank: the first final status wins
        ("sent", "failed", "regression"),
        ("failed", "failed", "duplicate"),
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert [e["received_at"] for e in events] == sorted(e["received_at"] for e in events)


# -- listing ---------------------------------------------------------------------------------


def test_list_is_newest_first_and_pages_with_a_stable_cursor(server: LiveServer) -> None:
    """Messages created, and status changes, between two pages neither repeat nor skip one."""
    first_seven = [sid(n) for n in range(1, 8)]
    with server.client() as client:
        ok(client.post("/v1/messages", json=[message(i) for i in first_seven]))
        page1 = ok(client.get("/v1/messages", params={"limit": 3}))

        ok(client.post("/v1/messages", json=[message(sid(8)), message(sid(9))]))
        callback(client, server, sid(10), "sent")  # an unknown message: created, newest
        callback(client, server, sid(3), "delivered")  # an update to a row on a later page

        page2 = ok(client.get("/v1/messages", params={"limit": 3, "cursor": page1["next_cursor"]}))
        page3 = ok(client.get("/v1/messages", params={"limit": 3, "cursor": page2["next_cursor"]}))
        newest = listed(client, limit=3)

    pages = [[m["message_id"] for m in p["messages"]] for p in (page1, page2, page3)]
    assert pages == [[sid(7), sid(6), sid(5)], [sid(4), sid(3), sid(2)], [sid(1)]]
    assert page3["next_cursor"] is None
    assert newest == [sid(10), sid(9), sid(8)]


def test_list_limit_defaults_to_100_and_goes_up_to_1000(server: LiveServer) -> None:
    with server.client() as client:
        ok(client.post("/v1/messages", json=[message(sid(n)) for n in range(101)]))
        default = ok(client.get("/v1/messages"))
        rest = ok(client.get("/v1/messages", params={"cursor": default["next_cursor"]}))
        exact = ok(client.get("/v1/messages", params={"limit": 101}))
        most = ok(client.get("/v1/messages", params={"limit": 1000}))

    assert len(default["messages"]) == 100 and default["next_cursor"] is not None
    assert [m["message_id"] for m in rest["messages"]] == [sid(0)]
    assert rest["next_cursor"] is None
    assert len(exact["messages"]) == 101 and exact["next_cursor"] is None
    assert most["messages"] == exact["messages"]


def with_offset(stored: str, hours: float) -> str:
    """The instant `stored` (as the API gives it, in UTC) written with a UTC offset of `hours`."""
    return datetime.fromisoformat(stored).astimezone(timezone(timedelta(hours=hours))).isoformat()


def test_list_filters_by_status_provider_to_and_creation_time(server: LiveServer) -> None:
    a1, a2, a3, b1, b2 = (sid(n) for n in range(1, 6))
    with server.client() as client:
        ok(
            client.post(
                "/v1/messages",
                json=[
                    message(a1),
                    message(a2, to=OTHER_TO),
                    message(a3),
                ],
            )
        )
        callback(client, server, a1, "delivered")
        callback(client, server, a2, "failed")
        a_last = max(m["created_at"] for m in ok(client.get("/v1/messages"))["messages"])
        wait_until(lambda: format_time(datetime.now(UTC)) > a_last, what="the next millisecond")
        ok(client.post("/v1/messages", json=[message(b1), message(b2, to=OTHER_TO)]))
        callback(client, server, b1, "delivered")
        b_first = min(
            m["created_at"]
            for m in ok(client.get("/v1/messages"))["messages"]
            if m["message_id"] in (b1, b2)
        )

        assert listed(client, status="delivered") == [b1, a1]
        assert listed(client, status="failed") == [a2]
        assert listed(client, status="registered") == [b2, a3]
        assert listed(client, status="expired") == []
        assert listed(client, provider="twilio") == [b2, b1, a3, a2, a1]
        assert listed(client, to=TO) == [b1, a3, a1]
        assert listed(client, to=OTHER_TO) == [b2, a2]
        assert listed(client, since=b_first) == [b2, b1]
        assert listed(client, until=b_first) == [a3, a2, a1]
        # Any UTC offset names the same instant; a date alone is its midnight UTC.
        assert listed(client, since=with_offset(b_first, 5.5)) == [b2, b1]
        assert listed(client, since="2000-01-01") == [b2, b1, a3, a2, a1]
        assert listed(client, until="2000-01-01") == []
        assert listed(client, status="delivered", to=TO, since=b_first) == [b1]

        page = ok(client.get("/v1/messages", params={"to": OTHER_TO, "limit": 1}))
        rest = ok(
            client.get(
                "/v1/messages", params={"to": OTHER_TO, "limit": 1, "cursor": page["next_cursor"]}
            )
        )
    assert [m["message_id"] for m in page["messages"] + rest["messages"]] == [b2, a2]
    assert rest["next_cursor"] is None


BAD_QUERIES = [
    ("/v1/messages?status=bogus", "invalid_parameter", "status"),
    ("/v1/messages?status=DELIVERED", "invalid_parameter", "status"),
    ("/v1/messages?provider=nexmo", "invalid_parameter", "provider"),
    ("/v1/messages?limit=0", "invalid_parameter", "limit"),
    ("/v1/messages?limit=1001", "invalid_parameter", "limit"),
    ("/v1/messages?limit=abc", "invalid_parameter", "limit"),
    ("/v1/messages?limit=-1", "invalid_parameter", "limit"),
    ("/v1/messages?limit=", "invalid_parameter", "limit"),
    ("/v1/messages?limit=%C2%B2", "invalid_parameter", "limit"),  # "²" is a digit to str.isdigit
    ("/v1/messages?since=2026-01-02&until=2026-01-01", "invalid_parameter", "since"),
    ("/v1/messages?since=2026-01-01&until=2026-01-01", "invalid_parameter", "since"),
    ("/v1/messages?since=yesterday", "invalid_parameter", "since"),
    ("/v1/messages?until=2026-13-01", "invalid_parameter", "until"),
    ("/v1/messages?since=", "invalid_parameter", "since"),
    ("/v1/messages?since=0001-01-01T00:00:00%2B01:00", "invalid_parameter", "since"),
    ("/v1/messages?until=9999-12-31T23:00:00-05:00", "invalid_parameter", "until"),
    ("/v1/messages?since=0999-01-01", "invalid_parameter", "since"),
    ("/v1/messages?cursor=!!!", "invalid_cursor", "cursor"),
    ("/v1/messages?cursor=abc", "invalid_cursor", "cursor"),
    (f"/v1/messages?cursor={b64('v2:5')}", "invalid_cursor", "cursor"),
    (f"/v1/messages?cursor={b64('v1:x')}", "invalid_cursor", "cursor"),
    (f"/v1/messages?cursor={b64('v1:-5')}", "invalid_cursor", "cursor"),
    (f"/v1/messages?cursor={b64('v1:99999999999999999999')}", "invalid_cursor", "cursor"),
    ("/v1/messages?foo=1", "unknown_parameter", None),
    ("/v1/messages?status=sent&status=failed", "invalid_parameter", "status"),
    ("/v1/messages?limit=5&limit=5", "invalid_parameter", "limit"),
    ("/v1/messages/SM1?foo=1", "unknown_parameter", None),
    ("/v1/messages/SM1?provider=twilio&provider=twilio", "invalid_parameter", "provider"),
    ("/v1/messages/SM1/events?limit=1", "unknown_parameter", None),
    ("/v1/messages/SM1?provider=nexmo", "invalid_parameter", "provider"),
    ("/v1/messages/SM1/events?provider=nexmo", "invalid_parameter", "provider"),
    ("/v1/stats?status=delivered", "unknown_parameter", None),
    ("/v1/stats?provider=nexmo", "invalid_parameter", "provider"),
    ("/v1/stats?since=2026-01-02&until=2026-01-01", "invalid_parameter", "since"),
    ("/v1/stats?until=soon", "invalid_parameter", "until"),
]


@pytest.mark.parametrize(("path", "error_code", "parameter"), BAD_QUERIES)
def test_a_bad_query_parameter_is_400_with_a_stable_error_code(
    client: httpx.Client, path: str, error_code: str, parameter: str | None
) -> None:
    error = assert_error(client.get(path), 400, error_code)
    if parameter is None:
        assert "allowed" in error["details"]
    else:
        assert error["details"]["parameter"] == parameter


@pytest.mark.parametrize(
    ("method", "path", "status", "error_code"),
    [
        ("DELETE", "/v1/messages", 405, "method_not_allowed"),
        ("PUT", "/v1/messages/SM1", 405, "method_not_allowed"),
        ("GET", "/v1/messages/SM1/history", 404, "message_not_found"),  # an id with a "/"
        ("GET", "/v1/nothing", 404, "not_found"),
    ],
)
def test_a_wrong_route_or_method_is_a_json_error(
    client: httpx.Client, method: str, path: str, status: int, error_code: str
) -> None:
    assert_error(client.request(method, path), status, error_code)


# -- stats -----------------------------------------------------------------------------------


def test_stats_count_statuses_rate_and_time_to_final(server: LiveServer) -> None:
    # (seconds sent before the registration, callback statuses)
    plan = {
        sid(1): (10, ["sent", "delivered"]),
        sid(2): (20, ["delivered"]),
        sid(3): (30, ["failed"]),
        sid(4): (40, ["queued", "delivered"]),
        sid(5): (3600, ["undelivered"]),
        sid(6): (5, ["sent"]),
        sid(7): (5, ["queued"]),
        sid(8): (5, []),
    }
    started = datetime.now(UTC)
    with server.client() as client:
        ok(
            client.post(
                "/v1/messages",
                json=[
                    message(i, sent_at=format_time(started - timedelta(seconds=ago)))
                    for i, (ago, _) in plan.items()
                ],
            )
        )
        for message_id, (_, statuses) in plan.items():
            callback(client, server, message_id, *statuses)
        elapsed = (datetime.now(UTC) - started).total_seconds()
        stats = ok(client.get("/v1/stats"))
        assert ok(client.get("/v1/stats", params={"provider": "twilio"})) == stats

    assert stats["by_status"] == {
        **{s.value: 0 for s in Status},
        "delivered": 3,
        "failed": 1,
        "undelivered": 1,
        "sent": 1,
        "queued": 1,
        "registered": 1,
    }
    assert (stats["total"], stats["final"], stats["delivered"]) == (8, 5, 3)
    assert stats["delivery_rate"] == 0.6
    # Final times are receipt times, so each time is its send offset plus up to `elapsed`;
    # sorted: 10, 20, 30, 40, 3600 -> nearest-rank median 30, p95 3600.
    times = stats["time_to_final_seconds"]
    assert times["count"] == 5
    assert 30 - 0.002 <= times["median"] <= 30 + elapsed + 0.002
    assert 3600 - 0.002 <= times["p95"] <= 3600 + elapsed + 0.002
    assert times["median"] <= times["p95"]


def test_stats_of_an_empty_window_are_zeros_and_nulls(client: httpx.Client) -> None:
    stats = ok(client.get("/v1/stats", params={"since": "9000-01-01", "until": "9000-01-02"}))
    assert stats == {
        "total": 0,
        "by_status": {s.value: 0 for s in Status},
        "final": 0,
        "delivered": 0,
        "delivery_rate": None,
        "time_to_final_seconds": {"count": 0, "median": None, "p95": None},
    }


# -- who may call the API --------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        "Bearer s3cret-and-more",
        "Bearer S3CRET",
        "Bearer",
        "Basic s3cret",
        "s3cret",
    ],
)
@pytest.mark.parametrize(("method", "path", "body"), API_CALLS, ids=API_IDS)
def test_with_a_token_set_every_api_call_needs_it(
    guarded_client: httpx.Client, method: str, path: str, body: Any, authorization: str | None
) -> None:
    client = guarded_client
    headers = {"Authorization": authorization} if authorization is not None else {}
    refused = client.request(method, path, json=body, headers=headers)
    assert_error(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"].startswith("Bearer")  # RFC 6750
    # Refused before the request is read: a bad parameter is still a 401.
    assert_error(
        client.request(method, path + "?limit=0", content=b"{", headers=headers),
        401,
        "unauthorized",
    )


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_with_a_token_set_the_right_token_opens_every_api_call(
    guarded: LiveServer, scheme: str
) -> None:
    message_id = new_sid()
    with guarded.client(headers={"Authorization": f"{scheme} {TOKEN}"}) as client:
        ok(client.post("/v1/messages", json=message(message_id)), 201)
        assert ok(client.get(f"/v1/messages/{message_id}"))["status"] == "registered"
        assert ok(client.get(f"/v1/messages/{message_id}/events"))["events"] == []
        assert message_id in listed(client, limit=1000)
        assert ok(client.get("/v1/stats"))["total"] >= 1


def test_with_a_token_set_health_and_webhooks_need_none(
    guarded: LiveServer, guarded_client: httpx.Client
) -> None:
    client = guarded_client
    message_id = new_sid()
    assert ok(client.get("/healthz"))["status"] == "ok"
    assert ok(client.get("/readyz"))["status"] == "ready"
    callback(client, guarded, message_id, "delivered")
    found = client.get(f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok(found)["status"] == "delivered"


def test_without_a_token_a_remote_client_behind_a_trusted_proxy_gets_403(
    start_server: StartServer,
) -> None:
    server = start_server(trust_forwarded=True)
    remote = {"X-Forwarded-For": REMOTE}
    with server.client() as client:
        for method, path, body in API_CALLS:
            response = client.request(method, path, json=body, headers=remote)
            assert_error(response, 403, "loopback_only")
        assert listed(client) == []  # the refused registration stored nothing
        # Health checks and provider callbacks from anywhere are answered.
        assert ok(client.get("/healthz", headers=remote))["status"] == "ok"
        form, signed = twilio_form(server.callback_url, status_params(sid(1), "sent"))
        webhook = client.post(server.callback_url, content=form, headers={**signed, **remote})
        assert webhook.status_code == 204, webhook.text
        # Requests the proxy host makes itself come from loopback.
        for method, path, body in API_CALLS:
            response = client.request(method, path, json=body)
            assert response.status_code in (200, 201), response.text

        # The proxy appends the address it saw; what the client wrote before it is no evidence.
        spoofed = client.get("/v1/messages", headers={"X-Forwarded-For": f"127.0.0.1, {REMOTE}"})
        assert_error(spoofed, 403, "loopback_only")


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": REMOTE},
        {"X-Forwarded-For": "127.0.0.1"},
        {"Forwarded": f"for={REMOTE}"},
        {"X-Real-IP": REMOTE},
        {"X-Forwarded-Host": "sms.example.com"},
    ],
)
def test_without_a_token_a_request_through_an_untrusted_proxy_is_refused(
    client: httpx.Client, header: dict[str, str]
) -> None:
    """A proxy on this host makes every client look like loopback; its headers give it away."""
    for method, path, body in API_CALLS:
        response = client.request(method, path, json=body, headers=header)
        assert_error(response, 403, "loopback_only")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "token", "status"),
    [
        (REMOTE, None, 403),
        ("10.0.0.5", None, 403),
        ("::ffff:203.0.113.7", None, 403),
        ("127.0.0.1", None, 200),
        ("127.5.6.7", None, 200),
        ("::1", None, 200),
        (REMOTE, TOKEN, 200),  # with a token set, the token is what counts, not the address
    ],
)
async def test_in_process_the_client_address_counts_only_when_no_token_is_set(
    tmp_path: Path, host: str, token: str | None, status: int
) -> None:
    settings = make_settings(tmp_path, api_token=token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with in_process(settings, (host, 4000)) as client:
        assert (await client.get("/healthz")).status_code == 200
        for method, path, body in API_CALLS:
            response = await client.request(method, path, json=body, headers=headers)
            if status == 403:
                assert_error(response, 403, "loopback_only")
            else:
                assert response.status_code in (200, 201), response.text


def test_a_registration_body_over_the_limit_is_413_before_it_is_read(
    shared: LiveServer,
) -> None:
    """A Content-Length over the limit is answered while the body is still unsent."""
    from receiver.api.messages import MAX_REGISTRATION_BODY

    head = send_head_only(shared.base_url, "/v1/messages", MAX_REGISTRATION_BODY + 1, b"[")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"body_too_large" in head


def test_a_message_id_holding_slashes_is_read_whole(server: LiveServer) -> None:
    """Registration takes any id, so reading must too: "/" included, encoded or not."""
    with server.client() as client:
        created = client.post("/v1/messages", json={"provider": "twilio", "message_id": "a/b/c"})
        assert created.status_code == 201, created.text
        for path in ("/v1/messages/a/b/c", "/v1/messages/a%2Fb%2Fc"):
            got = client.get(path)
            assert got.status_code == 200 and got.json()["message_id"] == "a/b/c"
        history = client.get("/v1/messages/a/b/c/events")
        assert history.status_code == 200 and history.json()["message"]["message_id"] == "a/b/c"
        assert_error(client.get("/v1/messages/a/b"), 404, "message_not_found")
