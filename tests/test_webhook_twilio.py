"""End-to-end tests of POST /v1/webhook/twilio/sms-status against the real server.

Every request is signed by Twilio's own SDK (support.twilio_form, RequestValidator) and sent
over loopback to the app under uvicorn; results are read back through the query API and, where
that is clearer, straight from the SQLite file (read-only).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from support import (
    CALLBACK_PATH,
    TWILIO_ACCOUNT,
    TWILIO_TOKEN,
    LiveServer,
    assert_error,
    make_settings,
    new_sid,
    post_status,
    send_head_only,
    status_params,
    twilio_form,
)
from twilio.request_validator import RequestValidator

AC1 = "AC11111111111111111111111111111111"
AC2 = "AC22222222222222222222222222222222"
AC3 = "AC33333333333333333333333333333333"  # listed nowhere: uses TWILIO_AUTH_TOKEN
ACCOUNTS = ((AC1, "tok1"), (AC2, "tok2"))
FORM = "application/x-www-form-urlencoded"

Request = tuple[bytes, dict[str, str]]


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    """One live server per distinct settings, shared by the module's tests (unique SIDs)."""
    servers: dict[tuple[tuple[str, Any], ...], LiveServer] = {}

    def get(**overrides: Any) -> LiveServer:
        key = tuple(sorted(overrides.items()))
        if key not in servers:
            settings = make_settings(tmp_path_factory.mktemp("shared"), **overrides)
            servers[key] = LiveServer(settings).start()
        return servers[key]

    yield get
    with ThreadPoolExecutor() as pool:  # each stop waits on uvicorn's tick: stop them together
        list(pool.map(LiveServer.stop, servers.values()))


@pytest.fixture
def default_server(shared_server: Callable[..., LiveServer]) -> LiveServer:
    return shared_server()


