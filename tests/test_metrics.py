"""GET /metrics: what is counted where it happens, the status gauge, access, isolation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from support import (
    LiveServer,
    assert_error,
    new_sid,
    post_status,
    status_params,
    twilio_form,
    wait_until,
)

from receiver.engine import Outcome, Status, format_time


def scrape(
    server: LiveServer, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    with server.client() as client:
        response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def callbacks(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str) -> float:
    return samples[("receiver_callbacks_total", (("outcome", outcome), ("provider", "twilio")))]


def test_every_series_is_there_at_zero_before_anything_happens(server: LiveServer) -> None:
    samples = scrape(server)
    for outcome in Outcome:
        assert callbacks(samples, outcome.value) == 0
    assert samples[("receiver_signature_failures_total", (("provider", "twilio"),))] == 0
    assert samples[("receiver_body_limit_rejections_total", (("provider", "twilio"),))] == 0
    for status in Status:
        assert samples[("receiver_messages", (("status", status.value),))] == 0
    assert ("receiver_write_batch_size_count", ()) in samples
    assert ("receiver_write_commit_seconds_count", ()) in samples


def test_callbacks_rejections_and_writes_are_counted_where_they_happen(
    server: LiveServer,
) -> None:
    url = server.callback_url
    delivered, failed = new_sid(), new_sid()
    with server.client() as client:
        for sid, status in [(delivered, "sent"), (delivered, "delivered"), (failed, "failed")]:
            assert post_status(client, url, sid, status).status_code == 204
        assert post_status(client, url, delivered, "delivered").status_code == 204  # duplicate
        assert post_status(client, url, delivered, "sent").status_code == 204  # regression
        assert post_status(client, url, failed, "bogus").status_code == 204  # unmapped

        unsigned = client.post(url, data=status_params(new_sid(), "sent"))
        assert_error(unsigned, 403, "signature_missing")
        body, headers = twilio_form(url, status_params(new_sid(), "sent"), token="wrong")
        assert_error(client.post(url, content=body, headers=headers), 403, "signature_invalid")
        big = status_params(new_sid(), "sent", Padding="x" * 70_000)
        body, headers = twilio_form(url, big)
        assert_error(client.post(url, content=body, headers=headers), 413, "body_too_large")
        params = {k: v for k, v in status_params(new_sid(), "sent").items() if "Status" not in k}
        body, headers = twilio_form(url, params)
        assert_error(client.post(url, content=body, headers=headers), 400, "missing_field")
        registered = client.post("/v1/messages", json={"provider": "twilio", "message_id": "SMr"})
        assert registered.status_code == 201

    samples = scrape(server)
    assert {o.value: callbacks(samples, o.value) for o in Outcome} == {
        "applied": 3,
        "duplicate": 1,
        "regression": 1,
        "conflict": 0,
        "pending_unknown": 0,
        "unmapped": 1,
    }
    assert samples[("receiver_signature_failures_total", (("provider", "twilio"),))] == 2
    assert samples[("receiver_body_limit_rejections_total", (("provider", "twilio"),))] == 1
    malformed = (("error_code", "missing_field"), ("provider", "twilio"))
    assert samples[("receiver_callbacks_rejected_total", malformed)] == 1
    # Six recorded callbacks and one registration, each committed in some batch.
    assert samples[("receiver_write_batch_size_sum", ())] == 7
    batches = samples[("receiver_write_batch_size_count", ())]
    assert 1 <= batches <= 7
    assert samples[("receiver_write_commit_seconds_count", ())] == batches
    assert samples[("receiver_write_commit_seconds_sum", ())] > 0
    # The gauge is the database's count at scrape time.
    by_status = {s.value: samples[("receiver_messages", (("status", s.value),))] for s in Status}
    assert by_status == {s.value: 0 for s in Status} | {
        "delivered": 1,
        "failed": 1,
        "registered": 1,
    }


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(server: LiveServer) -> None:
    with server.client() as client:
        response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_apps_in_one_process_keep_their_own_counts(
    start_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    busy, quiet = start_server(), start_server(database=str(tmp_path / "quiet.db"))
    with busy.client() as client:
        assert post_status(client, busy.callback_url, new_sid(), "sent").status_code == 204
    assert callbacks(scrape(busy), "applied") == 1
    assert callbacks(scrape(quiet), "applied") == 0


@pytest.mark.parametrize(
    ("headers", "status", "error_code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer api-token"}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        ({"Authorization": "Bearer scrape-token"}, 200, None),
    ],
)
def test_a_metrics_token_is_the_only_key_to_metrics(
    start_server: Callable[..., LiveServer],
    headers: dict[str, str],
    status: int,
    error_code: str | None,
) -> None:
    server = start_server(api_token="api-token", metrics_token="scrape-token")
    with server.client() as client:
        response = client.get("/metrics", headers=headers)
    if error_code:
        assert_error(response, status, error_code)
        assert response.headers["www-authenticate"].startswith("Bearer")
    else:
        assert response.status_code == status
    # The metrics token opens nothing else.
    with server.client() as client:
        other = client.get("/v1/stats", headers={"Authorization": "Bearer scrape-token"})
    assert_error(other, 401, "unauthorized")


def test_without_a_metrics_token_metrics_follow_the_api_token(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(api_token="api-token")
    with server.client() as client:
        assert_error(client.get("/metrics"), 401, "unauthorized")
        ok = client.get("/metrics", headers={"Authorization": "Bearer api-token"})
    assert ok.status_code == 200


def test_without_any_token_metrics_answer_loopback_but_not_a_proxy(server: LiveServer) -> None:
    with server.client() as client:
        assert client.get("/metrics").status_code == 200
        proxied = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert_error(proxied, 403, "loopback_only")


def test_a_scrape_is_not_logged_as_a_request(server: LiveServer) -> None:
    def logged_paths() -> list[str]:
        return [e["path"] for e in logs if e["event"] == "request"]

    with structlog.testing.capture_logs() as logs:
        scrape(server)
        with server.client() as client:
            client.get("/openapi.json")
        # The server logs a request after answering it, so wait for the second one's line.
        wait_until(logged_paths, what="the request's log line")
    assert logged_paths() == ["/openapi.json"]


def test_due_queue_depth_is_read_from_the_store_at_each_scrape(
    start_server: Callable[..., LiveServer],
) -> None:
    # Polling off, so nothing takes the messages off the queue while they are counted. A
    # grace of ten minutes: messages registered now are not due during the test, and those
    # the app says were sent an hour ago are due at once; no test waits on the clock.
    server = start_server(dlr_grace=600)
    twilio_due = ("receiver_poll_due", (("provider", "twilio"),))
    fresh, old = [new_sid() for _ in range(3)], [new_sid() for _ in range(3)]
    an_hour_ago = format_time(datetime.now(UTC) - timedelta(hours=1))
    with server.client() as client:
        registered = client.post(
            "/v1/messages", json=[{"provider": "twilio", "message_id": i} for i in fresh]
        )
        assert registered.status_code == 200  # a batch answers 200, with each message's result
        before = scrape(server)[twilio_due]
        registered = client.post(
            "/v1/messages",
            json=[{"provider": "twilio", "message_id": i, "sent_at": an_hour_ago} for i in old],
        )
        assert registered.status_code == 200
        due = scrape(server)[twilio_due]
        assert post_status(client, server.callback_url, old[0], "delivered").status_code == 204
        after = scrape(server)
    assert (before, due) == (0, 3)
    # A final status takes a message off the queue; another provider's queue is its own.
    assert after[twilio_due] == 2
    assert after[("receiver_poll_due", (("provider", "telecom23"),))] == 0
