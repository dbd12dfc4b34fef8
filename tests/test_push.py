"""Pushes to the app end to end: a real receiver and a real receiving app on loopback, the app
verifying every push with the `standardwebhooks` library."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from push_app import OTHER_SECRET, PUSH_SECRET, PushApp
from structlog.testing import capture_logs
from support import (
    AppServer,
    LiveServer,
    assert_error,
    free_port,
    make_settings,
    new_sid,
    post_status,
    wait_until,
)

from receiver.push.dispatcher import retry_delay
from receiver.settings import Settings, SettingsError

Started = Callable[..., tuple[LiveServer, PushApp]]


@pytest.fixture
def pushing(tmp_path: Path) -> Iterator[Started]:
    """start(app=PushApp(...), **settings) -> (receiver, app): both running, the receiver
    pushing to the app (a short retry schedule unless given)."""
    servers: list[Any] = []

    def start(app: PushApp | None = None, **overrides: Any) -> tuple[LiveServer, PushApp]:
        app = app or PushApp()
        app_server = AppServer(app.asgi()).start()
        servers.append(app_server)
        given = {
            "push_url": (app_server.base_url + "/push",),
            "push_secret": (PUSH_SECRET,),
            "push_retry_schedule": (0.3, 0.3, 0.3, 0.3),
            **overrides,
        }
        settings = make_settings(tmp_path, **given)
        receiver = LiveServer(settings).start()
        servers.append(receiver)
        return receiver, app

    yield start
    for server in reversed(servers):
        server.stop()


def callback(receiver: LiveServer, sid: str, status: str) -> None:
    with receiver.client() as client:
        response = post_status(client, receiver.callback_url, sid, status)
    assert response.status_code == 204, response.text


def api(receiver: LiveServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with receiver.client() as client:
        return client.request(method, path, **kwargs)


def pushes(receiver: LiveServer, **params: str) -> list[dict[str, Any]]:
    response = api(receiver, "GET", "/v1/pushes", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["pushes"]
    return found


def metric(receiver: LiveServer, name: str) -> float:
    text = api(receiver, "GET", "/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


# -- delivery --------------------------------------------------------------------------------


def test_every_change_arrives_signed_verified_and_in_order_per_message(pushing: Started) -> None:
    receiver, app = pushing(push_events="all")
    sids = [new_sid() for _ in range(5)]
    for status in ("sent", "delivered"):
        for sid in sids:
            callback(receiver, sid, status)
    wait_until(lambda: len(app.received) == 10, what="ten pushes")
    by_message = app.messages()
    for sid in sids:
        sent, delivered = by_message[sid]
        assert (sent["data"]["previous_status"], sent["data"]["status"]) == (None, "sent")
        assert (delivered["data"]["previous_status"], delivered["data"]["status"]) == (
            "sent",
            "delivered",
        )
        assert sent["type"] == "message.status_changed"
        assert delivered["data"]["final"] is True
        assert delivered["data"]["final_via"] == "callback"
        assert delivered["data"]["provider"] == "twilio"
        assert delivered["data"]["to"] == "+15558675310"
        assert set(delivered["data"]) == {
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
        }
    assert app.refused == 0
    assert len({r.webhook_id for r in app.received}) == 10
    wait_until(lambda: all(p["status"] == "delivered" for p in pushes(receiver)))


def test_only_final_changes_are_pushed_by_default_with_the_apps_metadata(
    pushing: Started,
) -> None:
    receiver, app = pushing()
    sid = new_sid()
    registered = api(
        receiver,
        "POST",
        "/v1/messages",
        json={"provider": "twilio", "message_id": sid, "metadata": {"order": 42}},
    )
    assert registered.status_code == 201
    callback(receiver, sid, "sent")
    callback(receiver, sid, "undelivered")
    wait_until(lambda: app.received, what="a push")
    callback(receiver, new_sid(), "queued")
    other = new_sid()
    callback(receiver, other, "delivered")
    wait_until(lambda: len(app.received) == 2, what="the second push")
    by_message = app.messages()
    [undelivered] = by_message[sid]
    assert undelivered["data"]["status"] == "undelivered"
    assert undelivered["data"]["previous_status"] == "sent"
    assert undelivered["data"]["metadata"] == {"order": 42}
    assert [p["data"]["status"] for p in by_message[other]] == ["delivered"]
    assert len(pushes(receiver)) == 2


def test_a_push_signed_with_another_secret_fails_the_apps_verification(
    pushing: Started,
) -> None:
    receiver, app = pushing(app=PushApp(secret=OTHER_SECRET))
    callback(receiver, new_sid(), "delivered")
    wait_until(lambda: app.refused >= 1, what="a refused push")
    assert app.received == []
    [push] = wait_until(lambda: [p for p in pushes(receiver) if p["attempt_count"]])
    assert push["last_result"] == "http_401"


def test_while_secrets_rotate_each_push_carries_a_signature_per_secret(
    pushing: Started,
) -> None:
    receiver, app = pushing(
        app=PushApp(secret=PUSH_SECRET), push_secret=(OTHER_SECRET, PUSH_SECRET)
    )
    callback(receiver, new_sid(), "delivered")
    wait_until(lambda: app.received, what="a push verified with the second secret")
    assert app.refused == 0


# -- retries ---------------------------------------------------------------------------------


def test_three_500s_are_retried_and_the_push_arrives_once_with_one_webhook_id(
    pushing: Started,
) -> None:
    app = PushApp(answer=lambda n: (500, {}) if n < 3 else (200, {}))
    receiver, app = pushing(app=app)
    callback(receiver, new_sid(), "delivered")
    wait_until(lambda: app.received, what="the fourth attempt")
    [webhook_id] = {r.webhook_id for r in app.received}
    assert app.requests == [webhook_id] * 4
    assert len(app.received) == 1
    detail = wait_until(
        lambda: (
            (d := api(receiver, "GET", f"/v1/pushes/{webhook_id}").json())["status"] == "delivered"
            and d
        ),
        what="the push recorded as delivered",
    )
    assert detail["attempt_count"] == 4
    assert [a["http_status"] for a in detail["attempts"]] == [500, 500, 500, 200]
    assert detail["attempts"][0]["response"] == '{"n": 0}'
    assert all(a["duration_ms"] >= 0 and a["error"] is None for a in detail["attempts"])


def test_after_the_schedule_the_push_fails_is_kept_and_recover_sends_it_again(
    pushing: Started,
) -> None:
    failing = True
    app = PushApp(answer=lambda n: (503, {}) if failing else (204, {}))
    receiver, app = pushing(app=app, push_retry_schedule=(0.3,))
    callback(receiver, new_sid(), "delivered")
    [failed] = wait_until(lambda: pushes(receiver, status="failed"), what="a failed push")
    assert failed["attempt_count"] == 2
    assert pushes(receiver, status="pending") == []
    failing = False
    recovered = api(receiver, "POST", "/v1/pushes/recover", params={"since": "2000-01-01"})
    assert recovered.status_code == 202
    assert recovered.json() == {"recovered": 1}
    wait_until(lambda: app.received, what="the recovered push")
    assert app.received[0].webhook_id == failed["id"]
    [delivered] = wait_until(lambda: pushes(receiver, status="delivered"))
    assert delivered["attempt_count"] == 3


def test_a_429s_retry_after_is_honoured_over_the_schedule(pushing: Started) -> None:
    app = PushApp(answer=lambda n: (429, {"Retry-After": "1"}) if n == 0 else (204, {}))
    # Without the Retry-After, the second attempt would be an hour away.
    receiver, app = pushing(app=app, push_retry_schedule=(3600.0,))
    callback(receiver, new_sid(), "delivered")
    wait_until(lambda: app.received, what="the retry after 1 s")
    path = f"/v1/pushes/{app.received[0].webhook_id}"
    detail = wait_until(lambda: (d := api(receiver, "GET", path).json())["attempts"][1:] and d)
    assert [a["http_status"] for a in detail["attempts"]] == [429, 204]


def test_retry_waits_follow_the_schedule_with_20_percent_jitter_and_retry_after_bounds() -> None:
    schedule = (5.0, 300.0, 1800.0)
    assert retry_delay(0, schedule, None, rand=lambda a, b: a) == pytest.approx(4.0)
    assert retry_delay(1, schedule, None, rand=lambda a, b: b) == pytest.approx(360.0)
    assert retry_delay(3, schedule, None) is None  # exhausted: the push fails
    assert retry_delay(0, schedule, 120.0) == 120.0
    assert retry_delay(0, schedule, 10**9) == 1800.0  # never longer than the longest wait
    for _ in range(100):
        assert 240.0 <= (retry_delay(1, schedule, None) or 0) <= 360.0


def test_410_disables_the_endpoint_until_a_push_to_it_is_retried(pushing: Started) -> None:
    gone = True
    app = PushApp(answer=lambda n: (410, {}) if gone else (204, {}))
    with capture_logs() as logs:
        receiver, app = pushing(app=app)
        callback(receiver, new_sid(), "delivered")
        [first] = wait_until(lambda: pushes(receiver, status="failed"), what="the 410")
    assert next(e for e in logs if e["event"] == "push_endpoint_disabled")["log_level"] == "error"
    ready = api(receiver, "GET", "/readyz")
    assert ready.status_code == 200
    [state] = ready.json()["pushes"].values()
    assert state["state"] == "disabled" and "410" in state["detail"]
    assert "receiver_push_endpoint_disabled{endpoint=" in api(receiver, "GET", "/metrics").text
    assert re.search(
        r"^receiver_push_endpoint_disabled\{.*\} 1\.0$", api(receiver, "GET", "/metrics").text, re.M
    )
    # A later push to a disabled endpoint is not sent: it is failed, kept to recover.
    callback(receiver, new_sid(), "delivered")
    wait_until(lambda: len(pushes(receiver, status="failed")) == 2, what="the second failed")
    assert len(app.requests) == 1
    gone = False
    retried = api(receiver, "POST", f"/v1/pushes/{first['id']}/retry")
    assert retried.status_code == 202
    wait_until(lambda: app.received, what="the retried push")
    assert app.received[0].webhook_id == first["id"]
    assert api(receiver, "GET", "/readyz").json()["pushes"] == {
        next(iter(ready.json()["pushes"])): {"state": "enabled", "detail": None}
    }


# -- the app's endpoint down -----------------------------------------------------------------


def test_with_the_endpoint_down_the_backlog_grows_in_metrics_and_callbacks_are_answered(
    tmp_path: Path,
) -> None:
    down = f"http://127.0.0.1:{free_port()}/push"  # nothing listens there
    settings = make_settings(
        tmp_path, push_url=(down,), push_secret=(PUSH_SECRET,), push_retry_schedule=(3600.0,)
    )
    receiver = LiveServer(settings).start()
    try:
        for _ in range(30):
            callback(receiver, new_sid(), "delivered")
        assert metric(receiver, "receiver_push_backlog") == 30
        wait_until(
            lambda: metric(receiver, 'receiver_push_attempts_total{result="network_error"}') >= 1,
            what="a first attempt",
        )
        assert metric(receiver, "receiver_push_oldest_pending_seconds") > 0
        # Found down, the endpoint is left alone until the first retry's wait is over: a few
        # pushes tried it, the others wait their turn (owed, pending, not failed).
        tried = [p for p in pushes(receiver) if p["attempt_count"]]
        assert 1 <= len(tried) <= settings.push_concurrency
        assert {p["last_result"] for p in tried} == {"network_error"}
        for _ in range(10):
            callback(receiver, new_sid(), "delivered")
        assert metric(receiver, "receiver_push_backlog") == 40
    finally:
        receiver.stop()


# -- the API ---------------------------------------------------------------------------------


def test_the_push_list_pages_newest_first_by_cursor_and_filters(pushing: Started) -> None:
    receiver, app = pushing()
    for _ in range(5):
        callback(receiver, new_sid(), "delivered")
    wait_until(lambda: len(app.received) == 5, what="five pushes")
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = api(receiver, "GET", "/v1/pushes", params=params).json()
        seen += [p["id"] for p in page["pushes"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(r.webhook_id for r in app.received)
    assert len(seen) == 5 == len(set(seen))
    wait_until(lambda: pushes(receiver, status="pending") == [], what="all recorded")
    assert pushes(receiver, since="2999-01-01") == []
    assert_error(
        api(receiver, "GET", "/v1/pushes", params={"status": "x"}), 400, "invalid_parameter"
    )
    assert_error(api(receiver, "GET", "/v1/pushes/msg_nope"), 404, "push_not_found")
    assert_error(api(receiver, "POST", "/v1/pushes/msg_nope/retry"), 404, "push_not_found")
    assert_error(api(receiver, "POST", "/v1/pushes/recover"), 400, "invalid_parameter")


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RECEIVER_PUSH_URL": "ftp://app/push"}, "RECEIVER_PUSH_URL"),
        ({"RECEIVER_PUSH_URL": "http://u:p@app/push"}, "RECEIVER_PUSH_URL"),
        ({"RECEIVER_PUSH_URL": "http://127.0.0.1/push"}, "RECEIVER_PUSH_SECRET"),
        ({"RECEIVER_PUSH_SECRET": PUSH_SECRET}, "RECEIVER_PUSH_URL"),
        (
            {"RECEIVER_PUSH_URL": "http://127.0.0.1/p", "RECEIVER_PUSH_SECRET": "whsec_short"},
            "RECEIVER_PUSH_SECRET",
        ),
        ({"RECEIVER_PUSH_EVENTS": "some"}, "RECEIVER_PUSH_EVENTS"),
        ({"RECEIVER_PUSH_TIMEOUT": "0"}, "RECEIVER_PUSH_TIMEOUT"),
        ({"RECEIVER_PUSH_RETRY_SCHEDULE": "5s,soon"}, "RECEIVER_PUSH_RETRY_SCHEDULE"),
        ({"RECEIVER_PUSH_CONCURRENCY": "0"}, "RECEIVER_PUSH_CONCURRENCY"),
    ],
)
def test_a_bad_push_setting_stops_the_start_naming_it(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_push_settings_are_read_with_the_specs_schedule_by_default() -> None:
    settings = Settings.from_env(
        {
            "RECEIVER_PUSH_URL": "http://127.0.0.1:8080/a, https://app.example.com/b",
            "RECEIVER_PUSH_SECRET": f"{PUSH_SECRET},{OTHER_SECRET}",
        }
    )
    assert settings.push_url == ("http://127.0.0.1:8080/a", "https://app.example.com/b")
    assert settings.push_secret == (PUSH_SECRET, OTHER_SECRET)
    assert settings.push_events == "final"
    assert settings.push_timeout == 15.0
    assert settings.push_retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert PUSH_SECRET not in repr(settings)
    quick = Settings.from_env(
        {
            "RECEIVER_PUSH_URL": "http://127.0.0.1/a",
            "RECEIVER_PUSH_SECRET": PUSH_SECRET,
            "RECEIVER_PUSH_RETRY_SCHEDULE": "1s, 500ms,2m",
            "RECEIVER_PUSH_EVENTS": "all",
        }
    )
    assert quick.push_retry_schedule == (1.0, 0.5, 120.0)
    assert quick.push_events == "all"


def test_the_push_metrics_table_matches_the_registry() -> None:
    """docs/push.md's table holds every push metric, with its type and labels."""
    from prometheus_client import CollectorRegistry

    from receiver.push.metrics import PushMetrics

    registry = CollectorRegistry()
    PushMetrics(registry, ["http://127.0.0.1:8080/push"])
    exported = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {key for sample in family.samples for key in sample.labels}
        exported[name] = (family.type, labels)
    text = (Path(__file__).resolve().parent.parent / "docs" / "push.md").read_text()
    documented = {
        name: (kind, set(re.findall(r"`([a-z_]+)`", labels)))
        for name, kind, labels in re.findall(
            r"^\| `(receiver_[a-z_]+)` \| ([a-z]+) \|([^|]*)\|", text, re.M
        )
    }
    assert documented == exported
