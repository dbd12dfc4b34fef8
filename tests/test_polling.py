"""Late-DLR polling end to end: the receiver under uvicorn, the provider simulator under uvicorn,
real HTTP between them, and the simulator's own counters as the witness of what was asked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from support import (
    STANDARD_SECRET,
    AppServer,
    LiveServer,
    events,
    make_settings,
    message,
    post_status,
    query,
    wait_until,
)

from receiver.simulator.app import create_simulator
from receiver.simulator.client import SimulatorClient
from receiver.simulator.config import Accounts, SimConfig

ACCOUNTS = Accounts()
QUIET = {"duplicate": 0, "reorder": 0, "late_sent": 0, "drop_final": 0, "drop_all": 1}
PROVIDERS = ("twilio", "telecom23", "mesms")


@dataclass
class Call:
    """One provider API request the simulator took: when it came and when its answer started,
    on this process's monotonic clock (the receivers under test run in this process too, so
    their pauses are measured on the same clock), and the answer's status."""

    path: str
    arrived: float
    answered: float = float("inf")
    status: int = 0


class Recorder:
    """ASGI middleware in front of the simulator noting every provider API request, so a test
    can check the time between a refusal and the next try (a lower bound, which load only
    makes longer) instead of counting tries in a window of real time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: list[Call] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim/"):
            await self.app(scope, receive, send)
            return
        call = Call(scope["path"], time.monotonic())
        self.calls.append(call)

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.answered, call.status = time.monotonic(), message["status"]
            await send(message)

        await self.app(scope, receive, answer)

    def to(self, part: str) -> list[Call]:
        """The requests whose path has `part` in it, in the order they came."""
        return [c for c in self.calls if part in c.path]


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder(create_simulator(SimConfig(seed=5)))


@pytest.fixture(scope="module")
def sim_server(recorder: Recorder) -> Iterator[AppServer]:
    server = AppServer(recorder).start()
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server: AppServer, recorder: Recorder) -> Iterator[SimulatorClient]:
    """The shared simulator, reset: every DLR dropped (only polling can learn the outcome),
    messages final a few simulated seconds after they are made, at 1000x speed."""
    recorder.calls.clear()
    with SimulatorClient(sim_server.base_url) as client:
        client.reset(seed=7)
        client.configure(
            speed=1000,
            api_latency=0,
            realism=QUIET | {"delivered": 0.8},
            timing={"sent_after": [0.1, 0.5], "final_after": [1, 5]},
        )
        yield client
        client.clear_faults()


def poll_env(sim: SimulatorClient) -> dict[str, str]:
    return {
        "TWILIO_API_BASE": sim.twilio_api_base,
        "TWILIO_ACCOUNT_SID": ACCOUNTS.twilio_account_sid,
        "TELECOM23_API_BASE": sim.telecom23_api_base,
        "TELECOM23_API_KEY": ACCOUNTS.telecom23_api_key,
        "MESMS_API_BASE": sim.mesms_api_base,
        "MESMS_API_KEY": ACCOUNTS.mesms_api_key,
        **{f"{p.upper()}_POLL_RATE": "500" for p in PROVIDERS},
    }


@pytest.fixture
def start_receiver(tmp_path: Path, sim: SimulatorClient) -> Iterator[Callable[..., LiveServer]]:
    """Receivers with polling on, their status clients pointed at the simulator, and the
    grace and backoffs in fractions of a second instead of minutes. The lease and the request
    time-out stay long: a loaded machine must not see a poll time out, or a lease run out
    while its answer is being recorded, where the test expects each message asked once."""
    servers: list[LiveServer] = []

    def start(*, database: Path | None = None, **overrides: Any) -> LiveServer:
        env = poll_env(sim) | overrides.pop("provider_env", {})
        timings: dict[str, Any] = {
            "polling": True,
            "dlr_grace": 0.2,
            "poll_backoff": 0.2,
            "poll_backoff_max": 0.5,
            "poll_interval": 0.1,
            "poll_lease": 30.0,
            "poll_timeout": 10.0,
        }
        settings = make_settings(
            tmp_path,
            twilio_auth_token=ACCOUNTS.twilio_auth_token,
            provider_env=env,
            **(timings | overrides),
        )
        if database is not None:
            settings = settings.replace(database=str(database))
        server = LiveServer(settings).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def register(server: LiveServer, provider: str, ids: list[str]) -> None:
    with server.client() as client:
        for start in range(0, len(ids), 1000):
            items = [{"provider": provider, "message_id": i} for i in ids[start : start + 1000]]
            response = client.post("/v1/messages", json=items)
            assert response.status_code in (200, 201), response.text


def all_final(server: LiveServer, provider: str, count: int) -> bool:
    with server.client() as client:
        stats = client.get("/v1/stats", params={"provider": provider}).json()
    return bool(stats["total"] == count and stats["final"] == count)


def metric(server: LiveServer, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    with server.client() as client:
        text = client.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            series, value = line.rsplit(" ", 1)
            got = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if got == want:
                return float(value)
    return 0.0


def readyz_polling(server: LiveServer) -> dict[str, Any]:
    with server.client() as client:
        body: dict[str, Any] = client.get("/readyz").json()["polling"]
    return body


# -- a dropped DLR is recovered, for each provider ---------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_dropped_dlr_is_recovered_by_polling(
    provider: str, sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    server = start_receiver()
    ids = sim.create_messages(provider, 20, per_send=10)
    register(server, provider, ids)
    wait_until(lambda: all_final(server, provider, 20), what=f"20 {provider} messages final")

    truth = {m["message_id"]: m["final"] for m in sim.messages(provider=provider)}
    for message_id in ids:
        found = message(server, message_id, provider)
        assert found["status"] == truth[message_id]["status"]
        assert found["provider_status"] == truth[message_id]["provider_status"]
        assert found["final_via"] == "poll"
        assert found["poll"]["attempts"] >= 1 and found["poll"]["last_result"] == "ok"
        assert found["poll"]["next_poll_at"] is None  # final: out of the queue
    assert metric(server, "receiver_poll_requests_total", provider=provider, result="ok") >= 1
    with server.client() as client:
        history = client.get(f"/v1/messages/{ids[0]}/events").json()["events"]
    assert history[-1]["source"] == "poll" and history[-1]["outcome"] == "applied"
    if provider == "mesms":  # 20 recipients in 2 sends: one sweep per send, not per recipient
        assert sim.stats()["requests"].get("mesms.recipients", 0) <= 2 * max(
            m["poll"]["attempts"] for m in (message(server, i, provider) for i in ids)
        )


def test_every_poll_series_of_the_polled_providers_is_there_at_zero(
    start_receiver: Callable[..., LiveServer],
) -> None:
    server = start_receiver(provider_env={"TELECOM23_API_KEY": ""})  # not polled
    with server.client() as client:
        text = client.get("/metrics").text
    for provider in ("twilio", "mesms"):
        for result in ("ok", "not_found", "rate_limited", "unauthorized", "unavailable"):
            series = f'receiver_poll_requests_total{{provider="{provider}",result="{result}"}}'
            assert f"{series} 0.0" in text
    assert 'receiver_poll_requests_total{provider="telecom23"' not in text
    assert 'receiver_poll_due{provider="telecom23"} 0.0' in text  # its queue still times out


# -- callbacks and polls together --------------------------------------------------------------


def test_a_late_callback_after_a_poll_still_moves_the_message_on(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    sim.configure(speed=1, timing={"sent_after": [0, 0], "final_after": [86_400, 86_400]})
    # A long backoff: no second poll is on the wire when the callback lands. One request at a
    # time: a sweep's polls run in the order claimed (soonest due first).
    server = start_receiver(
        poll_backoff=10, poll_backoff_max=10, provider_env={"TWILIO_POLL_CONCURRENCY": "1"}
    )
    sid, witness = sim.create_messages("twilio", 2)
    register(server, "twilio", [sid])
    wait_until(
        lambda: (
            message(server, sid)["final_via"] is None
            and message(server, sid)["status"] != "registered"
        ),
        what="the poll's interim status",
    )
    polled = message(server, sid)
    assert polled["final"] is False and polled["poll"]["next_poll_at"] is not None
    assert polled["status"] in ("queued", "sending", "sent")

    with httpx.Client(timeout=10) as client:
        response = post_status(
            client, server.callback_url, sid, "delivered", token=ACCOUNTS.twilio_auth_token
        )
    assert response.status_code == 204
    after = message(server, sid)
    assert (after["status"], after["final_via"]) == ("delivered", "callback")
    assert after["poll"]["next_poll_at"] is None
    asked = sim.message(sid)["status_requests"]
    # Had the final message stayed in the queue, it would fall due (its grace restarted by the
    # callback) before a message registered now: the sweep that polls this one would have
    # asked about it first.
    register(server, "twilio", [witness])
    wait_until(lambda: message(server, witness)["poll"]["attempts"] >= 1, what="a later poll")
    assert sim.message(sid)["status_requests"] == asked  # nothing more asked about it


def test_a_callback_during_a_poll_is_not_undone_by_the_older_polled_status(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer], recorder: Recorder
) -> None:
    # The provider still says "sent" and takes 2 s to say it; the DLR arrives meanwhile.
    sim.configure(
        speed=1, api_latency=2.0, timing={"sent_after": [0, 0], "final_after": [86_400, 86_400]}
    )
    server = start_receiver()
    (sid,) = sim.create_messages("twilio", 1)
    register(server, "twilio", [sid])
    wait_until(lambda: sim.message(sid)["status_requests"] >= 1, what="the first poll")
    with httpx.Client(timeout=30) as client:
        response = post_status(
            client, server.callback_url, sid, "delivered", token=ACCOUNTS.twilio_auth_token
        )
    assert response.status_code == 204
    called_back = time.monotonic()
    wait_until(
        lambda: any(e["source"] == "poll" for e in events(server, sid)), what="the poll's answer"
    )
    (poll,) = recorder.to(sid)
    assert poll.answered > called_back, "the test's premise: the callback came during the poll"

    found = message(server, sid)
    assert (found["status"], found["final_via"]) == ("delivered", "callback")
    polled = [e for e in events(server, sid) if e["source"] == "poll"]
    assert len(polled) == 1 and polled[0]["provider_status"] in ("queued", "sending", "sent")
    assert polled[0]["outcome"] == "regression"  # kept in the history, changed nothing


# -- respecting the provider -------------------------------------------------------------------


def test_429_retry_after_is_waited_out(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer], recorder: Recorder
) -> None:
    # The provider keeps answering 429 "retry after 1 s" until told otherwise. One request at
    # a time, so every request after a refusal is one the receiver sent knowing of it.
    sim.fault("telecom23", "rate_limit", count=10_000, retry_after=1)
    server = start_receiver(
        provider_env={"TELECOM23_POLL_RATE": "5", "TELECOM23_POLL_CONCURRENCY": "1"}
    )
    ids = sim.create_messages("telecom23", 5)
    register(server, "telecom23", ids)
    limited = {"provider": "telecom23", "result": "rate_limited"}
    wait_until(lambda: metric(server, "receiver_poll_requests_total", **limited) >= 1, what="429")
    state = readyz_polling(server)["telecom23"]
    assert state["state"] == "paused" and "rate limited" in state["detail"]
    wait_until(lambda: len(recorder.to("/sms/status/")) >= 3, what="two tries after the first")

    sim.clear_faults("telecom23")
    wait_until(lambda: all_final(server, "telecom23", 5), what="recovery after Retry-After")
    tries = recorder.to("/sms/status/")
    refused = [c for c in tries if c.status == 429]
    assert len(refused) >= 3 and {c.status for c in tries} == {429, 200}
    for before, after in pairwise(tries):
        if before.status == 429:  # asked again only once the Retry-After had passed
            assert after.arrived - before.answered >= 1.0, (before, after)
    assert metric(server, "receiver_poll_requests_total", **limited) == len(refused)
    assert sim.stats()["responses"]["telecom23.status"]["429"] == len(refused)
    assert readyz_polling(server)["telecom23"]["state"] == "polling"
    assert all(message(server, i)["poll"]["last_result"] == "ok" for i in ids)


def test_an_outage_is_backed_off_then_recovered(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer], recorder: Recorder
) -> None:
    # The next two requests fail, whenever they come. One request at a time, so every try
    # after a failure is one the receiver sent knowing of it.
    sim.fault("mesms", "outage", count=2, status=503)
    server = start_receiver(provider_env={"MESMS_POLL_CONCURRENCY": "1"})
    ids = sim.create_messages("mesms", 30, per_send=10)
    register(server, "mesms", ids)
    wait_until(lambda: all_final(server, "mesms", 30), what="recovery after the outage")

    failed = metric(server, "receiver_poll_requests_total", provider="mesms", result="unavailable")
    assert failed == 2
    tries = recorder.to("/recipients")
    assert [c.status for c in tries[:3]] == [503, 503, 200]
    # Backed off: about 1 s, then 2 s, between tries (jittered to 0.8 and 1.6 s at the least),
    # not a request per poll interval.
    assert tries[1].arrived - tries[0].answered >= 0.8, tries
    assert tries[2].arrived - tries[1].answered >= 1.6, tries
    assert metric(server, "receiver_poll_requests_total", provider="mesms", result="ok") >= 3
    assert readyz_polling(server)["mesms"]["state"] == "polling"


def test_401_stops_polling_that_provider_and_says_so_in_readyz(
    sim: SimulatorClient,
    start_receiver: Callable[..., LiveServer],
    capfd: pytest.CaptureFixture[str],
) -> None:
    sim.fault("twilio", "unauthorized")
    server = start_receiver()
    ids = sim.create_messages("twilio", 3)
    register(server, "twilio", ids)
    wait_until(
        lambda: readyz_polling(server)["twilio"]["state"] == "stopped", what="polling stopped"
    )
    assert "credentials refused" in readyz_polling(server)["twilio"]["detail"]
    # Every claimed message settled: no request of that sweep is still on the wire.
    wait_until(
        lambda: all(message(server, i)["poll"]["last_result"] == "stopped" for i in ids),
        what="the sweep settled",
    )
    asked = sim.stats()["requests"].get("twilio.status", 0)
    # The requests already in flight when the first refusal came back, and no more.
    assert 1 <= asked <= 3
    # A message registered now is claimed by a later sweep, and settled without a request.
    witness = sim.create_messages("twilio", 1)
    register(server, "twilio", witness)
    wait_until(lambda: message(server, witness[0])["poll"]["last_result"] == "stopped")
    assert sim.stats()["requests"].get("twilio.status", 0) == asked
    assert readyz_polling(server)["telecom23"]["state"] == "polling"  # only twilio stopped
    with server.client() as client:
        assert client.get("/readyz").status_code == 200  # still takes callbacks
    assert all(message(server, i)["status"] == "registered" for i in ids)
    assert (
        metric(server, "receiver_poll_requests_total", provider="twilio", result="unauthorized")
        == asked
    )
    assert capfd.readouterr().out.count("polling_stopped") == 1  # the error is logged once


# -- the maximum age ---------------------------------------------------------------------------


def test_max_age_gives_unconfirmed_with_the_reason_and_a_later_dlr_still_counts(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    sim.configure(speed=1, timing={"sent_after": [0, 0], "final_after": [86_400, 86_400]})
    # One request at a time: a sweep's polls run in the order claimed (soonest due first).
    server = start_receiver(poll_max_age=1.5, provider_env={"TWILIO_POLL_CONCURRENCY": "1"})
    sid, witness = sim.create_messages("twilio", 2)
    register(server, "twilio", [sid])
    wait_until(lambda: message(server, sid)["final"], what="the give-up")

    found = message(server, sid)
    assert (found["status"], found["final_via"]) == ("unconfirmed", "timeout")
    attempts = found["poll"]["attempts"]
    assert attempts >= 1 and found["poll"]["next_poll_at"] is None
    assert found["final_reason"] == (
        f"no final status within 1.5s: {attempts} poll(s), last result ok"
    )
    asked = sim.message(sid)["status_requests"]
    assert asked == attempts
    # Had it stayed in the queue it would be due at once, before a message registered now:
    # the sweep that polls this one would have asked about it first.
    register(server, "twilio", [witness])
    wait_until(lambda: message(server, witness)["poll"]["attempts"] >= 1, what="a later poll")
    assert sim.message(sid)["status_requests"] == asked  # given up: no more polls

    with httpx.Client(timeout=10) as client:
        response = post_status(
            client, server.callback_url, sid, "delivered", token=ACCOUNTS.twilio_auth_token
        )
    assert response.status_code == 204
    assert message(server, sid)["status"] == "delivered"


def test_a_provider_without_a_status_endpoint_times_out_without_a_request(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    server = start_receiver(poll_max_age=0.5, provider_env={"TELECOM23_API_KEY": ""})
    register(server, "telecom23", ["api_42_never_asked"])
    wait_until(lambda: message(server, "api_42_never_asked")["final"], what="the time-out")
    found = message(server, "api_42_never_asked")
    assert found["status"] == "unconfirmed" and "last result no_client" in found["final_reason"]
    assert found["poll"]["attempts"] == 0
    assert sim.stats()["requests"].get("telecom23.status", 0) == 0
    assert readyz_polling(server)["telecom23"]["state"] == "not_configured"


# -- two schedulers, one database --------------------------------------------------------------


def test_two_schedulers_on_one_database_never_poll_the_same_message_at_once(
    tmp_path: Path, sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    # Slow answers keep claims in flight long enough for the two to overlap.
    sim.configure(api_latency=0.05)
    database = tmp_path / "shared.db"
    first = start_receiver(database=database, poll_batch=20)
    second = start_receiver(database=database, poll_batch=20)
    ids = sim.create_messages("twilio", 200)
    register(first, "twilio", ids)
    wait_until(lambda: all_final(first, "twilio", 200), what="200 messages final")

    stats = sim.stats()
    assert stats["max_concurrent_polls"] == 1
    asked = {m["message_id"]: m["status_requests"] for m in sim.messages(provider="twilio")}
    # Final at the first answer, so one request per message: none was asked twice.
    assert sorted(set(asked.values())) == [1]
    assert stats["requests"]["twilio.status"] == 200
    shares = [
        metric(s, "receiver_poll_requests_total", provider="twilio", result="ok")
        for s in (first, second)
    ]
    assert sum(shares) == 200 and min(shares) > 0, shares  # both did part of the work


def test_a_lease_shorter_than_a_paced_batch_hands_the_rest_back_instead_of_overlapping(
    tmp_path: Path, sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    # 4 requests a second and a 6 s lease: a 50-message batch cannot finish under one lease,
    # so a claim takes what the rate gets through in half the lease (12), and any of it not
    # asked when the lease runs short is handed back. Had the first claimed all 30, it would
    # still be asking after its lease ran out, when the second may claim them too.
    sim.configure(api_latency=0.05)
    database = tmp_path / "shared.db"
    slow: dict[str, Any] = {
        "provider_env": {"TWILIO_POLL_RATE": "4"},
        "poll_batch": 50,
        "poll_lease": 6.0,
        "poll_timeout": 3.0,
    }
    ids = sim.create_messages("twilio", 30)
    registrar = start_receiver(database=database, polling=False)
    register(registrar, "twilio", ids)
    due = {"provider": "twilio"}
    wait_until(lambda: metric(registrar, "receiver_poll_due", **due) == 30, what="all 30 due")
    first = start_receiver(database=database, **slow)
    leased = "SELECT count(*) FROM messages WHERE poll_lease IS NOT NULL"
    wait_until(lambda: query(first, leased) != [(0,)], what="the first claim")
    second = start_receiver(database=database, **slow)
    wait_until(lambda: all_final(first, "twilio", 30), what="30 final")

    stats = sim.stats()
    assert stats["max_concurrent_polls"] == 1
    assert stats["requests"]["twilio.status"] == 30  # each message asked once, by one of them
    shares = [
        metric(s, "receiver_poll_requests_total", provider="twilio", result="ok")
        for s in (first, second)
    ]
    assert sum(shares) == 30 and min(shares) > 0, shares  # both did part of the work


def test_two_schedulers_never_sweep_one_mesms_send_at_once(
    tmp_path: Path, sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    # Batches of 10 in sends of 100: without whole-send claims, both would sweep each send.
    sim.configure(api_latency=0.2)
    database = tmp_path / "shared.db"
    first = start_receiver(database=database, poll_batch=10)
    start_receiver(database=database, poll_batch=10)
    ids = sim.create_messages("mesms", 200, per_send=100)
    register(first, "mesms", ids)
    wait_until(lambda: all_final(first, "mesms", 200), what="200 final")
    stats = sim.stats()
    assert stats["max_concurrent_polls"] == 1
    assert stats["requests"]["mesms.recipients"] == 2  # one sweep per send


def test_a_send_larger_than_a_batch_is_swept_once_not_once_per_batch(
    tmp_path: Path, sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    # Recipients stay 'sent' for a day: every poll finds them non-final.
    sim.configure(speed=1, timing={"sent_after": [0, 0], "final_after": [86_400, 86_400]})
    ids = sim.create_messages("mesms", 5000, per_send=5000)
    # The whole send registered (5 requests) before polling starts. Recipients registered a
    # grace after the first sweep would rightly have a sweep of their own.
    database = tmp_path / "send.db"
    register(start_receiver(database=database, polling=False), "mesms", ids)
    server = start_receiver(database=database, poll_batch=500, poll_backoff=30, poll_backoff_max=60)
    # Every recipient polled and out of its lease: a sweep per batch of 500 would have made
    # its requests before the last batch was settled.
    wait_until(
        lambda: (
            query(
                server,
                "SELECT count(*) FROM messages WHERE provider = 'mesms' "
                "AND poll_attempts = 1 AND poll_lease IS NULL",
            )
            == [(5000,)]
        ),
        what="every recipient polled",
    )
    assert sim.stats()["requests"]["mesms.recipients"] == 5  # 5 pages of 1,000, once
    polled = message(server, ids[-1])["poll"]
    assert polled["attempts"] == 1 and polled["next_poll_at"] is not None


# -- what must not stall the queue -------------------------------------------------------------


def test_a_sent_time_in_year_9999_is_polled_and_settled_not_stuck(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    server = start_receiver()
    (sid,) = sim.create_messages("twilio", 1)
    with server.client() as client:
        response = client.post(
            "/v1/messages",
            json={"provider": "twilio", "message_id": sid, "sent_at": "9999-12-31T00:00:00Z"},
        )
    assert response.status_code == 201
    # Its grace runs from when it was registered, not from the year 9999.
    with server.client() as client:
        client.post("/v1/messages", json={"provider": "twilio", "message_id": sid})
    wait_until(lambda: message(server, sid)["final"], what="the year-9999 message settled")
    assert message(server, sid)["final_via"] == "poll"


def test_a_day_long_retry_after_does_not_hold_back_the_give_up(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    sim.fault("twilio", "rate_limit", count=10_000, retry_after=86_400)
    server = start_receiver(poll_max_age=2.0)
    ids = sim.create_messages("twilio", 3)
    register(server, "twilio", ids)
    wait_until(lambda: all_final(server, "twilio", 3), what="the give-up during the pause")
    assert {message(server, i)["status"] for i in ids} == {"unconfirmed"}
    reasons = [message(server, i)["final_reason"] for i in ids]
    assert all(r.startswith("no final status within 2s: ") for r in reasons), reasons
    # The pause held: only the requests already on the wire when the first 429 came back.
    assert sim.stats()["requests"]["twilio.status"] <= 3
    assert readyz_polling(server)["twilio"]["state"] == "paused"


# -- me-sms: one sweep per send ----------------------------------------------------------------


def test_10000_overdue_mesms_recipients_in_100_sends_cost_about_100_sweeps(
    sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    ids = sim.create_messages("mesms", 10_000, per_send=100)
    server = start_receiver(dlr_grace=0.5, poll_batch=1000)
    register(server, "mesms", ids)
    wait_until(lambda: all_final(server, "mesms", 10_000), timeout=60, what="10,000 final")

    requests = sim.stats()["requests"]["mesms.recipients"]
    assert 100 <= requests <= 110, requests  # one page per send, not 10,000 calls


# -- receiver poll --once ----------------------------------------------------------------------


def command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `receiver` command, run as a user (or cron) would."""
    receiver = str(Path(sys.executable).parent / "receiver")
    return subprocess.run([receiver, *args], env=env, capture_output=True, text=True, timeout=60)


