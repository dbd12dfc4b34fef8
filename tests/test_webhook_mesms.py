"""End-to-end: me-sms pushed recipient reports to a signed callback URL, through the real server.

One send (a uuid) has many recipients; each is tracked as the message "<uuid>:<msisdn>".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
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

from receiver.providers.mesms import STATUS_MAP, split_message_id


@pytest.fixture(scope="module")
def mesms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(tmp_path_factory.mktemp("mesms"), secret_key=SECRET_KEY))
    yield server.start()
    server.stop()


def recipient(msisdn: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"msisdn": msisdn, "status": status, "updatedAt": "2026-06-01T10:00:04Z", **extra}


def test_one_report_for_many_recipients_tracks_each_recipient(mesms: LiveServer) -> None:
    url, send = callback_url(mesms, "mesms", label="shop"), str(uuid.uuid4())
    report = {
        "uuid": send,
        "recipients": [
            recipient("66812345678", "success"),
            recipient("66812345679", "failed", errorCode="PHONE_OFF"),
            recipient("66812345670", "pending"),
        ],
    }
    assert httpx.post(url, json=report).status_code == 204
    got = {m: message(mesms, f"{send}:{m}", "mesms") for m in ("66812345678", "66812345679")}
    assert got["66812345678"]["status"] == "delivered"
    assert got["66812345678"]["to"] == "66812345678"
    assert got["66812345678"]["account"] == "shop"
    assert got["66812345679"]["status"] == "undelivered"
    assert got["66812345679"]["error_code"] == "PHONE_OFF"
    assert message(mesms, f"{send}:66812345670", "mesms")["status"] == "queued"
    [event] = events(mesms, f"{send}:66812345679")
    assert event["event_time"] == "2026-06-01T10:00:04.000Z"
    assert '"msisdn":"66812345679"' in event["body"]  # its own recipient, not the whole report


def test_a_flat_recipient_and_a_list_of_reports_work_too(mesms: LiveServer) -> None:
    url, a, b = callback_url(mesms, "mesms"), str(uuid.uuid4()), str(uuid.uuid4())
    assert (
        httpx.post(url, json={"uuid": a, **recipient("66800000001", "blocked")}).status_code == 204
    )
    reports = [{"uuid": b, "recipients": [recipient("66800000002", "expired")]}]
    assert httpx.post(url, json=reports).status_code == 204
    assert message(mesms, f"{a}:66800000001")["status"] == "rejected"
    assert message(mesms, f"{b}:66800000002")["status"] == "expired"


@pytest.mark.parametrize(("raw", "canonical"), sorted(STATUS_MAP.items()))
def test_every_status_maps_as_documented(mesms: LiveServer, raw: str, canonical: str) -> None:
    url, send = callback_url(mesms, "mesms"), str(uuid.uuid4())
    assert httpx.post(url, json={"uuid": send, **recipient("66811111111", raw)}).status_code == 204
    assert message(mesms, f"{send}:66811111111")["status"] == canonical


def test_a_late_pending_after_success_is_kept_as_a_regression(mesms: LiveServer) -> None:
    url, send = callback_url(mesms, "mesms"), str(uuid.uuid4())
    for status in ("success", "pending", "success"):
        report = {"uuid": send, "recipients": [recipient("66822222222", status)]}
        assert httpx.post(url, json=report).status_code == 204
    mid = f"{send}:66822222222"
    assert message(mesms, mid)["status"] == "delivered"
    assert [e["outcome"] for e in events(mesms, mid)] == ["applied", "regression", "duplicate"]


def test_a_telecom23_url_is_refused_and_nothing_is_stored(mesms: LiveServer) -> None:
    token, before = callback_url(mesms, "telecom23").rsplit("/", 1)[1], count_events(mesms)
    report = {"uuid": str(uuid.uuid4()), **recipient("66833333333", "success")}
    response = httpx.post(f"{mesms.base_url}/v1/webhook/mesms/dlr/{token}", json=report)
    assert_error(response, 403, "token_wrong_provider")
    assert count_events(mesms) == before


def test_the_allow_list_applies_to_mesms(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(secret_key=SECRET_KEY, provider_env={"MESMS_ALLOWED_IPS": "10.0.0.0/8"})
    report = {"uuid": str(uuid.uuid4()), **recipient("66844444444", "success")}
    assert_error(httpx.post(callback_url(server, "mesms"), json=report), 403, "ip_not_allowed")
    assert count_events(server) == 0


@pytest.mark.parametrize(
    ("report", "code"),
    [
        ({"recipients": [recipient("668", "success")]}, "missing_field"),
        ({"uuid": "not a uuid!", **recipient("668", "success")}, "invalid_field"),
        ({"uuid": str(uuid.uuid4()), "recipients": []}, "invalid_field"),
        ({"uuid": str(uuid.uuid4()), "recipients": "668"}, "invalid_field"),
        ({"uuid": str(uuid.uuid4()), "recipients": [{"status": "success"}]}, "missing_field"),
        ({"uuid": str(uuid.uuid4()), "msisdn": "668"}, "missing_field"),
        (
            # Short entries, so the body stays under RECEIVER_MAX_BODY.
            {"uuid": str(uuid.uuid4()), "recipients": [{"msisdn": "6", "status": "x"}] * 1001},
            "too_many_records",
        ),
    ],
)
def test_a_malformed_report_is_400_and_nothing_is_stored(
    mesms: LiveServer, report: dict[str, Any], code: str
) -> None:
    url, before = callback_url(mesms, "mesms"), count_events(mesms)
    assert_error(httpx.post(url, json=report), 400, code)
    assert count_events(mesms) == before


def test_message_ids_split_back_into_uuid_and_msisdn() -> None:
    send = str(uuid.uuid4())
    assert split_message_id(f"{send}:66812345678") == (send, "66812345678")
    assert split_message_id("SM123") is None
    assert split_message_id(f"{send}:") is None