def query(server: LiveServer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the server's SQLite file, opened read-only."""
    conn = sqlite3.connect(f"file:{Path(server.settings.database).resolve()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def row_counts(server: LiveServer) -> tuple[int, int]:
    """(rows in messages, rows in events)."""
    (row,) = query(server, "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM events)")
    return row[0], row[1]


def stored_rows(server: LiveServer, sid: str) -> tuple[int, int]:
    """(messages, events) stored for one SID."""
    (row,) = query(
        server,
        "SELECT (SELECT count(*) FROM messages WHERE message_id = ?),"
        " (SELECT count(*) FROM events WHERE message_id = ?)",
        sid,
        sid,
    )
    return row[0], row[1]


def message(client: httpx.Client, sid: str) -> dict[str, Any]:
    response = client.get(f"/v1/messages/{sid}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def history(client: httpx.Client, sid: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/messages/{sid}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def post_signed(
    client: httpx.Client,
    server: LiveServer,
    params: dict[str, str] | list[tuple[str, str]],
    *,
    signed_url: str | None = None,
    query_string: str = "",
    token: str = TWILIO_TOKEN,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a form callback to the loopback server, signed over `signed_url` (default: the
    loopback URL itself), with `query_string` on both."""
    tail = f"?{query_string}" if query_string else ""
    body, signed_headers = twilio_form((signed_url or server.callback_url) + tail, params, token)
    return client.post(
        server.callback_url + tail, content=body, headers={**signed_headers, **(headers or {})}
    )


def json_request(
    url: str, payload: dict[str, Any], token: str = TWILIO_TOKEN
) -> tuple[str, Request]:
    """A JSON callback as Twilio sends one: bodySHA256 on the URL, the signature over the URL.

    Returns the URL with its query, and the body and headers.
    """
    validator = RequestValidator(token)
    text = json.dumps(payload)
    url_with_hash = f"{url}?bodySHA256={validator.compute_hash(text)}"
    signature = validator.compute_signature(url_with_hash, {})
    return url_with_hash, (
        text.encode(),
        {"Content-Type": "application/json", "X-Twilio-Signature": signature},
    )


# --- accepted callbacks -------------------------------------------------------------------


def test_signed_callback_is_stored_with_canonical_status(default_server: LiveServer) -> None:
    sid = new_sid()
    with default_server.client() as client:
        response = post_status(client, default_server.callback_url, sid, "read")
        stored = message(client, sid)

    assert response.status_code == 204
    assert response.content == b""
    assert stored["status"] == "delivered"
    assert stored["provider_status"] == "read"
    assert stored["final"] is True
    assert stored["provider"] == "twilio"
    assert stored["account"] == TWILIO_ACCOUNT
    assert (stored["to"], stored["from"]) == ("+15558675310", "+15017122661")


def test_event_history_keeps_raw_body_kept_headers_and_outcome(default_server: LiveServer) -> None:
    """The history has the body byte for byte and the kept headers, never the signature."""
    sid = new_sid()
    token = "idem-" + sid
    with default_server.client() as client:
        body, headers = twilio_form(default_server.callback_url, status_params(sid, "sent"))
        response = client.post(
            default_server.callback_url,
            content=body,
            headers={
                **headers,
                "I-Twilio-Idempotency-Token": token,
                "User-Agent": "TwilioProxy/1.1",
            },
        )
        (event,) = history(client, sid)

    assert response.status_code == 204
    assert event["body"] == body.decode()
    assert event["headers"] == {
        "content-type": FORM,
        "user-agent": "TwilioProxy/1.1",
        "i-twilio-idempotency-token": token,
    }
    assert (event["outcome"], event["previous_status"], event["status"]) == (
        "applied",
        None,
        "sent",
    )
    assert (event["source"], event["provider_status"], event["dedupe_key"]) == (
        "callback",
        "sent",
        token,
    )


def test_error_code_and_dlr_done_date_are_stored(default_server: LiveServer) -> None:
    sid = new_sid()
    with default_server.client() as client:
        response = post_status(
            client,
            default_server.callback_url,
            sid,
            "undelivered",
            ErrorCode="30003",
            RawDlrDoneDate="2611251045",
        )
        stored = message(client, sid)
        (event,) = history(client, sid)

    assert response.status_code == 204
    assert (stored["status"], stored["error_code"]) == ("undelivered", "30003")
    assert event["error_code"] == "30003"
    assert event["event_time"] == "2026-11-25T10:45:00.000Z"


def test_repeated_keys_signed_by_the_sdk_are_accepted(default_server: LiveServer) -> None:
    """Twilio's SDK signs every value of a repeated key (sorted, de-duplicated)."""
    sid = new_sid()
    params = [*status_params(sid, "sent").items(), ("Tag", "b"), ("Tag", "a"), ("Tag", "a")]
    with default_server.client() as client:
        response = post_signed(client, default_server, params)
        (event,) = history(client, sid)

    assert response.status_code == 204
    assert event["body"].endswith("&Tag=b&Tag=a&Tag=a")
    assert event["outcome"] == "applied"


def test_non_ascii_values_are_signed_as_utf8(default_server: LiveServer) -> None:
    sid = new_sid()
    with default_server.client() as client:
        response = post_status(
            client,
            default_server.callback_url,
            sid,
            "undelivered",
            ErrorMessage="Zustellung fehlgeschlagen: Empfänger 📵",
        )
        (event,) = history(client, sid)

    assert response.status_code == 204, response.text
    assert "ErrorMessage=Zustellung+fehlgeschlagen%3A+Empf%C3%A4nger+%F0%9F%93%B5" in event["body"]


def test_legacy_sms_fields_alone_are_enough(default_server: LiveServer) -> None:
    """Older callbacks name the message SmsSid/SmsStatus only."""
    sid = new_sid()
    params = {
        k: v
        for k, v in status_params(sid, "sent").items()
        if k not in ("MessageSid", "MessageStatus")
    }
    with default_server.client() as client:
        response = post_signed(client, default_server, params)
        stored = message(client, sid)

    assert response.status_code == 204, response.text
    assert stored["status"] == "sent"


def test_json_callback_with_body_hash_is_accepted(default_server: LiveServer) -> None:
    sid = new_sid()
    payload = {
        "MessageSid": sid,
        "MessageStatus": "delivered",
        "AccountSid": TWILIO_ACCOUNT,
        "To": "+15558675310",
        "ErrorCode": 0,
    }
    url, (body, headers) = json_request(default_server.callback_url, payload)
    with default_server.client() as client:
        response = client.post(url, content=body, headers=headers)
        stored = message(client, sid)
        (event,) = history(client, sid)

    assert response.status_code == 204
    assert (stored["status"], stored["to"]) == ("delivered", "+15558675310")
    assert json.loads(event["body"]) == payload
    assert event["headers"]["content-type"] == "application/json"


# --- refused callbacks --------------------------------------------------------------------

# Each forgery takes the loopback callback URL and a genuine callback's params, and returns
# the body and headers actually sent.


def _no_signature(url: str, params: dict[str, str]) -> Request:
    body, _ = twilio_form(url, params)
    return body, {"Content-Type": FORM}


def _empty_signature(url: str, params: dict[str, str]) -> Request:
    body, headers = twilio_form(url, params)
    return body, {**headers, "X-Twilio-Signature": ""}


def _wrong_token(url: str, params: dict[str, str]) -> Request:
    return twilio_form(url, params, token="not-the-auth-token")


def _garbage_signature(url: str, params: dict[str, str]) -> Request:
    body, headers = twilio_form(url, params)
    return body, {**headers, "X-Twilio-Signature": "c2lnbmF0dXJlIG9mIG5vdGhpbmc="}


def _tampered_status(url: str, params: dict[str, str]) -> Request:
    body, headers = twilio_form(url, params)
    return body.replace(b"Status=sent", b"Status=delivered"), headers


def _added_param(url: str, params: dict[str, str]) -> Request:
    body, headers = twilio_form(url, params)
    return body + b"&ErrorCode=30007", headers


def _dropped_param(url: str, params: dict[str, str]) -> Request:
    _, headers = twilio_form(url, params)
    body, _ = twilio_form(url, {k: v for k, v in params.items() if k != "To"})
    return body, headers


def _other_path(url: str, params: dict[str, str]) -> Request:
    return twilio_form(url.replace("/sms-status", "/voice-status"), params)


def _sha256_with_auth_token(url: str, params: dict[str, str]) -> Request:
    """HMAC-SHA256 is only for SharedKey-signed webhooks, which are not supported here."""
    body, headers = twilio_form(url, params)
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params, "HMAC_SHA256")
    return body, {
        **headers,
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": "key=KS1,algorithm=HMAC_SHA256",
    }


def _not_utf8(url: str, params: dict[str, str]) -> Request:
    body, headers = twilio_form(url, params)
    return body + b"&Body=\xff\xfe", headers


@pytest.mark.parametrize(
    ("forge", "error_code"),
    [
        pytest.param(_no_signature, "signature_missing", id="missing-signature"),
        pytest.param(_empty_signature, "signature_missing", id="empty-signature"),
        pytest.param(_wrong_token, "signature_invalid", id="wrong-token"),
        pytest.param(_garbage_signature, "signature_invalid", id="invalid-signature"),
        pytest.param(_tampered_status, "signature_invalid", id="tampered-status"),
        pytest.param(_added_param, "signature_invalid", id="added-param"),
        pytest.param(_dropped_param, "signature_invalid", id="dropped-param"),
        pytest.param(_other_path, "signature_invalid", id="signed-for-another-url"),
        pytest.param(_sha256_with_auth_token, "signature_invalid", id="sha256-signature"),
        pytest.param(_not_utf8, "signature_invalid", id="body-not-utf8"),
    ],
)
def test_unauthentic_callback_is_refused_and_nothing_stored(
    default_server: LiveServer, forge: Callable[[str, dict[str, str]], Request], error_code: str
) -> None:
    sid = new_sid()
    before = row_counts(default_server)
    body, headers = forge(default_server.callback_url, status_params(sid, "sent"))
    with default_server.client() as client:
        response = client.post(default_server.callback_url, content=body, headers=headers)

    assert_error(response, 403, error_code)
    assert row_counts(default_server) == before
    assert stored_rows(default_server, sid) == (0, 0)


@pytest.mark.parametrize(("good_first", "expected"), [(True, 204), (False, 403)])
def test_the_first_of_two_signature_headers_is_the_one_checked(
    default_server: LiveServer, good_first: bool, expected: int
) -> None:
    """As Starlette's Headers.get answers: the first value of a repeated header counts."""
    sid = new_sid()
    body, headers = twilio_form(default_server.callback_url, status_params(sid, "sent"))
    good = headers.pop("X-Twilio-Signature")
    forged = RequestValidator("54321").compute_signature(default_server.callback_url, {})
    signatures = [good, forged] if good_first else [forged, good]
    with default_server.client() as client:
        response = client.post(
            default_server.callback_url,
            content=body,
            headers=[*headers.items(), *(("X-Twilio-Signature", s) for s in signatures)],
        )

    assert response.status_code == expected, response.text
    assert stored_rows(default_server, sid) == ((1, 1) if good_first else (0, 0))


@pytest.mark.parametrize(
    "removed",
    [
        pytest.param(("MessageSid", "SmsSid"), id="no-sid"),
        pytest.param(("MessageStatus", "SmsStatus"), id="no-status"),
        pytest.param(("MessageSid", "SmsSid", "MessageStatus", "SmsStatus"), id="neither"),
    ],
)
def test_signed_callback_missing_a_field_is_400_and_nothing_stored(
    default_server: LiveServer, removed: tuple[str, ...]
) -> None:
    sid = new_sid()
    params = {k: v for k, v in status_params(sid, "sent").items() if k not in removed}
    before = row_counts(default_server)
    with default_server.client() as client:
        response = post_signed(client, default_server, params)

    assert_error(response, 400, "missing_field")
    assert row_counts(default_server) == before


def test_signed_callback_with_blank_sid_is_400(default_server: LiveServer) -> None:
    before = row_counts(default_server)
    with default_server.client() as client:
        response = post_signed(
            client, default_server, status_params("", "sent", SmsSid="", MessageSid="")
        )

    assert_error(response, 400, "missing_field")
    assert row_counts(default_server) == before


def _tampered_json_body(url: str, payload: dict[str, Any]) -> tuple[str, Request]:
    signed_url, (body, headers) = json_request(url, payload)
    return signed_url, (body.replace(b'"sent"', b'"delivered"'), headers)


def _hash_of_other_body(url: str, payload: dict[str, Any]) -> tuple[str, Request]:
    """Attacker's body, with its own (correct) hash, under the genuine URL's signature."""
    _, (_, headers) = json_request(url, payload)
    forged = {**payload, "MessageStatus": "delivered"}
    forged_url, (body, _) = json_request(url, forged)
    return forged_url, (body, headers)


def _hash_dropped_from_url(url: str, payload: dict[str, Any]) -> tuple[str, Request]:
    _, request = json_request(url, payload)
    return url, request


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(_tampered_json_body, id="tampered-body"),
        pytest.param(_hash_of_other_body, id="hash-of-other-body"),
        pytest.param(_hash_dropped_from_url, id="no-bodySHA256"),
    ],
)
def test_json_callback_is_refused_when_body_or_hash_is_tampered(
    default_server: LiveServer, forge: Callable[[str, dict[str, Any]], tuple[str, Request]]
) -> None:
    sid = new_sid()
    payload = {"MessageSid": sid, "MessageStatus": "sent", "AccountSid": TWILIO_ACCOUNT}
    before = row_counts(default_server)
    url, (body, headers) = forge(default_server.callback_url, payload)
    with default_server.client() as client:
        response = client.post(url, content=body, headers=headers)

    assert_error(response, 403, "signature_invalid")
    assert row_counts(default_server) == before


