"""The dashboard's pages (receiver/dashboard/) against a real server on loopback: who may see
them (token and session cookie, loopback without a token, CSRF on every form), what they show
(the figures of /v1/stats and the message API), escaping, and RECEIVER_DASHBOARD=off."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import LiveServer, free_port, new_sid, post_status, wait_until

from receiver.dashboard import figures
from receiver.dashboard.views import message_path
from receiver.settings import Settings, SettingsError

StartServer = Callable[..., LiveServer]
TOKEN = "dashboard-token-0123456789"
REMOTE = "203.0.113.7"


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return unescape(found.group(1))


def _login(client: httpx.Client, token: str = TOKEN) -> httpx.Response:
    form = client.get("/dashboard/login")
    return client.post(
        "/dashboard/login",
        data={"csrf": _csrf(form), "token": token, "next": "/dashboard"},
    )


def _text(page: httpx.Response, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page.text)
    assert found, f"no #{element_id} in the page"
    return unescape(found.group(1))


def _register(client: httpx.Client, *items: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/v1/messages", json={"messages": list(items)}, headers=headers)
    assert answer.status_code in (200, 201), answer.text


@pytest.fixture
def server(start_server: StartServer) -> LiveServer:
    return start_server(api_token=TOKEN)


def test_pages_need_a_login_when_a_token_is_set(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.get("/dashboard?window=7d")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/login?next=%2Fdashboard%3Fwindow%3D7d"
        assert client.get("/dashboard/messages/twilio/SMx").status_code == 303
        # The API's bearer token works too (a script, a proxy adding it).
        bearer = client.get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        wrong = client.get("/dashboard", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


def test_the_login_sets_a_strict_httponly_session_and_logout_ends_it(server: LiveServer) -> None:
    with server.client() as client:
        answer = _login(client)
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if "receiver_dashboard=" in c
        )
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
        page = client.get("/dashboard")
        assert page.status_code == 200 and "delivery rate" in page.text
        assert "script" not in page.headers["content-security-policy"]
        out = client.post("/dashboard/logout", data={"csrf": _csrf(page)})
        assert out.status_code == 303
        assert client.get("/dashboard").status_code == 303


def test_a_wrong_token_is_refused(server: LiveServer) -> None:
    with server.client() as client:
        answer = _login(client, "not-the-token")
        assert answer.status_code == 401
        assert _text(answer, "login-error") == "this token is not valid"
        assert "receiver_dashboard=" not in answer.headers.get("set-cookie", "")
        assert client.get("/dashboard").status_code == 303


def test_forms_without_their_csrf_token_are_refused(server: LiveServer) -> None:
    with server.client() as client:
        client.get("/dashboard/login")  # the CSRF cookie
        forged = client.post("/dashboard/login", data={"csrf": "forged", "token": TOKEN})
        assert forged.status_code == 403 and _text(forged, "error-code") == "csrf_failed"
        bare = httpx.post(server.base_url + "/dashboard/login", data={"token": TOKEN})
        assert bare.status_code == 403
        assert _login(client).status_code == 303
        page = client.get("/dashboard")
        # Another site posting the logout with the right token in hand is still refused.
        other = client.post(
            "/dashboard/logout",
            data={"csrf": _csrf(page)},
            headers={"Origin": "https://evil.example"},
        )
        assert other.status_code == 403
        assert client.post("/dashboard/logout", data={}).status_code == 403
        assert client.get("/dashboard").status_code == 200  # still logged in


def test_a_session_ends_when_the_token_changes(start_server: StartServer) -> None:
    first = start_server(api_token=TOKEN, secret_key="k" * 32)
    with first.client() as client:
        assert _login(client).status_code == 303
        cookies = dict(client.cookies)
    second = start_server(api_token="another-token-0123456789", secret_key="k" * 32)
    with second.client(cookies=cookies) as client:
        assert client.get("/dashboard").status_code == 303


def test_without_a_token_only_loopback_clients_see_it(start_server: StartServer) -> None:
    server = start_server()
    with server.client() as client:
        assert client.get("/dashboard").status_code == 200
        proxied = client.get("/dashboard", headers={"X-Forwarded-For": REMOTE})
        assert proxied.status_code == 403
        assert _text(proxied, "error-code") == "loopback_only"


def test_dashboard_off_removes_the_routes(start_server: StartServer) -> None:
    server = start_server(dashboard=False)
    with server.client() as client:
        assert client.get("/dashboard").status_code == 404
        assert client.get("/dashboard/login").status_code == 404
        assert client.get("/dashboard/static/dashboard.css").status_code == 404


def test_a_bad_dashboard_setting_stops_the_start() -> None:
    with pytest.raises(SettingsError, match="RECEIVER_DASHBOARD"):
        Settings.from_env({"RECEIVER_DASHBOARD": "maybe"})


def test_bad_choices_are_clear_errors(server: LiveServer) -> None:
    with server.client() as client:
        _login(client)
        for query, parameter in (("window=2h", "window"), ("provider=nope", "provider")):
            answer = client.get(f"/dashboard?{query}")
            assert answer.status_code == 400
            assert _text(answer, "error-code") == "invalid_parameter"
            assert parameter in answer.text
        missing = client.get("/dashboard/messages/twilio/SMnone")
        assert missing.status_code == 404 and _text(missing, "error-code") == "message_not_found"


def test_figures_agree_with_v1_stats_for_each_window_and_provider(server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with server.client() as client:
        sent = (datetime.now(UTC) - timedelta(seconds=90)).isoformat()
        sids = [new_sid() for _ in range(6)]
        _register(client, *({"provider": "twilio", "message_id": s, "sent_at": sent} for s in sids))
        for i, sid in enumerate(sids):
            status = "delivered" if i % 3 else "undelivered"
            extra = {} if i % 3 else {"ErrorCode": "30003"}
            assert post_status(client, server.callback_url, sid, status, **extra).status_code == 204
        _login(client)
        for window in figures.WINDOWS:
            for provider in (None, "twilio", "mesms"):
                query = f"window={window}" + (f"&provider={provider}" if provider else "")
                page = client.get(f"/dashboard?{query}")
                assert page.status_code == 200
                since = _text(page, "since")
                params = {"since": since, **({"provider": provider} if provider else {})}
                stats = client.get("/v1/stats", params=params, headers=headers).json()
                assert _text(page, "total") == str(stats["total"])
                assert _text(page, "delivery-rate") == figures.rate(stats["delivery_rate"])
                median = stats["time_to_final_seconds"]["median"]
                assert _text(page, "median") == figures.seconds(median)
        page = client.get("/dashboard?window=1h")
        assert _text(page, "delivery-rate") == "66.7%"
        # The twilio error code is explained.
        assert "handset unreachable" in page.text


def test_a_message_page_shows_its_timeline_bodies_and_poll_state(server: LiveServer) -> None:
    with server.client() as client:
        message_id = "app/42/<script>alert(1)</script>"
        _register(client, {"provider": "twilio", "message_id": message_id, "to": "+15550001234"})
        sid = new_sid()
        _register(client, {"provider": "twilio", "message_id": sid, "to": "+15550001234"})
        post_status(client, server.callback_url, sid, "sent")
        post_status(client, server.callback_url, sid, "delivered")
        post_status(client, server.callback_url, sid, "sent")  # a regression
        _login(client)
        page = client.get(message_path("twilio", sid))
        assert page.status_code == 200
        outcomes = re.findall(r'<td class="outcome">([a-z_]+)', page.text)
        events = client.get(
            f"/v1/messages/{sid}/events", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
        assert (
            outcomes
            == [e["outcome"] for e in events["events"]]
            == [
                "applied",
                "applied",
                "regression",
            ]
        )
        assert "MessageStatus=delivered" in page.text  # the raw body
        assert 'id="poll-state"' in page.text
        # An id holding markup is text, on its page and in the search results.
        odd = client.get(message_path("twilio", message_id))
        assert odd.status_code == 200
        assert "<script>" not in odd.text
        assert _text(odd, "message-id") == message_id
        search = client.get("/dashboard/search", params={"q": "+15550001234"})
        assert search.status_code == 200 and "<script>" not in search.text
        assert "&lt;script&gt;" in search.text
        # One match: straight to its page.
        one = client.get("/dashboard/search", params={"q": sid})
        assert one.status_code == 303 and one.headers["location"] == message_path("twilio", sid)
        assert message_path("twilio", "a/b?c") == "/dashboard/messages/twilio/a/b%3Fc"


def test_pushes_show_their_backlog_or_that_they_are_off(
    server: LiveServer, start_server: StartServer, tmp_path: Path
) -> None:
    with server.client() as client:
        _login(client)
        page = client.get("/dashboard")
        assert _text(page, "pushes-off").startswith("Pushes are off")
        assert 'id="push-backlog"' not in page.text
    # An app that never answers (a closed loopback port): the final status's push stays owed.
    env = Settings.from_env(
        {
            "RECEIVER_PUSH_URL": f"http://127.0.0.1:{free_port()}/push",
            "RECEIVER_PUSH_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "RECEIVER_PUSH_RETRY_SCHEDULE": "1h",
        }
    )
    pushing = start_server(
        api_token=TOKEN,
        database=str(tmp_path / "pushing.db"),
        push_url=env.push_url,
        push_secret=env.push_secret,
        push_retry_schedule=env.push_retry_schedule,
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with pushing.client() as client:
        sid = new_sid()
        assert post_status(client, pushing.callback_url, sid, "delivered").status_code == 204

        def backlog() -> bool:
            text = client.get("/metrics", headers=headers).text
            return re.search(r"^receiver_push_backlog 1(\.0)?$", text, re.M) is not None

        wait_until(backlog, timeout=60, what="receiver_push_backlog 1")
        _login(client)
        page = client.get("/dashboard")
        assert page.status_code == 200
        section = page.text[page.text.index('id="pushes"') : page.text.index('id="failures"')]
        assert "pushes-off" not in section
        assert re.search(r'id="push-backlog"[^>]*>1<', section), section
        assert _text(page, "push-failed") == "0"
        assert _text(page, "push-oldest") != figures.NONE


def test_demo_keep_leaves_the_dashboard_open_on_the_demos_data() -> None:
    """`receiver demo --keep` prints the dashboard's URL and token after the run, serves until
    SIGTERM, then ends with the run's exit code."""
    command = [str(Path(sys.executable).parent / "receiver"), "demo", "--count", "30", "--keep"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:  # ends when the process does: bounded by the demo's timeout
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        text = "".join(lines)
        found = re.search(r"open (http://127\.0\.0\.1:\d+)/dashboard", text)
        token = re.search(r"API token (\S+)", text)
        assert found and token, text
        with httpx.Client(base_url=found.group(1), timeout=30) as client:
            page = client.get("/dashboard", headers={"Authorization": f"Bearer {token.group(1)}"})
            assert page.status_code == 200
            assert _text(page, "total") == "30"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
