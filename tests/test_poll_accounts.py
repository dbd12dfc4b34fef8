"""Messages sent from a Twilio subaccount: the simulator keeps each message under the account it
was sent from, and the receiver polls a registered message under the account it names.

The simulator and the receiver both run under uvicorn on loopback, with real HTTP between them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import AppServer, LiveServer, make_settings, wait_until

from receiver.simulator.app import create_simulator
from receiver.simulator.client import SimulatorClient
from receiver.simulator.config import Accounts, SimConfig

ACCOUNTS = Accounts()
MAIN = ACCOUNTS.twilio_account_sid
SUB = ACCOUNTS.twilio_subaccount_sid
MAIN_AUTH = (MAIN, ACCOUNTS.twilio_auth_token)
SUB_AUTH = (SUB, ACCOUNTS.twilio_subaccount_token)
NO_DLRS = {"duplicate": 0, "reorder": 0, "late_sent": 0, "drop_final": 0, "drop_all": 1}


@pytest.fixture(scope="module")
def sim_server() -> Iterator[AppServer]:
    server = AppServer(create_simulator(SimConfig(seed=3))).start()
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server: AppServer) -> Iterator[SimulatorClient]:
    """The simulator, reset, fast (messages final within a few simulated seconds)."""
    with SimulatorClient(sim_server.base_url) as client:
        client.reset(seed=3)
        client.configure(
            speed=1000,
            api_latency=0,
            callbacks={"twilio": None},
            realism=NO_DLRS | {"delivered": 0.7},
            timing={"sent_after": [0.1, 0.5], "final_after": [1, 5]},
        )
        yield client


def fetch(sim: SimulatorClient, account: str, sid: str, auth: tuple[str, str]) -> httpx.Response:
    url = f"{sim.twilio_api_base}/2010-04-01/Accounts/{account}/Messages/{sid}.json"
    return httpx.get(url, auth=auth, timeout=10)


# -- the simulator's model: a message belongs to the account it was sent from ------------------


def test_the_simulator_serves_a_subaccounts_message_only_under_that_account(
    sim: SimulatorClient,
) -> None:
    (sid,) = sim.create_messages("twilio", 1, account=SUB)
    assert sim.message(sid)["account"] == SUB

    own = fetch(sim, SUB, sid, SUB_AUTH)
    assert own.status_code == 200, own.text
    assert own.json()["account_sid"] == SUB
    assert own.json()["uri"] == f"/2010-04-01/Accounts/{SUB}/Messages/{sid}.json"
    # The main account's credentials reach its subaccount's resources, as Twilio's do.
    assert fetch(sim, SUB, sid, MAIN_AUTH).json() == own.json()
    # Under the main account the message does not exist.
    missing = fetch(sim, MAIN, sid, MAIN_AUTH)
    assert (missing.status_code, missing.json()["code"]) == (404, 20404)
    # A subaccount's credentials reach nothing of the main account's; no mixing of the two.
    assert fetch(sim, MAIN, sid, SUB_AUTH).status_code == 401
    assert fetch(sim, SUB, sid, (SUB, ACCOUNTS.twilio_auth_token)).status_code == 401


def test_a_message_without_an_account_is_the_main_accounts(sim: SimulatorClient) -> None:
    (sid,) = sim.create_messages("twilio", 1)
    assert sim.message(sid)["account"] == MAIN
    assert fetch(sim, MAIN, sid, MAIN_AUTH).json()["account_sid"] == MAIN
    assert fetch(sim, SUB, sid, MAIN_AUTH).status_code == 404


def test_a_message_sent_through_the_subaccounts_api_is_the_subaccounts(
    sim: SimulatorClient,
) -> None:
    url = f"{sim.twilio_api_base}/2010-04-01/Accounts/{SUB}/Messages.json"
    form = {"To": "+15558675310", "From": "+15005550006", "Body": "hi"}
    sent = httpx.post(url, data=form, auth=SUB_AUTH, timeout=10)
    assert sent.status_code == 201, sent.text
    assert sent.json()["account_sid"] == SUB
    assert sim.message(sent.json()["sid"])["account"] == SUB


@pytest.mark.parametrize("account", ["AC" + "9" * 32, "telecom", 5])
def test_the_simulator_refuses_an_account_it_does_not_have(
    sim: SimulatorClient, account: Any
) -> None:
    response = httpx.post(
        sim.base_url + "/_sim/messages",
        json={"provider": "twilio", "count": 1, "account": account},
        timeout=10,
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    assert "account" in response.json()["error"]


def test_a_subaccounts_callbacks_carry_its_sid_and_are_signed_with_its_token(
    sim: SimulatorClient, tmp_path: Path
) -> None:
    """Accepted by a receiver that knows the subaccount's token (TWILIO_ACCOUNTS), which keeps
    the callback's AccountSid as the message's account."""
    server = LiveServer(
        make_settings(
            tmp_path,
            twilio_auth_token="not-the-subaccounts-token",
            twilio_accounts=[(SUB, ACCOUNTS.twilio_subaccount_token)],
        )
    ).start()
    try:
        sim.configure(realism={"drop_all": 0, "drop_final": 0}, callbacks={"twilio": None})
        sim.point_at_receiver(server.base_url)
        (sid,) = sim.create_messages("twilio", 1, account=SUB, outcomes={"delivered": 1})
        sim.wait_idle()
        with server.client() as client:
            found = client.get(f"/v1/messages/{sid}").json()
    finally:
        server.stop()
    assert sim.message(sid)["gave_up"] == 0
    assert (found["status"], found["account"], found["final_via"]) == (
        "delivered",
        SUB,
        "callback",
    )


# -- the receiver polls a registered message under its account ---------------------------------


CREDENTIALS = {
    # Only the main account's SID and token: they reach the subaccount's messages too.
    "main-credentials": {"TWILIO_ACCOUNT_SID": MAIN},
    # The subaccount listed with its own token: asked with that.
    "subaccount-token": {
        "TWILIO_ACCOUNT_SID": MAIN,
        "TWILIO_ACCOUNTS": f"{SUB}:{ACCOUNTS.twilio_subaccount_token}",
    },
}


@pytest.mark.parametrize("credentials", CREDENTIALS.values(), ids=CREDENTIALS.keys())
def test_a_subaccounts_message_is_polled_under_the_account_it_was_registered_with(
    sim: SimulatorClient, tmp_path: Path, credentials: dict[str, str]
) -> None:
    """Two subaccount messages whose DLRs never come: the one registered with its `account` is
    settled by polling; the one registered without it is asked about under the main account,
    which answers 404, until a registration names its account."""
    with_account, without = sim.create_messages("twilio", 2, account=SUB)
    truth = {m["message_id"]: m["final"] for m in sim.messages(provider="twilio")}
    settings = make_settings(
        tmp_path,
        twilio_auth_token=ACCOUNTS.twilio_auth_token,
        polling=True,
        dlr_grace=0.2,
        poll_backoff=0.2,
        poll_backoff_max=0.5,
        poll_interval=0.1,
        poll_lease=30.0,
        poll_timeout=10.0,
        provider_env={
            "TWILIO_API_BASE": sim.twilio_api_base,
            "TWILIO_POLL_RATE": "100",
            **credentials,
        },
    )
    server = LiveServer(settings).start()

    def found(message_id: str) -> dict[str, Any]:
        with server.client() as client:
            body: dict[str, Any] = client.get(f"/v1/messages/{message_id}").json()
        return body

    try:
        with server.client() as client:
            batch = [
                {"provider": "twilio", "message_id": with_account, "account": SUB},
                {"provider": "twilio", "message_id": without},
            ]
            assert client.post("/v1/messages", json=batch).status_code == 200
        settled = wait_until(
            lambda: (m := found(with_account))["final"] and m, what="a poll's answer"
        )
        # The other is asked about too, under the main account: 404, so it stays registered.
        asked = wait_until(
            lambda: (m := found(without))["poll"]["attempts"] >= 2 and m,
            what="two polls of the other",
        )
        assert asked["status"] == "registered" and asked["account"] is None
        assert asked["poll"]["last_result"] == "not_found"
        assert sim.stats()["responses"]["twilio.status"].get("404", 0) >= 2
        assert sim.stats()["responses"]["twilio.status"].get("401", 0) == 0

        # Registering it again with its account corrects the record; the next poll finds it.
        with server.client() as client:
            again = {"provider": "twilio", "message_id": without, "account": SUB}
            assert client.post("/v1/messages", json=again).status_code == 200
        corrected = wait_until(
            lambda: (m := found(without))["final"] and m, what="the corrected one"
        )
    finally:
        server.stop()

    for message_id, message in ((with_account, settled), (without, corrected)):
        assert (message["status"], message["provider_status"]) == (
            truth[message_id]["status"],
            truth[message_id]["provider_status"],
        )
        assert (message["final_via"], message["account"]) == ("poll", SUB)
        assert message["poll"]["last_result"] == "ok"


def test_an_account_our_credentials_cannot_reach_stops_only_its_own_messages(
    sim: SimulatorClient, tmp_path: Path
) -> None:
    """A registration naming an account that is not ours: the main account's credentials are
    refused (401) for it, and that message is treated as not found; polling of every other
    Twilio message goes on (a 401 for our own account would stop it)."""
    (ours,) = sim.create_messages("twilio", 1)
    truth = sim.message(ours)["final"]
    foreign = "SM" + "e" * 32
    settings = make_settings(
        tmp_path,
        twilio_auth_token=ACCOUNTS.twilio_auth_token,
        polling=True,
        dlr_grace=0.2,
        poll_backoff=0.2,
        poll_backoff_max=0.5,
        poll_interval=0.1,
        poll_lease=30.0,
        poll_timeout=10.0,
        provider_env={
            "TWILIO_API_BASE": sim.twilio_api_base,
            "TWILIO_POLL_RATE": "100",
            "TWILIO_ACCOUNT_SID": MAIN,
        },
    )
    server = LiveServer(settings).start()

    def found(message_id: str) -> dict[str, Any]:
        with server.client() as client:
            body: dict[str, Any] = client.get(f"/v1/messages/{message_id}").json()
        return body

    try:
        with server.client() as client:
            batch = [
                {"provider": "twilio", "message_id": foreign, "account": "AC" + "7" * 32},
                {"provider": "twilio", "message_id": ours},
            ]
            assert client.post("/v1/messages", json=batch).status_code == 200
        refused = wait_until(
            lambda: (m := found(foreign))["poll"]["attempts"] >= 2 and m, what="two polls of it"
        )
        settled = wait_until(lambda: (m := found(ours))["final"] and m, what="our message's poll")
        with server.client() as client:
            ready = client.get("/readyz").json()
    finally:
        server.stop()
    assert sim.stats()["responses"]["twilio.status"].get("401", 0) >= 2
    assert (settled["status"], settled["final_via"]) == (truth["status"], "poll")
    assert (refused["status"], refused["poll"]["last_result"]) == ("registered", "not_found")
    assert ready["polling"]["twilio"]["state"] != "stopped", ready