def test_signed_json_that_is_not_an_object_is_400(default_server: LiveServer) -> None:
    validator = RequestValidator(TWILIO_TOKEN)
    text = json.dumps(["MessageSid", "MessageStatus"])
    url = f"{default_server.callback_url}?bodySHA256={validator.compute_hash(text)}"
    before = row_counts(default_server)
    with default_server.client() as client:
        response = client.post(
            url,
            content=text.encode(),
            headers={
                "Content-Type": "application/json",
                "X-Twilio-Signature": validator.compute_signature(url, {}),
            },
        )

    assert_error(response, 400, "invalid_body")
    assert row_counts(default_server) == before


def test_signed_json_spelling_a_lone_surrogate_is_400_not_a_crash(
    default_server: LiveServer,
) -> None:
    """JSON escapes can spell text no database stores; an authentic body is still malformed."""
    sid = new_sid()
    url, (body, headers) = json_request(
        default_server.callback_url, {"MessageSid": sid + "\ud800", "MessageStatus": "sent"}
    )
    before = row_counts(default_server)
    with default_server.client() as client:
        response = client.post(url, content=body, headers=headers)
    assert_error(response, 400, "invalid_body")
    assert row_counts(default_server) == before


def test_a_form_with_thousands_of_fields_is_refused_before_it_is_signed(
    default_server: LiveServer,
) -> None:
    """Parsing and signing an unauthenticated body costs the event loop; it is capped."""
    params = [(f"F{i}", "x") for i in range(5000)]
    before = row_counts(default_server)
    with default_server.client() as client:
        response = post_signed(client, default_server, params)
    assert_error(response, 403, "signature_invalid")
    assert row_counts(default_server) == before


