"""End-to-end: Standard Webhooks callbacks to /v1/webhook/standard/{source}, real server.

Requests are signed here from the scheme's definition (HMAC-SHA256 over id.timestamp.body),
not with the receiver's own signing code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import (
    STANDARD_SECRET,
    LiveServer,
    assert_error,
    count_events,
    events,
    make_settings,
    message,
)

ROTATED_SECRET = "whsec_" + base64.b64encode(b"the next secret of acme, rotated").decode()


@pytest.fixture(scope="module")
def std(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    secrets = f"acme:{STANDARD_SECRET},acme:{ROTATED_SECRET},beta:{ROTATED_SECRET}"
    settings = make_settings(
        tmp_path_factory.mktemp("standard"),
        provider_env={"STANDARD_WEBHOOK_SECRETS": secrets},
    )
    server = LiveServer(settings)
    yield server.start()
    server.stop()


def signed(
    body: bytes,
    *,
    secret: str = STANDARD_SECRET,
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = str(int(time.time()) if timestamp is None else timestamp)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


def payload(message_id: str, status: str, **data: Any) -> bytes:
    return json.dumps(
        {
            "type": "message.status",
            "timestamp": "2026-02-13T10:30:05Z",
            "data": {
                "message_id": message_id,
                "status": status,
                "recipient": "+14155551234",
                "error_code": None,
                "timestamp": "2026-02-13T10:30:04Z",
                **data,
            },
        }
    ).encode()


def post(server: LiveServer, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/webhook/standard/{source}", content=body, headers=headers
    )


def test_a_signed_callback_is_applied_under_the_source_name(std: LiveServer) -> None:
    mid = f"m-{uuid.uuid4().hex}"
    body = payload(mid, "delivered")
    headers = signed(body)
    assert post(std, "acme", body, headers).status_code == 204
    got = message(std, mid, "acme")
    assert (got["provider"], got["status"], got["to"]) == ("acme", "delivered", "+14155551234")
    [event] = events(std, mid)
    assert event["dedupe_key"] == headers["webhook-id"]
    assert event["event_time"] == "2026-02-13T10:30:04.000Z"


def test_a_redelivery_with_the_same_webhook_id_is_a_duplicate(std: LiveServer) -> None:
    mid, msg_id = f"m-{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
    sent = payload(mid, "sent")
    assert post(std, "acme", sent, signed(sent, msg_id=msg_id)).status_code == 204
    # The sender retries the same delivery: same id, new timestamp and signature.
    again = signed(sent, msg_id=msg_id, timestamp=int(time.time()) + 1)
    assert post(std, "acme", sent, again).status_code == 204
    assert [e["outcome"] for e in events(std, mid)] == ["applied", "duplicate"]


def test_the_rotated_secret_and_several_signatures_verify(std: LiveServer) -> None:
    mid = f"m-{uuid.uuid4().hex}"
    body = payload(mid, "queued")
    headers = signed(body, secret=ROTATED_SECRET)
    headers["webhook-signature"] = "v1,bm90IHRoaXMgb25l " + headers["webhook-signature"]
    assert post(std, "acme", body, headers).status_code == 204
    assert message(std, mid, "acme")["status"] == "queued"


def test_another_providers_raw_status_is_mapped_by_its_table(std: LiveServer) -> None:
    mid = f"m-{uuid.uuid4().hex}"
    body = payload(mid, "UNDELIV", status_provider="telecom23", error_code="011")
    assert post(std, "acme", body, signed(body)).status_code == 204
    got = message(std, mid, "acme")
    assert (got["status"], got["provider_status"], got["error_code"]) == (
        "undelivered",
        "UNDELIV",
        "011",
    )


def test_fields_at_the_top_level_work_and_an_unknown_status_is_unmapped(std: LiveServer) -> None:
    mid = f"m-{uuid.uuid4().hex}"
    body = json.dumps({"message_id": mid, "status": "bounced"}).encode()
    assert post(std, "acme", body, signed(body)).status_code == 204
    [event] = events(std, mid)
    assert event["outcome"] == "unmapped"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (
            {"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="},
            "signature_invalid",
        ),
        ({"webhook-id": "msg_other"}, "signature_invalid"),
        # Seconds from now, read when the test runs: a time taken at collection drifts into
        # the tolerance while a long suite runs.
        ({"webhook-timestamp": "-301"}, "timestamp_out_of_tolerance"),
        ({"webhook-timestamp": "+400"}, "timestamp_out_of_tolerance"),
        ({"webhook-timestamp": "yesterday"}, "timestamp_invalid"),
        ({"webhook-signature": ""}, "signature_missing"),
    ],
)
def test_a_bad_signature_or_stale_timestamp_is_403_and_nothing_is_stored(
    std: LiveServer, change: dict[str, str], code: str
) -> None:
    body = payload(f"m-{uuid.uuid4().hex}", "delivered")
    stamp = change.get("webhook-timestamp", "")
    if stamp[:1] in "+-" and stamp[1:].isdigit():
        change = {**change, "webhook-timestamp": str(int(time.time()) + int(stamp))}
    headers = {**signed(body), **change}
    before = count_events(std)
    assert_error(post(std, "acme", body, headers), 403, code)
    assert count_events(std) == before


def test_a_captured_request_replayed_after_the_tolerance_is_refused(std: LiveServer) -> None:
    """Signed 10 minutes ago (timestamp and signature match): the clock check refuses it."""
    body = payload(f"m-{uuid.uuid4().hex}", "delivered")
    old = signed(body, timestamp=int(time.time()) - 600)
    assert_error(post(std, "acme", body, old), 403, "timestamp_out_of_tolerance")


def test_a_source_without_a_secret_or_the_wrong_sources_secret_is_403(std: LiveServer) -> None:
    body = payload(f"m-{uuid.uuid4().hex}", "delivered")
    assert_error(post(std, "unknown", body, signed(body)), 403, "provider_not_configured")
    # beta's secret is ROTATED_SECRET only: acme's main secret does not verify there.
    assert_error(post(std, "beta", body, signed(body)), 403, "signature_invalid")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_body"),
        (b"\xff\xfe{}", "invalid_body"),
        (b"[1]", "invalid_body"),
        (b'{"data": "x"}', "invalid_field"),
        (b'{"data": {"status": "delivered"}}', "missing_field"),
        (
            b'{"data": {"message_id": "m", "status": "X", "status_provider": "nope"}}',
            "invalid_field",
        ),
    ],
)
def test_a_malformed_signed_body_is_400(std: LiveServer, body: bytes, code: str) -> None:
    before = count_events(std)
    assert_error(post(std, "acme", body, signed(body)), 400, code)
    assert count_events(std) == before


def test_the_source_is_a_provider_for_the_query_api(std: LiveServer) -> None:
    with std.client() as client:
        assert client.get("/v1/messages", params={"provider": "acme"}).status_code == 200
        response = client.get("/v1/messages", params={"provider": "standard"})
        body = assert_error(response, 400, "invalid_parameter")
        assert body["details"]["allowed"] == ["acme", "beta", "mesms", "telecom23", "twilio"]
        registered = client.post("/v1/messages", json={"provider": "beta", "message_id": "b-1"})
        assert registered.status_code in (200, 201), registered.text


def test_a_non_ascii_digit_timestamp_is_refused_not_a_500(std: LiveServer) -> None:
    body = payload(f"m-{uuid.uuid4().hex}", "delivered")
    headers = {**signed(body), "webhook-timestamp": "\xb9\xb2\xb3"}  # "¹²³" as latin-1
    response = httpx.post(
        f"{std.base_url}/v1/webhook/standard/acme",
        content=body,
        headers={k: v.encode("latin-1") for k, v in headers.items()},
    )
    assert_error(response, 403, "timestamp_invalid")


def test_a_relayed_status_matches_in_any_case(std: LiveServer) -> None:
    mid = f"m-{uuid.uuid4().hex}"
    body = payload(mid, "delivrd", status_provider="telecom23")
    assert post(std, "acme", body, signed(body)).status_code == 204
    assert message(std, mid, "acme")["status"] == "delivered"