def test_poll_once_from_the_command_line_settles_what_is_due(
    tmp_path: Path, sim: SimulatorClient, start_receiver: Callable[..., LiveServer]
) -> None:
    # A receiver that does not poll takes the registrations; the command does the polling.
    server = start_receiver(polling=False, dlr_grace=0.01)
    ids = sim.create_messages("telecom23", 5)
    register(server, "telecom23", ids)
    due = {"provider": "telecom23"}
    wait_until(lambda: metric(server, "receiver_poll_due", **due) == 5, what="all five due")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RECEIVER_DATABASE": server.settings.database,
        "RECEIVER_LOG_LEVEL": "warning",
        **poll_env(sim),
    }
    done = command(env, "poll", "--once")
    assert done.returncode == 0, done.stderr
    assert "telecom23: 5 due, 5 asked, 5 changed, 0 given up, 0 deferred; polling" in done.stdout
    assert all(message(server, i)["final_via"] == "poll" for i in ids)

    again = command(env, "poll", "--once")
    assert again.returncode == 0 and "telecom23: 0 due, 0 asked" in again.stdout
    assert sim.stats()["requests"]["telecom23.status"] == 5  # final ones are not asked again

    # Refused credentials fail the run, so a cron job notices.
    sim.fault("telecom23", "unauthorized")
    register(server, "telecom23", ["api_42_refused"])
    wait_until(lambda: metric(server, "receiver_poll_due", **due) == 1, what="the new one due")
    refused = command(env, "poll", "--once")
    assert refused.returncode == 1
    assert "telecom23: 1 due, 0 asked" in refused.stdout
    assert "stopped (credentials refused" in refused.stdout
    usage = command(env, "poll")
    assert usage.returncode == 2 and "--once" in usage.stderr


def test_a_source_removed_from_the_settings_still_has_its_messages_time_out(
    tmp_path: Path, start_receiver: Callable[..., LiveServer]
) -> None:
    database = tmp_path / "kept.db"
    acme = {"STANDARD_WEBHOOK_SECRETS": f"acme:{STANDARD_SECRET}"}
    before = start_receiver(database=database, provider_env=acme, polling=False)
    register(before, "acme", ["acme-1"])
    before.stop()

    after = start_receiver(database=database, poll_max_age=0.5)  # acme is gone
    wait_until(lambda: message(after, "acme-1")["final"], what="the orphan's time-out")
    found = message(after, "acme-1")
    assert (found["status"], found["final_via"]) == ("unconfirmed", "timeout")
    assert readyz_polling(after)["acme"]["state"] == "not_configured"