def test_a_callback_the_database_cannot_take_is_503_and_not_stored(
    start_server: Callable[..., LiveServer],
) -> None:
    """No 2xx without a commit: a locked database answers 503 so Twilio retries."""
    server = start_server(db_busy_timeout_ms=50)
    sid = new_sid()
    blocker = sqlite3.connect(server.settings.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with server.client() as client:
            refused = post_status(client, server.callback_url, sid, "delivered")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert_error(refused, 503, "store_unavailable")
    assert refused.headers["retry-after"] == "5"
    assert stored_rows(server, sid) == (0, 0)
    with server.client() as client:
        retried = post_status(client, server.callback_url, sid, "delivered")
    assert retried.status_code == 204
    assert stored_rows(server, sid) == (1, 1)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_deeply_nested_json_body_is_an_answer_not_a_crash(
    default_server: LiveServer, signed: bool
) -> None:
    """The JSON body is read (for AccountSid) before the signature is checked."""
    validator = RequestValidator(TWILIO_TOKEN if signed else "not-the-auth-token")
    text = "[" * 60_000  # far past the recursion limit, under RECEIVER_MAX_BODY
    url = f"{default_server.callback_url}?bodySHA256={validator.compute_hash(text)}"
    with default_server.client() as client:
        response = client.post(
            url,
            content=text.encode(),
            headers={
                "Content-Type": "application/json",
                "X-Twilio-Signature": validator.compute_signature(url, {}),
            },
        )

    if signed:
        assert_error(response, 400, "invalid_body")
    else:
        assert_error(response, 403, "signature_invalid")


@pytest.mark.parametrize(
    ("overrides", "headers"),
    [
        pytest.param({}, {"Host": "[::1"}, id="host"),
        pytest.param(
            {"trust_forwarded": True}, {"X-Forwarded-Host": "[::1"}, id="x-forwarded-host"
        ),
    ],
)
def test_malformed_host_is_refused_not_a_crash(
    shared_server: Callable[..., LiveServer], overrides: dict[str, Any], headers: dict[str, str]
) -> None:
    server = shared_server(**overrides)
    with server.client() as client:
        response = post_signed(client, server, status_params(new_sid(), "sent"), headers=headers)

    assert_error(response, 403, "signature_invalid")


def test_oversized_body_is_413_and_nothing_stored(default_server: LiveServer) -> None:
    """An unauthenticated caller must not make the server buffer an unbounded body."""
    sid = new_sid()
    params = status_params(sid, "sent", Padding="x" * (1024 * 1024))
    before = row_counts(default_server)
    with default_server.client() as client:
        response = post_signed(client, default_server, params)

    assert_error(response, 413, "body_too_large")
    assert row_counts(default_server) == before


def test_declared_oversized_body_is_refused_before_it_is_sent(
    default_server: LiveServer,
) -> None:
    """A Content-Length over RECEIVER_MAX_BODY gets 413 while the body is still unsent."""
    head = send_head_only(default_server.base_url, CALLBACK_PATH, 50_000_000, b"MessageSid=SM1")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"body_too_large" in head


def test_chunked_oversized_body_is_refused(default_server: LiveServer) -> None:
    """Without a Content-Length, the limit holds at the chunk that crosses it."""

    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"x" * 1024

    with default_server.client() as client:
        response = client.post(
            default_server.callback_url,
            content=chunks(),
            headers={"X-Twilio-Signature": "irrelevant"},
        )
    assert_error(response, 413, "body_too_large")


# --- which URL is signed --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "signed_base"),
    [
        pytest.param("https://sms.example.com", "https://sms.example.com:443", id="add-443"),
        pytest.param("https://sms.example.com:443", "https://sms.example.com", id="drop-443"),
        pytest.param("http://sms.example.com", "http://sms.example.com:80", id="add-80"),
        pytest.param("http://sms.example.com:80", "http://sms.example.com", id="drop-80"),
    ],
)
def test_default_port_is_optional_in_the_signed_url(
    shared_server: Callable[..., LiveServer], public_url: str, signed_base: str
) -> None:
    """Twilio signs with or without the default port; both forms are accepted."""
    server = shared_server(public_url=public_url)
    sid = new_sid()
    with server.client() as client:
        response = post_signed(
            client, server, status_params(sid, "sent"), signed_url=signed_base + CALLBACK_PATH
        )

    assert response.status_code == 204, response.text
    assert stored_rows(server, sid) == (1, 1)


