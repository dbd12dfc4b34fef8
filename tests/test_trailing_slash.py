"""A callback URL pasted with a trailing '/' works: providers do not follow a redirect for a
POST, so the route answers there itself. Every provider, through the real server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from support import (
    SECRET_KEY,
    STANDARD_SECRET,
    LiveServer,
    assert_error,
    callback_url,
    make_settings,
    message,
    new_sid,
    post_status,
    status_params,
    twilio_form,
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("slash"),
        secret_key=SECRET_KEY,
        provider_env={"STANDARD_WEBHOOK_SECRETS": f"acme:{STANDARD_SECRET}"},
    )
    server = LiveServer(settings)
    yield server.start()
    server.stop()


def test_twilio_signed_over_the_url_with_its_slash_is_applied(live: LiveServer) -> None:
    """Twilio signs the URL it calls, slash included; that signature verifies."""
    url, sid = live.callback_url + "/", new_sid()
    with live.client(follow_redirects=False) as client:
        response = post_status(client, url, sid, "delivered")
    assert response.status_code == 204, response.text
    assert message(live, sid)["status"] == "delivered"


def test_twilio_signed_without_the_slash_is_refused_on_the_url_with_it(live: LiveServer) -> None:
    """The signature is checked against the URL as called, not a tidied one."""
    body, headers = twilio_form(live.callback_url, status_params(new_sid(), "delivered"))
    with live.client(follow_redirects=False) as client:
        response = client.post(live.callback_url + "/", content=body, headers=headers)
    assert_error(response, 403, "signature_invalid")


@pytest.mark.parametrize("provider", ["telecom23", "mesms"])
def test_a_signed_url_with_a_trailing_slash_is_applied(live: LiveServer, provider: str) -> None:
    url = callback_url(live, provider) + "/"
    if provider == "telecom23":
        message_id = f"api_42_1743667200123456789_{uuid.uuid4().hex[:16]}"
        report: object = {"message_id": message_id, "status": "DELIVRD", "status_code": "000"}
    else:
        send = str(uuid.uuid4())
        message_id = f"{send}:66812345678"
        report = {"uuid": send, "recipients": [{"msisdn": "66812345678", "status": "success"}]}
    response = httpx.post(url, json=report, follow_redirects=False)
    assert response.status_code == 204, response.text
    assert message(live, message_id, provider)["status"] == "delivered"


def test_a_standard_webhook_source_with_a_trailing_slash_is_applied(live: LiveServer) -> None:
    message_id = f"order/{uuid.uuid4().hex}/"  # ids may hold '/', even at the end
    body = json.dumps(
        {"type": "message.status", "data": {"message_id": message_id, "status": "delivered"}}
    ).encode()
    msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }
    response = httpx.post(
        f"{live.base_url}/v1/webhook/standard/acme/",
        content=body,
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 204, response.text
    # The API's path routes are untouched: the id comes back whole, its last '/' included.
    assert message(live, message_id, "acme")["message_id"] == message_id


@pytest.mark.parametrize(
    "path",
    [
        "/v1/webhook/twilio/sms-status",
        "/v1/webhook/telecom23/dlr/not-a-token",
        "/v1/webhook/mesms/dlr/not-a-token",
        "/v1/webhook/standard/acme",
    ],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_callback_route_answers_the_same_with_or_without_the_slash(
    live: LiveServer, path: str, method: str
) -> None:
    """Refusals too (a bad signature, a wrong method) are the same answer, never a 307."""
    with live.client(follow_redirects=False) as client:
        bare = client.request(method, path, content=b"{}")
        slashed = client.request(method, path + "/", content=b"{}")
    assert bare.status_code in (403, 405)
    assert (slashed.status_code, slashed.headers.get("allow")) == (
        bare.status_code,
        bare.headers.get("allow"),
    )
    assert slashed.json()["error_code"] == bare.json()["error_code"]
