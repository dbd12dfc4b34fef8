"""Registration (POST /v1/messages) beyond its basic shape: the fields it allows, the account a
message was sent from, and a sent time already older than the maximum age (warned about, and
counted from when the receiver first heard of the message so it is polled before it is given
up). Against the real server; the polling case also against the provider simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    TWILIO_ACCOUNT,
    AppServer,
    LiveServer,
    assert_error,
    make_settings,
    new_sid,
    post_status,
    wait_until,
)

from receiver.engine import format_time, parse_time
from receiver.polling.policy import give_up_from
from receiver.simulator.app import create_simulator
from receiver.simulator.client import SimulatorClient
from receiver.simulator.config import Accounts, SimConfig

ALLOWED = [
    "account",
    "deadline",
    "from",
    "message_id",
    "metadata",
    "parts",
    "provider",
    "sent_at",
    "to",
]
OTHER_ACCOUNT = "AC" + "ab" * 16
THIRD_ACCOUNT = "AC" + "cd" * 16
MAX_AGE = 72 * 3600.0  # RECEIVER_POLL_MAX_AGE's default


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def ago(seconds: float) -> str:
    return format_time(datetime.now(UTC) - timedelta(seconds=seconds))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A default server (RECEIVER_POLL_MAX_AGE 72h, polling off) for tests on their own ids."""
    server = LiveServer(make_settings(tmp_path_factory.mktemp("registration"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(shared: LiveServer) -> Iterator[httpx.Client]:
    with shared.client() as c:
        yield c


def stored(client: httpx.Client, message_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(client.get(f"/v1/messages/{message_id}"))
    return found


# -- the fields a registration takes -----------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_an_unknown_field_is_refused_with_the_allowed_fields_listed(
    client: httpx.Client, batch: bool
) -> None:
    item = {"provider": "twilio", "message_id": new_sid(), "status": "delivered"}
    body: Any = [item] if batch else item
    error = assert_error(client.post("/v1/messages", json=body), 400, "invalid_message")
    assert error["details"]["field"] == "status"
    assert error["details"]["allowed"] == ALLOWED
    assert all(name in error["message"] for name in ALLOWED), error["message"]


def test_an_unknown_key_beside_messages_is_refused_naming_messages(client: httpx.Client) -> None:
    body = {"messages": [{"provider": "twilio", "message_id": new_sid()}], "dry_run": True}
    error = assert_error(client.post("/v1/messages", json=body), 400, "invalid_message")
    assert error["details"] == {"field": "dry_run", "allowed": ["messages"]}


# -- the account a message was sent from -------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "message_id", "account"),
    [
        ("twilio", "SM" + "1" * 32, OTHER_ACCOUNT),
        ("twilio", "SM" + "2" * 32, "AC" + "AB" * 16),  # hex either case, as Twilio's SIDs
        ("telecom23", "api_42_1_feed", "shop-eu.1"),
        ("mesms", "0f8fad5b-d9cb-469f-a165-70867728950e:66812345678", "x" * 64),
    ],
)
def test_a_registration_keeps_the_account_it_names(
    client: httpx.Client, provider: str, message_id: str, account: str
) -> None:
    message_id = f"{message_id}-{new_sid()}" if provider != "mesms" else message_id
    body = {"provider": provider, "message_id": message_id, "account": account}
    answer = ok(client.post("/v1/messages", json=body), 201)
    assert answer["created"] is True
    found = ok(client.get(f"/v1/messages/{message_id}", params={"provider": provider}))
    assert found["account"] == account


@pytest.mark.parametrize(
    ("provider", "account"),
    [
        pytest.param("twilio", "AC123", id="twilio-too-short"),
        pytest.param("twilio", "AC" + "0" * 33, id="twilio-too-long"),
        pytest.param("twilio", "SM" + "0" * 32, id="twilio-a-message-sid"),
        pytest.param("twilio", "AC" + "g" * 32, id="twilio-not-hex"),
        pytest.param("twilio", " AC" + "0" * 32, id="twilio-padded"),
        pytest.param("twilio", "my-subaccount", id="twilio-a-label"),
        pytest.param("telecom23", "x" * 65, id="other-too-long"),
        pytest.param("telecom23", "   ", id="other-blank"),
        pytest.param("mesms", "", id="other-empty"),
        pytest.param("mesms", 42, id="other-a-number"),
        pytest.param("twilio", ["AC" + "0" * 32], id="twilio-a-list"),
    ],
)
def test_an_account_of_the_wrong_shape_is_refused(
    client: httpx.Client, provider: str, account: Any
) -> None:
    message_id = new_sid()
    body = [
        {"provider": "twilio", "message_id": new_sid()},
        {"provider": provider, "message_id": message_id, "account": account},
    ]
    error = assert_error(client.post("/v1/messages", json=body), 400, "invalid_message")
    assert error["details"] == {"index": 1, "field": "account"}
    assert_error(client.get(f"/v1/messages/{message_id}"), 404, "message_not_found")


def test_a_registrations_account_fills_or_corrects_and_a_callbacks_only_fills(
    shared: LiveServer, client: httpx.Client
) -> None:
    """A callback's AccountSid fills an empty account; an explicit registration's account fills
    or corrects it; a registration without one leaves it as it is."""
    first_heard_by_callback = new_sid()
    response = post_status(client, shared.callback_url, first_heard_by_callback, "sent")
    assert response.status_code == 204
    assert stored(client, first_heard_by_callback)["account"] == TWILIO_ACCOUNT

    registration = {"provider": "twilio", "message_id": first_heard_by_callback}
    ok(client.post("/v1/messages", json=registration | {"account": OTHER_ACCOUNT}))
    assert stored(client, first_heard_by_callback)["account"] == OTHER_ACCOUNT  # corrected
    ok(client.post("/v1/messages", json=registration))
    assert stored(client, first_heard_by_callback)["account"] == OTHER_ACCOUNT  # left alone
    response = post_status(
        client, shared.callback_url, first_heard_by_callback, "delivered", AccountSid=THIRD_ACCOUNT
    )
    assert response.status_code == 204
    found = stored(client, first_heard_by_callback)
    assert (found["status"], found["account"]) == ("delivered", OTHER_ACCOUNT)

    registered_without = new_sid()
    body = {"provider": "twilio", "message_id": registered_without}
    ok(client.post("/v1/messages", json=body), 201)
    assert stored(client, registered_without)["account"] is None
    response = post_status(client, shared.callback_url, registered_without, "sent")
    assert response.status_code == 204
    assert stored(client, registered_without)["account"] == TWILIO_ACCOUNT  # filled


# -- a sent time older than the maximum age ----------------------------------------------------


def test_the_give_up_age_starts_at_sent_at_unless_that_is_older_than_the_max_age() -> None:
    """The rule the scheduler and the registration's warnings share, as plain calls."""
    heard = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert give_up_from(heard, None, MAX_AGE) == heard
    assert give_up_from(heard, heard - hour, MAX_AGE) == heard - hour
    assert give_up_from(heard, heard - 72 * hour, MAX_AGE) == heard - 72 * hour  # just within
    assert give_up_from(heard, heard - 73 * hour, MAX_AGE) == heard  # older: from when heard
    assert give_up_from(heard, heard + hour, MAX_AGE) == heard  # a future sent time: not believed


def test_a_registration_sent_longer_ago_than_the_max_age_warns_and_a_recent_one_does_not(
    client: httpx.Client,
) -> None:
    old, recent = new_sid(), new_sid()
    old_sent_at = ago(7 * 86400)
    answer = ok(
        client.post(
            "/v1/messages",
            json={"provider": "twilio", "message_id": old, "sent_at": old_sent_at},
        ),
        201,
    )
    (warning,) = answer["warnings"]
    assert "sent_at" in warning and "RECEIVER_POLL_MAX_AGE (3d)" in warning
    created_at = stored(client, old)["created_at"]
    assert created_at in warning  # the give-up age counts from here
    assert format_time(parse_time(created_at) + timedelta(seconds=MAX_AGE)) in warning
    assert stored(client, old)["sent_at"] == old_sent_at  # the app's fact is kept as it said

    answer = ok(
        client.post(
            "/v1/messages",
            json={"provider": "twilio", "message_id": recent, "sent_at": ago(3600)},
        ),
        201,
    )
    assert "warnings" not in answer  # nothing to say: no key, as before


def test_a_batch_warns_per_item(client: httpx.Client) -> None:
    ids = [new_sid() for _ in range(3)]
    batch = [
        {"provider": "twilio", "message_id": ids[0], "sent_at": ago(60)},
        {"provider": "twilio", "message_id": ids[1], "sent_at": ago(30 * 86400)},
        {"provider": "twilio", "message_id": ids[2]},
    ]
    answer = ok(client.post("/v1/messages", json={"messages": batch}))
    assert answer["created"] == 3
    assert set(answer) == {"messages", "created"}
    results = answer["messages"]
    assert [r["message_id"] for r in results] == ids
    assert "warnings" not in results[0] and "warnings" not in results[2]
    assert len(results[1]["warnings"]) == 1 and "RECEIVER_POLL_MAX_AGE" in results[1]["warnings"][0]


def test_an_old_sent_at_for_a_message_already_final_is_not_warned_about(
    shared: LiveServer, client: httpx.Client
) -> None:
    """A final message is never given up, so there is nothing to warn about."""
    message_id = new_sid()
    assert post_status(client, shared.callback_url, message_id, "delivered").status_code == 204
    body = {"provider": "twilio", "message_id": message_id, "sent_at": ago(7 * 86400)}
    answer = ok(client.post("/v1/messages", json=body))
    assert answer["status"] == "delivered" and "warnings" not in answer


def test_an_old_sent_at_for_a_message_first_heard_by_callback_counts_from_that_callback(
    shared: LiveServer, client: httpx.Client
) -> None:
    message_id = new_sid()
    assert post_status(client, shared.callback_url, message_id, "sent").status_code == 204
    heard = stored(client, message_id)["created_at"]
    body = {"provider": "twilio", "message_id": message_id, "sent_at": ago(7 * 86400)}
    (warning,) = ok(client.post("/v1/messages", json=body))["warnings"]
    assert heard in warning


def test_a_sent_at_that_puts_a_known_message_past_its_age_warns_it_is_given_up_next(
    start_server: Callable[..., LiveServer],
) -> None:
    """Within the maximum age of when the receiver first heard of the message, but past it by
    the time of the registration: the message is given up at its next poll."""
    server = start_server(poll_max_age=2.0)
    message_id = new_sid()
    with server.client() as client:
        assert post_status(client, server.callback_url, message_id, "sent").status_code == 204
        heard = parse_time(stored(client, message_id)["created_at"])
        sent_at = heard - timedelta(seconds=1.5)  # less than the 2 s before it was first heard
        # Its time-out (sent_at + 2 s) is half a second after it was first heard: wait until
        # the clock has passed it, so the registration comes after it.
        wait_until(lambda: datetime.now(UTC) >= heard + timedelta(seconds=1), what="the time-out")
        body = {"provider": "twilio", "message_id": message_id, "sent_at": format_time(sent_at)}
        (warning,) = ok(client.post("/v1/messages", json=body))["warnings"]
    assert "RECEIVER_POLL_MAX_AGE (2s)" in warning and "next poll" in warning


# -- ... and polled before it is given up --------------------------------------------------------


@pytest.fixture(scope="module")
def sim_server() -> Iterator[AppServer]:
    server = AppServer(create_simulator(SimConfig(seed=11))).start()
    yield server
    server.stop()


def test_a_message_registered_with_an_old_sent_at_is_polled_until_final_not_given_up(
    sim_server: AppServer, tmp_path: Path
) -> None:
    """Its give-up age counts from the registration: the first polls find it still `sent`, and
    it is polled on until the provider has its final status (every DLR is dropped). Counted
    from its sent_at, it would be given up as unconfirmed at the first of them."""
    accounts = Accounts()
    settings = make_settings(
        tmp_path,
        twilio_auth_token=accounts.twilio_auth_token,
        polling=True,
        poll_max_age=120.0,
        dlr_grace=0.2,
        poll_backoff=0.2,
        poll_backoff_max=0.5,
        poll_interval=0.1,
        poll_lease=30.0,
        poll_timeout=10.0,
        provider_env={
            "TWILIO_API_BASE": sim_server.base_url,
            "TWILIO_ACCOUNT_SID": accounts.twilio_account_sid,
            "TWILIO_POLL_RATE": "50",
        },
    )
    server = LiveServer(settings).start()
    try:
        with SimulatorClient(sim_server.base_url) as sim:
            sim.reset(seed=11)
            sim.configure(
                speed=1,
                api_latency=0,
                realism={"drop_all": 1, "delivered": 1},
                # Final some real seconds after it is made: the first polls see it `sent`.
                timing={"sent_after": [0, 0], "final_after": [4, 4]},
            )
            (message_id,) = sim.create_messages("twilio", 1)
            truth = sim.message(message_id)["final"]
        with server.client() as client:
            body = {"provider": "twilio", "message_id": message_id, "sent_at": ago(7 * 86400)}
            answer = ok(client.post("/v1/messages", json=body), 201)
            assert "RECEIVER_POLL_MAX_AGE (2m)" in answer["warnings"][0]
            found = wait_until(
                lambda: (m := stored(client, message_id))["final"] and m, what="a final status"
            )
    finally:
        server.stop()
    assert (found["status"], found["final_via"]) == (truth["status"], "poll")
    assert found["final_reason"] is None