def test_other_port_in_the_signed_url_is_refused(shared_server: Callable[..., LiveServer]) -> None:
    server = shared_server(public_url="https://sms.example.com")
    with server.client() as client:
        response = post_signed(
            client,
            server,
            status_params(new_sid(), "sent"),
            signed_url="https://sms.example.com:8443" + CALLBACK_PATH,
        )

    assert_error(response, 403, "signature_invalid")


@pytest.mark.parametrize(
    "public_url",
    ["https://sms.example.com", "https://example.com/receiver", "http://10.0.0.7:8080"],
)
def test_public_url_is_the_signed_url(
    shared_server: Callable[..., LiveServer], public_url: str
) -> None:
    """Behind a proxy the signature covers RECEIVER_PUBLIC_URL plus the path (and prefix)."""
    server = shared_server(public_url=public_url)
    sid = new_sid()
    with server.client() as client:
        response = post_signed(
            client, server, status_params(sid, "sent"), signed_url=public_url + CALLBACK_PATH
        )
        assert response.status_code == 204, response.text
        assert message(client, sid)["status"] == "sent"


@pytest.mark.parametrize("public_url", ["https://sms.example.com", "https://example.com/receiver"])
def test_loopback_url_is_refused_when_public_url_is_set(
    shared_server: Callable[..., LiveServer], public_url: str
) -> None:
    server = shared_server(public_url=public_url)
    sid = new_sid()
    before = row_counts(server)
    with server.client() as client:
        response = post_signed(client, server, status_params(sid, "sent"))

    assert_error(response, 403, "signature_invalid")
    assert row_counts(server) == before


