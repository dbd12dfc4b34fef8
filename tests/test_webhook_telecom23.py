"""End-to-end: 23 Telecom delivery reports to a signed callback URL, through the real server.

The URL comes from GET /v1/callback-url, as a user would get it; results are read back through
the query API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import structlog
from support import (
    SECRET_KEY,
    LiveServer,
    assert_error,
    callback_url,
    count_events,
    events,
    make_settings,
    message,
)

from receiver.providers.telecom23 import STATUS_MAP

OTHER_KEY = "another-secret-key-0123456789abcdef"


def new_id() -> str:
    """A message id in 23 Telecom's shape: api_<account>_<ns timestamp>_<16 hex>."""
    return f"api_42_1743667200123456789_{uuid.uuid4().hex[:16]}"


def dlr(message_id: str, status: str = "DELIVRD", **extra: Any) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "status": status,
        "status_code": "000" if status == "DELIVRD" else "011",
        "dnis": "+14155551234",
        "sender_id": "MyApp",
        "done_date": "2026-02-13T10:30:04Z",
        **extra,
    }


@pytest.fixture(scope="module")
def t23(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the tests that need no special settings (each uses fresh ids)."""
    server = LiveServer(make_settings(tmp_path_factory.mktemp("t23"), secret_key=SECRET_KEY))
    yield server.start()
    server.stop()


def test_a_json_report_to_the_signed_url_is_applied(t23: LiveServer) -> None:
    url, mid = callback_url(t23, "telecom23", label="main"), new_id()
    response = httpx.post(url, json=dlr(mid))
    assert response.status_code == 204, response.text
    got = message(t23, mid)
    assert got["status"] == "delivered" and got["to"] == "+14155551234"
    assert got["account"] == "main"  # the URL's label
    [event] = events(t23, mid)
    assert event["provider_status"] == "DELIVRD" and event["outcome"] == "applied"
    assert event["event_time"] == "2026-02-13T10:30:04.000Z"
    assert event["error_code"] is None  # 000 is success


def test_a_form_report_with_the_api_field_names_is_applied(t23: LiveServer) -> None:
    url, mid = callback_url(t23, "telecom23"), new_id()
    form = {
        "client_message_id": mid,
        "status": "UNDELIV",
        "status_code": "011",
        "recipient": "+447911123456",
        "delivered_at": "2602131030",  # SMPP done date
    }
    response = httpx.post(
        url,
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 204, response.text
    got = message(t23, mid)
    assert (got["status"], got["to"]) == ("undelivered", "+447911123456")
    [event] = events(t23, mid)
    assert event["error_code"] == "011" and event["event_time"] == "2026-02-13T10:30:00.000Z"


def test_a_batch_of_reports_applies_each_and_keeps_each_record(t23: LiveServer) -> None:
    url = callback_url(t23, "telecom23")
    ids = [new_id() for _ in range(3)]
    batch = [dlr(ids[0]), dlr(ids[1], "EXPIRED"), dlr(ids[2], "REJECTD")]
    assert httpx.post(url, json=batch).status_code == 204
    assert [message(t23, m)["status"] for m in ids] == ["delivered", "expired", "rejected"]
    [event] = events(t23, ids[1])
    assert json.loads(event["body"])["message_id"] == ids[1]  # its own record, not the batch


def test_reordered_duplicated_reports_end_final_and_keep_history(t23: LiveServer) -> None:
    url, mid = callback_url(t23, "telecom23"), new_id()
    for status in ("DELIVRD", "ENROUTE", "DELIVRD", "ACCEPTD"):
        assert httpx.post(url, json=dlr(mid, status)).status_code == 204
    assert message(t23, mid)["status"] == "delivered"
    outcomes = [e["outcome"] for e in events(t23, mid)]
    assert outcomes == ["applied", "regression", "duplicate", "regression"]


@pytest.mark.parametrize(("raw", "canonical"), sorted(STATUS_MAP.items()))
def test_every_status_maps_as_documented(t23: LiveServer, raw: str, canonical: str) -> None:
    url, mid = callback_url(t23, "telecom23"), new_id()
    assert httpx.post(url, json=dlr(mid, raw)).status_code == 204
    assert message(t23, mid)["status"] == canonical


def test_status_case_does_not_matter_and_an_unknown_status_is_kept_unmapped(
    t23: LiveServer,
) -> None:
    url, a, b = callback_url(t23, "telecom23"), new_id(), new_id()
    assert httpx.post(url, json=dlr(a, "delivrd")).status_code == 204
    assert message(t23, a)["status"] == "delivered"
    assert httpx.post(url, json=dlr(b, "BOUNCED")).status_code == 204
    [event] = events(t23, b)
    assert (event["outcome"], event["provider_status"]) == ("unmapped", "BOUNCED")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda url: url[:-2] + ("xx" if not url.endswith("xx") else "yy"),
        lambda url: url.rsplit("/", 1)[0] + "/",
        lambda url: url.rsplit("/", 1)[0] + "/" + "a" * 2000,
    ],
)
def test_a_bad_token_is_403_and_nothing_is_stored(
    t23: LiveServer, mangle: Callable[[str], str]
) -> None:
    url, before = mangle(callback_url(t23, "telecom23")), count_events(t23)
    response = httpx.post(url, json=dlr(new_id()))
    assert response.status_code in (403, 404)  # an empty token does not match the route
    if response.status_code == 403:
        assert_error(response, 403, "token_invalid")
    assert count_events(t23) == before


def test_a_mesms_url_is_refused_on_the_telecom23_path(t23: LiveServer) -> None:
    token, before = callback_url(t23, "mesms").rsplit("/", 1)[1], count_events(t23)
    response = httpx.post(f"{t23.base_url}/v1/webhook/telecom23/dlr/{token}", json=dlr(new_id()))
    assert_error(response, 403, "token_wrong_provider")
    assert count_events(t23) == before


def test_rotating_the_key_keeps_old_urls_until_the_old_key_is_removed(
    start_server: Callable[..., LiveServer],
) -> None:
    old_url = callback_url(start_server(secret_key=SECRET_KEY), "telecom23")
    path = old_url.split("/v1/", 1)[1]

    rotating = start_server(secret_key=OTHER_KEY, secret_key_fallbacks=(SECRET_KEY,))
    assert httpx.post(f"{rotating.base_url}/v1/{path}", json=dlr(new_id())).status_code == 204
    new_url = callback_url(rotating, "telecom23")
    assert new_url != old_url

    rotated = start_server(secret_key=OTHER_KEY)
    response = httpx.post(f"{rotated.base_url}/v1/{path}", json=dlr(new_id()))
    assert_error(response, 403, "token_invalid")  # revoked
    new_path, mid = new_url.split("/v1/", 1)[1], new_id()
    assert httpx.post(f"{rotated.base_url}/v1/{new_path}", json=dlr(mid)).status_code == 204
    assert message(rotated, mid)["status"] == "delivered"


def test_without_a_secret_key_callbacks_are_403_and_no_url_is_issued(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server()
    with server.client() as client:
        assert_error(
            client.get("/v1/callback-url", params={"provider": "telecom23"}),
            409,
            "secret_key_unset",
        )
    response = httpx.post(f"{server.base_url}/v1/webhook/telecom23/dlr/whatever", json={})
    assert_error(response, 403, "provider_not_configured")


@pytest.mark.parametrize(
    ("allowed", "forwarded_for", "trust", "expected"),
    [
        ("127.0.0.0/8", None, False, 204),
        ("203.0.113.0/24", None, False, 403),
        # Behind a trusted proxy the provider's address is the last X-Forwarded-For hop.
        ("203.0.113.0/24", "198.51.100.1, 203.0.113.7", True, 204),
        ("203.0.113.0/24", "203.0.113.7, 198.51.100.1", True, 403),
        # Not trusted: a forged header changes nothing, the peer address decides.
        ("203.0.113.0/24", "203.0.113.7", False, 403),
    ],
)
def test_the_ip_allow_list_honours_trusted_forwarding(
    start_server: Callable[..., LiveServer],
    allowed: str,
    forwarded_for: str | None,
    trust: bool,
    expected: int,
) -> None:
    server = start_server(
        secret_key=SECRET_KEY,
        trust_forwarded=trust,
        provider_env={"TELECOM23_ALLOWED_IPS": allowed},
    )
    url = callback_url(server, "telecom23")
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    if trust:
        headers["X-Forwarded-Host"] = server.base_url.removeprefix("http://")
    response = httpx.post(url, json=dlr(new_id()), headers=headers)
    if expected == 403:
        assert_error(response, 403, "ip_not_allowed")
        assert count_events(server) == 0
    else:
        assert response.status_code == expected, response.text


def test_a_gateway_hmac_is_required_when_its_secret_is_set(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(
        secret_key=SECRET_KEY, provider_env={"TELECOM23_WEBHOOK_SECRET": "old-gw,new-gw"}
    )
    url = callback_url(server, "telecom23")
    body = json.dumps(dlr(new_id())).encode()
    json_type = {"Content-Type": "application/json"}
    assert_error(httpx.post(url, content=body, headers=json_type), 403, "signature_missing")
    wrong = hmac.new(b"other", body, hashlib.sha256).hexdigest()
    response = httpx.post(
        url, content=body, headers={**json_type, "X-Telecom23-Signature": f"sha256={wrong}"}
    )
    assert_error(response, 403, "signature_invalid")
    assert count_events(server) == 0
    right = hmac.new(b"new-gw", body, hashlib.sha256).hexdigest()
    response = httpx.post(
        url, content=body, headers={**json_type, "X-Telecom23-Signature": f"sha256={right}"}
    )
    assert response.status_code == 204, response.text


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"{not json", "application/json", "invalid_body"),
        (b"\xff\xfe", "application/json", "invalid_body"),
        (b"[]", "application/json", "invalid_body"),
        (b"[1, 2]", "application/json", "invalid_body"),
        (b'{"status": "DELIVRD"}', "application/json", "missing_field"),
        (b'{"message_id": "api_1"}', "application/json", "missing_field"),
        (b'{"message_id": ["x"], "status": "DELIVRD"}', "application/json", "invalid_field"),
        (b'{"message_id": "a\\u0000b", "status": "DELIVRD"}', "application/json", "invalid_field"),
        (b'{"message_id": "\\ud800", "status": "DELIVRD"}', "application/json", "invalid_field"),
        (json.dumps([dlr("x")] * 101).encode(), "application/json", "too_many_records"),
        (b"", "application/x-www-form-urlencoded", "invalid_body"),
        (b"&".join(b"f%d=1" % i for i in range(300)), "text/plain", "invalid_body"),
    ],
)
def test_a_malformed_authentic_report_is_400_and_nothing_is_stored(
    t23: LiveServer, body: bytes, content_type: str, code: str
) -> None:
    url, before = callback_url(t23, "telecom23"), count_events(t23)
    response = httpx.post(url, content=body, headers={"Content-Type": content_type})
    assert_error(response, 400, code)
    assert count_events(t23) == before


# --- found in review: inputs that once gave a 500 or a wrong record ---------------------------


def test_a_stray_lone_surrogate_in_an_unused_field_of_a_batch_is_stored_safely(
    t23: LiveServer,
) -> None:
    a, b = new_id(), new_id()
    # json.dumps would escape the backslash; the JSON must spell the surrogate itself.
    body = json.dumps([dlr(a, x="SURROGATE"), dlr(b)]).replace("SURROGATE", "\\ud800").encode()
    response = httpx.post(
        callback_url(t23, "telecom23"), content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 204, response.text
    assert message(t23, a)["status"] == message(t23, b)["status"] == "delivered"


@pytest.mark.parametrize("done_date", ["1²²²²²²²²²", "²⁶⁰²¹³¹⁰³⁰", "not a date"])
def test_an_unreadable_done_date_is_left_out_not_a_500(t23: LiveServer, done_date: str) -> None:
    mid = new_id()
    assert (
        httpx.post(callback_url(t23, "telecom23"), json=dlr(mid, done_date=done_date)).status_code
        == 204
    )
    [event] = events(t23, mid)
    assert event["event_time"] is None and done_date in json.loads(event["body"])["done_date"]


def test_a_numeric_success_code_is_not_an_error_and_odd_optional_fields_are_dropped(
    t23: LiveServer,
) -> None:
    mid = new_id()
    report = dlr(mid, status_code=0, sender_id="My\nApp", dnis=["+1"])
    assert httpx.post(callback_url(t23, "telecom23"), json=report).status_code == 204
    got = message(t23, mid)
    assert (got["status"], got["error_code"], got["from"], got["to"]) == (
        "delivered",
        None,
        "My App",
        None,
    )


@pytest.mark.parametrize("body", [b'{"message_id": NaN, "status": "DELIVRD"}', b"[Infinity]"])
def test_nan_and_infinity_are_not_json(t23: LiveServer, body: bytes) -> None:
    response = httpx.post(
        callback_url(t23, "telecom23"), content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_body")


def test_a_json_body_with_a_byte_order_mark_and_no_content_type_is_read_as_json(
    t23: LiveServer,
) -> None:
    mid = new_id()
    body = "\ufeff".encode() + json.dumps(dlr(mid)).encode()
    assert httpx.post(callback_url(t23, "telecom23"), content=body).status_code == 204
    assert message(t23, mid)["status"] == "delivered"


def test_a_forged_first_forwarded_for_line_does_not_pass_the_allow_list(
    start_server: Callable[..., LiveServer],
) -> None:
    """A proxy that adds its hop as a line of its own leaves the client's forged line first."""
    server = start_server(
        secret_key=SECRET_KEY,
        trust_forwarded=True,
        provider_env={"TELECOM23_ALLOWED_IPS": "203.0.113.0/24"},
    )
    headers = [
        ("X-Forwarded-For", "203.0.113.5"),  # forged by the client
        ("X-Forwarded-For", "198.51.100.9"),  # added by the proxy: the real caller
        ("X-Forwarded-Host", server.base_url.removeprefix("http://")),
    ]
    response = httpx.post(callback_url(server, "telecom23"), json=dlr(new_id()), headers=headers)
    assert_error(response, 403, "ip_not_allowed")
    assert count_events(server) == 0


def test_a_rejected_callback_is_logged_without_the_urls_secret(t23: LiveServer) -> None:
    url = callback_url(t23, "telecom23")
    token = url.rsplit("/", 1)[1]
    with structlog.testing.capture_logs() as logs:
        response = httpx.post(url, content=b"{broken", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    [rejected] = [e for e in logs if e["event"] == "callback_rejected"]
    claims, signature = token.rsplit(".", 1)
    assert rejected["url"].endswith(f"/dlr/{claims}.<redacted>")
    assert signature not in str(logs)


def test_a_json_report_labelled_as_a_form_is_read_as_json(t23: LiveServer) -> None:
    """`curl -d` labels every body a form; no form starts with "{"."""
    mid = new_id()
    body = json.dumps(dlr(mid)).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert httpx.post(callback_url(t23, "telecom23"), content=body, headers=form).status_code == 204
    assert message(t23, mid)["status"] == "delivered"