@pytest.mark.parametrize(
    ("forwarded", "signed_base"),
    [
        pytest.param(
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.com"},
            "https://sms.example.com",
            id="proto-and-host",
        ),
        pytest.param(
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "sms.example.com",
                "X-Forwarded-Port": "8443",
            },
            "https://sms.example.com:8443",
            id="with-port",
        ),
        pytest.param(
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.com:8443"},
            "https://sms.example.com:8443",
            id="port-in-host",
        ),
        pytest.param(
            {"X-Forwarded-Proto": "https", "X-Forwarded-Port": "8443", "Host": "sms.example.com"},
            "https://sms.example.com:8443",
            id="port-with-host-header",
        ),
        pytest.param(
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "sms.example.com",
                "X-Forwarded-Port": "443",
            },
            "https://sms.example.com",
            id="default-port",
        ),
        pytest.param(
            {
                "X-Forwarded-Proto": "https, http",
                "X-Forwarded-Host": "sms.example.com, lb.internal",
            },
            "https://sms.example.com",
            id="first-of-a-chain",
        ),
    ],
)
def test_forwarded_headers_rebuild_the_signed_url_when_trusted(
    shared_server: Callable[..., LiveServer], forwarded: dict[str, str], signed_base: str
) -> None:
    server = shared_server(trust_forwarded=True)
    sid = new_sid()
    with server.client() as client:
        response = post_signed(
            client,
            server,
            status_params(sid, "sent"),
            signed_url=signed_base + CALLBACK_PATH,
            headers=forwarded,
        )

    assert response.status_code == 204, response.text
    assert stored_rows(server, sid) == (1, 1)


def test_loopback_url_is_refused_when_forwarded_headers_are_trusted(
    shared_server: Callable[..., LiveServer],
) -> None:
    server = shared_server(trust_forwarded=True)
    with server.client() as client:
        response = post_signed(
            client,
            server,
            status_params(new_sid(), "sent"),
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.com"},
        )

    assert_error(response, 403, "signature_invalid")


@pytest.mark.parametrize(
    ("signed_over", "expected"),
    [
        pytest.param("forwarded", 403, id="forwarded-url"),
        pytest.param("loopback", 204, id="loopback-url"),
    ],
)
def test_forwarded_headers_are_ignored_unless_trusted(
    default_server: LiveServer, signed_over: str, expected: int
) -> None:
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "sms.example.com",
        "X-Forwarded-Port": "443",
    }
    signed_url = "https://sms.example.com" + CALLBACK_PATH if signed_over == "forwarded" else None
    with default_server.client() as client:
        response = post_signed(
            client,
            default_server,
            status_params(new_sid(), "sent"),
            signed_url=signed_url,
            headers=forwarded,
        )

    assert response.status_code == expected, response.text


_URL_SETUPS = [
    pytest.param({}, None, {}, id="loopback"),
    pytest.param(
        {"public_url": "https://example.com/receiver"},
        "https://example.com/receiver",
        {},
        id="public-url",
    ),
    pytest.param(
        {"trust_forwarded": True},
        "https://sms.example.com",
        {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.com"},
        id="forwarded",
    ),
]


@pytest.mark.parametrize(("overrides", "base", "forwarded"), _URL_SETUPS)
def test_query_string_is_kept_in_the_signed_url(
    shared_server: Callable[..., LiveServer],
    overrides: dict[str, Any],
    base: str | None,
    forwarded: dict[str, str],
) -> None:
    server = shared_server(**overrides)
    sid = new_sid()
    signed_url = base + CALLBACK_PATH if base else None
    with server.client() as client:
        response = post_signed(
            client,
            server,
            status_params(sid, "sent"),
            signed_url=signed_url,
            query_string="tenant=acme&ref=a%2Fb",
            headers=forwarded,
        )

    assert response.status_code == 204, response.text
    assert stored_rows(server, sid) == (1, 1)


@pytest.mark.parametrize(("overrides", "base", "forwarded"), _URL_SETUPS)
def test_signature_without_the_query_string_is_refused(
    shared_server: Callable[..., LiveServer],
    overrides: dict[str, Any],
    base: str | None,
    forwarded: dict[str, str],
) -> None:
    server = shared_server(**overrides)
    signed_url = (base or server.base_url) + CALLBACK_PATH
    body, headers = twilio_form(signed_url, status_params(new_sid(), "sent"))
    with server.client() as client:
        response = client.post(
            server.callback_url + "?tenant=acme", content=body, headers={**headers, **forwarded}
        )

    assert_error(response, 403, "signature_invalid")


# --- auth tokens --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "token", "expected"),
    [
        pytest.param(AC1, "tok1", 204, id="AC1-own-token"),
        pytest.param(AC2, "tok2", 204, id="AC2-own-token"),
        pytest.param(AC1, "tok2", 403, id="AC1-with-AC2-token"),
        pytest.param(AC2, "tok1", 403, id="AC2-with-AC1-token"),
        pytest.param(AC1, "main-token", 403, id="AC1-with-main-token"),
        pytest.param(AC3, "main-token", 204, id="unlisted-with-main-token"),
        pytest.param(AC3, "tok1", 403, id="unlisted-with-AC1-token"),
    ],
)
def test_each_subaccount_verifies_with_its_own_token(
    shared_server: Callable[..., LiveServer], account: str, token: str, expected: int
) -> None:
    server = shared_server(twilio_accounts=ACCOUNTS, twilio_auth_token="main-token")
    sid = new_sid()
    with server.client() as client:
        response = post_status(
            client, server.callback_url, sid, "sent", token=token, AccountSid=account
        )

    assert response.status_code == expected, response.text
    assert stored_rows(server, sid) == ((1, 1) if expected == 204 else (0, 0))


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        pytest.param("new-token", 204, id="new"),
        pytest.param("old-token", 204, id="old"),
        pytest.param("another-token", 403, id="neither"),
    ],
)
def test_secondary_token_is_accepted_during_rotation(
    shared_server: Callable[..., LiveServer], token: str, expected: int
) -> None:
    server = shared_server(twilio_auth_token="new-token", twilio_auth_token_secondary="old-token")
    with server.client() as client:
        response = post_status(client, server.callback_url, new_sid(), "sent", token=token)

    assert response.status_code == expected, response.text


def test_callbacks_are_refused_when_no_token_is_configured(
    shared_server: Callable[..., LiveServer],
) -> None:
    server = shared_server(twilio_auth_token=None)
    with server.client() as client:
        response = post_status(client, server.callback_url, new_sid(), "sent")

    assert_error(response, 403, "provider_not_configured")
    assert row_counts(server) == (0, 0)


# --- what each callback does ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("twilio_status", "canonical"),
    [
        ("accepted", "queued"),
        ("scheduled", "queued"),
        ("queued", "queued"),
        ("sending", "sending"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "delivered"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("canceled", "canceled"),
        ("Delivered", "delivered"),
    ],
)
def test_twilio_status_maps_to_canonical_status(
    default_server: LiveServer, twilio_status: str, canonical: str
) -> None:
    sid = new_sid()
    with default_server.client() as client:
        response = post_status(client, default_server.callback_url, sid, twilio_status)
        stored = message(client, sid)

    assert response.status_code == 204
    assert stored["status"] == canonical
    assert stored["provider_status"] == twilio_status.lower()


@pytest.mark.parametrize(
    ("statuses", "outcome", "final_status"),
    [
        pytest.param(["queued", "sent"], "applied", "sent", id="applied"),
        pytest.param(["sent", "sent"], "duplicate", "sent", id="duplicate"),
        pytest.param(["delivered", "read"], "duplicate", "delivered", id="read-after-delivered"),
        pytest.param(["delivered", "sent"], "regression", "delivered", id="late-sent"),
        pytest.param(["undelivered", "failed"], "conflict", "undelivered", id="conflict"),
        pytest.param(
            ["undelivered", "delivered"], "applied", "delivered", id="positive-evidence-wins"
        ),
        pytest.param(["sent", "partially_delivered"], "unmapped", "sent", id="unmapped"),
    ],
)
def test_callback_outcome_is_recorded(
    default_server: LiveServer, statuses: list[str], outcome: str, final_status: str
) -> None:
    """Every engine outcome through HTTP: each callback is 204 and kept in the history."""
    sid = new_sid()
    with default_server.client() as client:
        codes = [
            post_status(client, default_server.callback_url, sid, s).status_code for s in statuses
        ]
        stored = message(client, sid)
        events = history(client, sid)

    assert codes == [204] * len(statuses)
    assert stored["status"] == final_status
    assert [e["provider_status"] for e in events] == statuses
    assert events[-1]["outcome"] == outcome
    assert events[-1]["previous_status"] == events[0]["status"]


def test_idempotency_token_retry_is_a_duplicate(default_server: LiveServer) -> None:
    """A retried callback (same I-Twilio-Idempotency-Token) is a duplicate, not a regression."""
    sid = new_sid()
    url = default_server.callback_url
    with default_server.client() as client:
        for status, token in (("sent", "idem-1"), ("delivered", "idem-2"), ("sent", "idem-1")):
            body, headers = twilio_form(url, status_params(sid, status))
            response = client.post(
                url, content=body, headers={**headers, "I-Twilio-Idempotency-Token": token}
            )
            assert response.status_code == 204
        events = history(client, sid)
        stored = message(client, sid)

    assert [e["outcome"] for e in events] == ["applied", "applied", "duplicate"]
    assert stored["status"] == "delivered"


def test_unknown_message_is_created_from_its_first_callback(default_server: LiveServer) -> None:
    """A DLR can beat the app's registration: it creates the message, and registering later
    keeps the status."""
    sid = new_sid()
    with default_server.client() as client:
        response = post_status(client, default_server.callback_url, sid, "delivered")
        early = message(client, sid)
        registered = client.post("/v1/messages", json={"provider": "twilio", "message_id": sid})
        late = message(client, sid)

    assert response.status_code == 204
    assert (early["registered"], early["status"]) == (False, "delivered")
    assert registered.status_code == 200, registered.text
    assert (late["registered"], late["status"]) == (True, "delivered")


def test_unknown_message_is_held_until_registered_in_hold_mode(
    shared_server: Callable[..., LiveServer],
) -> None:
    server = shared_server(unknown_messages="hold")
    sid = new_sid()
    with server.client() as client:
        response = post_status(client, server.callback_url, sid, "delivered")
        before_registration = client.get(f"/v1/messages/{sid}")
        held = query(server, "SELECT outcome FROM events WHERE message_id = ?", sid)
        registered = client.post("/v1/messages", json={"provider": "twilio", "message_id": sid})
        stored = message(client, sid)
        (event,) = history(client, sid)

    assert response.status_code == 204
    assert before_registration.status_code == 404
    assert held == [("pending_unknown",)]
    assert registered.status_code == 201, registered.text
    assert registered.json()["pending_applied"] == 1
    assert (stored["registered"], stored["status"]) == (True, "delivered")
    assert event["outcome"] == "applied"


# --- concurrency ----------------------------------------------------------------------------


async def _send_all(url: str, requests: Sequence[Request], concurrency: int) -> list[int]:
    """POST every request with at most `concurrency` in flight; status codes in order."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def send(body: bytes, headers: dict[str, str]) -> int:
            async with gate:
                return (await client.post(url, content=body, headers=headers)).status_code

        return await asyncio.wait_for(
            asyncio.gather(*(send(body, headers) for body, headers in requests)), timeout=60
        )


def test_same_callback_sent_20_times_at_once_is_applied_once(server: LiveServer) -> None:
    sid = new_sid()
    request = twilio_form(server.callback_url, status_params(sid, "delivered"))

    codes = asyncio.run(_send_all(server.callback_url, [request] * 20, concurrency=20))

    assert codes == [204] * 20
    outcomes = Counter(row[0] for row in query(server, "SELECT outcome FROM events"))
    assert outcomes == {"applied": 1, "duplicate": 19}
    assert query(server, "SELECT message_id, status FROM messages") == [(sid, "delivered")]


def test_shuffled_concurrent_streams_end_in_their_terminal_status(server: LiveServer) -> None:
    """50 messages, each queued/sending/sent/terminal with random duplicates, all shuffled
    together and sent concurrently: each ends in its terminal (highest-ranked) status."""
    rng = random.Random(20261125)
    terminal: dict[str, str] = {}
    callbacks: list[tuple[str, str]] = []
    for _ in range(50):
        sid = new_sid()
        terminal[sid] = rng.choice(["delivered", "undelivered", "failed"])
        for status in ("queued", "sending", "sent", terminal[sid]):
            callbacks += [(sid, status)] * rng.choice([1, 1, 1, 2, 3])
    rng.shuffle(callbacks)
    requests = [
        twilio_form(server.callback_url, status_params(sid, status)) for sid, status in callbacks
    ]

    codes = asyncio.run(_send_all(server.callback_url, requests, concurrency=16))

    assert codes == [204] * len(callbacks)
    stored = dict(query(server, "SELECT message_id, status FROM messages"))
    assert stored == terminal
    events = query(server, "SELECT message_id, status, outcome FROM events")
    assert len(events) == len(callbacks)
    terminal_applied = Counter(
        sid for sid, status, outcome in events if outcome == "applied" and status == terminal[sid]
    )
    assert terminal_applied == dict.fromkeys(terminal, 1)
    assert {outcome for _, _, outcome in events} <= {"applied", "duplicate", "regression"}


# --- logging --------------------------------------------------------------------------------


def test_each_callback_logs_one_line_with_its_outcome(default_server: LiveServer) -> None:
    """The server thread logs through the same structlog config, so capture_logs sees it."""
    sid = new_sid()
    statuses = ["sent", "delivered", "sent", "partially_delivered"]
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs,
        default_server.client() as client,
    ):
        for status in statuses:
            assert post_status(client, default_server.callback_url, sid, status).status_code == 204

    lines = [e for e in logs if e["event"] == "callback"]
    assert [(e["event"], e["log_level"]) for e in lines] == [
        ("callback", "info"),
        ("callback", "info"),
        ("callback", "info"),
        ("callback", "warning"),
    ]
    assert [(e["old_status"], e["new_status"], e["outcome"]) for e in lines] == [
        (None, "sent", "applied"),
        ("sent", "delivered", "applied"),
        ("delivered", "delivered", "regression"),
        ("delivered", "delivered", "unmapped"),
    ]
    for line in lines:
        assert line["provider"] == "twilio"
        assert line["message_id"] == sid
        assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert [e["provider_status"] for e in lines] == statuses


def test_rejected_callback_logs_callback_rejected(default_server: LiveServer) -> None:
    sid = new_sid()
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs,
        default_server.client() as client,
    ):
        response = post_status(client, default_server.callback_url, sid, "sent", token="wrong")

    assert response.status_code == 403
    (line,) = [e for e in logs if e["event"].startswith("callback")]
    assert line["event"] == "callback_rejected"
    assert (line["provider"], line["status"], line["error_code"]) == (
        "twilio",
        403,
        "signature_invalid",
    )
    assert line["url"] == default_server.callback_url
    assert TWILIO_TOKEN not in repr(logs)
