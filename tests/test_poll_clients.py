"""The providers' status clients, over real HTTP against the provider simulator.

Shapes the simulator never produces (a cursor that does not advance, a body missing its status)
are served by httpx.MockTransport.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from support import WAIT, AppServer

from receiver.polling import build_clients
from receiver.polling import mesms as mesms_client
from receiver.polling.base import (
    DueMessage,
    PollAnswer,
    RateLimited,
    StatusClient,
    Unauthorized,
    Unavailable,
    retry_after_seconds,
)
from receiver.settings import Settings, SettingsError
from receiver.simulator import create_simulator
from receiver.simulator.client import SimulatorClient
from receiver.simulator.config import Accounts, SimConfig

SIM = Accounts()  # the simulator's documented fake credentials
PROVIDERS = ("twilio", "telecom23", "mesms")
# Ids no simulated provider knows, each in its provider's shape.
UNKNOWN = {
    "twilio": "SM" + "0" * 32,
    "telecom23": "api_42_1700000000000000000_0000000000000000",
    "mesms": "00000000-0000-4000-8000-000000000000:66800000000",
}
# A mix of final statuses per provider, so mapping and error codes are both exercised.
OUTCOMES = {
    "twilio": {"delivered": 1, "undelivered": 1, "failed": 1},
    "telecom23": {"DELIVRD": 1, "UNDELIV": 1, "REJECTD": 1, "EXPIRED": 1},
    "mesms": {"success": 1, "failed": 1, "invalid": 1, "timeout": 1},
}
WRONG_CREDENTIAL = {
    "twilio": "TWILIO_AUTH_TOKEN",
    "telecom23": "TELECOM23_API_KEY",
    "mesms": "MESMS_API_KEY",
}


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """The simulator in this process, so fast that every message is already final."""
    server = AppServer(create_simulator(SimConfig(seed=5, speed=1_000_000))).start()
    yield server.base_url
    server.stop()


@pytest.fixture
def sim(sim_url: str) -> Iterator[SimulatorClient]:
    with SimulatorClient(sim_url) as client:
        client.reset(seed=5)
        client.configure(api_latency=0)
        yield client


def settings_for(sim: SimulatorClient | None, **env: str) -> Settings:
    """Every provider's polling configured against the simulator, with `env`'s changes."""
    base = (
        {
            "TWILIO_API_BASE": sim.twilio_api_base,
            "TWILIO_ACCOUNT_SID": SIM.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": SIM.twilio_auth_token,
            "TELECOM23_API_BASE": sim.telecom23_api_base,
            "TELECOM23_API_KEY": SIM.telecom23_api_key,
            "MESMS_API_BASE": sim.mesms_api_base,
            "MESMS_API_KEY": SIM.mesms_api_key,
        }
        if sim is not None
        else {}
    )
    return Settings(provider_env=MappingProxyType(base | env))


def due(provider: str, message_id: str, account: str | None = None) -> DueMessage:
    return DueMessage(
        pk=1,
        provider=provider,
        message_id=message_id,
        account=account,
        status="sent",
        provider_status="sent",
        poll_attempts=0,
        created_at="2026-02-13T10:30:00.000Z",
        sent_at="2026-02-13T10:30:01.000Z",
    )


@dataclass
class Poller:
    """One provider's client and every request result it observed."""

    client: StatusClient
    timeout: float = WAIT
    transport: httpx.AsyncBaseTransport | None = None
    observed: list[str] = field(default_factory=list)

    async def __call__(self, *messages: str | DueMessage) -> list[PollAnswer]:
        asked = [m if isinstance(m, DueMessage) else due(self.client.provider, m) for m in messages]
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as http:
            return await self.client.poll(http, asked, self.observed.append)


def poller(settings: Settings, provider: str, **kwargs: Any) -> Poller:
    return Poller(build_clients(settings)[provider], **kwargs)


def status_requests(sim: SimulatorClient, provider: str) -> int:
    endpoint = "mesms.recipients" if provider == "mesms" else f"{provider}.status"
    count: int = sim.stats()["requests"].get(endpoint, 0)
    return count


# --- reading a status -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_polled_status_is_the_providers_status_mapped(
    sim: SimulatorClient, provider: str
) -> None:
    """Each answer carries what the provider's API says, mapped as its callbacks are."""
    ids = sim.create_messages(provider, 8, outcomes=OUTCOMES[provider])
    poll = poller(settings_for(sim), provider)
    answers = await poll(*ids)

    assert sorted(a.message_id for a in answers) == sorted(ids)
    assert poll.observed == ["ok"] * status_requests(sim, provider)
    for answer in answers:
        event = answer.event
        assert event is not None
        truth = sim.message(answer.message_id)
        assert (event.provider, event.source, event.dedupe_key) == (provider, "poll", None)
        assert event.provider_status == truth["final"]["provider_status"]
        assert event.status == truth["final"]["status"]
        assert event.error_code == truth["final"]["error_code"]
        assert event.to_number == truth["to"]
        assert event.event_time == truth["final"]["at"].replace("Z", ".000Z")
        assert event.body is not None
        as_sent = json.loads(event.body)
        assert event.body == json.dumps(as_sent, separators=(",", ":"))  # compact
        assert as_sent["status"] == event.provider_status
    assert {a.event.provider_status for a in answers if a.event} > {next(iter(OUTCOMES[provider]))}


@pytest.mark.anyio
async def test_twilio_asks_with_the_messages_account_and_its_own_token(
    sim: SimulatorClient,
) -> None:
    """TWILIO_ACCOUNTS gives each subaccount its token; the message's AccountSid picks one."""
    (sid,) = sim.create_messages("twilio", 1)
    other = "AC" + "1" * 32
    accounts = f"{SIM.twilio_account_sid}:{SIM.twilio_auth_token},{other}:another-token"
    settings = settings_for(
        sim, TWILIO_ACCOUNT_SID="", TWILIO_AUTH_TOKEN="main-token", TWILIO_ACCOUNTS=accounts
    )
    poll = poller(settings, "twilio")

    (answer,) = await poll(due("twilio", sid, account=SIM.twilio_account_sid))
    assert answer.event is not None and answer.event.account == SIM.twilio_account_sid
    # Two subaccounts and a message that names neither: nothing to ask, so no request.
    assert await poll(due("twilio", sid)) == [PollAnswer(sid, None)]
    assert poll.observed == ["ok"]
    assert status_requests(sim, "twilio") == 1


@pytest.mark.anyio
async def test_twilio_uses_the_only_listed_subaccount_for_a_message_without_one(
    sim: SimulatorClient,
) -> None:
    (sid,) = sim.create_messages("twilio", 1)
    accounts = f"{SIM.twilio_account_sid}:{SIM.twilio_auth_token}"
    poll = poller(settings_for(sim, TWILIO_ACCOUNT_SID="", TWILIO_ACCOUNTS=accounts), "twilio")
    (answer,) = await poll(due("twilio", sid, account="a-label-not-a-sid"))
    assert answer.event is not None and answer.event.account == SIM.twilio_account_sid


# --- what the provider does not know ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_unknown_message_is_answered_none_and_counted_not_found(
    sim: SimulatorClient, provider: str
) -> None:
    poll = poller(settings_for(sim), provider)
    assert await poll(UNKNOWN[provider]) == [PollAnswer(UNKNOWN[provider], None)]
    assert poll.observed == ["not_found"]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["twilio", "telecom23"])
@pytest.mark.parametrize("message_id", ["..", "."])
async def test_an_id_that_cannot_be_a_path_segment_is_not_asked_about(
    sim: SimulatorClient, provider: str, message_id: str
) -> None:
    """ ".." would be resolved away by the URL, asking about another resource."""
    poll = poller(settings_for(sim), provider)
    assert await poll(message_id) == [PollAnswer(message_id, None)]
    assert poll.observed == []


@pytest.mark.anyio
async def test_an_id_holding_a_slash_stays_one_path_segment(sim: SimulatorClient) -> None:
    (real,) = sim.create_messages("telecom23", 1)
    poll = poller(settings_for(sim), "telecom23")
    tricky = f"x/../{real}"  # unquoted, this path would name the real message
    assert await poll(tricky) == [PollAnswer(tricky, None)]
    assert poll.observed == ["not_found"]


# --- the provider's refusals, each sorted for the scheduler -----------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_429_is_rate_limited_with_the_retry_after_seconds(
    sim: SimulatorClient, provider: str
) -> None:
    (message_id,) = sim.create_messages(provider, 1)
    sim.fault(provider, "rate_limit", count=1, retry_after=7)
    poll = poller(settings_for(sim), provider)
    with pytest.raises(RateLimited) as caught:
        await poll(message_id)
    assert (caught.value.retry_after, caught.value.result) == (7.0, "rate_limited")
    (answer,) = await poll(message_id)  # the limit was for one request
    assert answer.event is not None
    assert poll.observed == ["rate_limited", "ok"]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrong_credentials_are_unauthorized(sim: SimulatorClient, provider: str) -> None:
    (message_id,) = sim.create_messages(provider, 1)
    poll = poller(settings_for(sim, **{WRONG_CREDENTIAL[provider]: "not-the-key"}), provider)
    with pytest.raises(Unauthorized) as caught:
        await poll(message_id)
    assert caught.value.result == "unauthorized"
    assert poll.observed == ["unauthorized"]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_revoked_key_is_unauthorized(sim: SimulatorClient, provider: str) -> None:
    (message_id,) = sim.create_messages(provider, 1)
    sim.fault(provider, "unauthorized")
    poll = poller(settings_for(sim), provider)
    with pytest.raises(Unauthorized):
        await poll(message_id)
    assert poll.observed == ["unauthorized"]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [500, 503])
async def test_an_outage_is_unavailable(sim: SimulatorClient, provider: str, status: int) -> None:
    (message_id,) = sim.create_messages(provider, 1)
    sim.fault(provider, "outage", count=1, status=status)
    poll = poller(settings_for(sim), provider)
    with pytest.raises(Unavailable) as caught:
        await poll(message_id)
    assert type(caught.value) is Unavailable and caught.value.result == "unavailable"
    assert f"HTTP {status}" in str(caught.value)
    assert poll.observed == ["unavailable"]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_slow_api_is_unavailable_as_a_timeout(sim: SimulatorClient, provider: str) -> None:
    (message_id,) = sim.create_messages(provider, 1)
    # An answer 20 times the time-out away: the time-out fires first however slow the machine.
    sim.configure(api_latency=2.0)
    poll = poller(settings_for(sim), provider, timeout=0.1)
    with pytest.raises(Unavailable) as caught:
        await poll(message_id)
    assert caught.value.result == "timeout"
    assert poll.observed == ["timeout"]


# --- me-sms: one sweep per send ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_send_of_2500_recipients_is_swept_in_3_pages(sim: SimulatorClient) -> None:
    ids = sim.create_messages("mesms", 2500, per_send=2500)
    poll = poller(settings_for(sim), "mesms")
    answers = await poll(ids[1234])  # asked about one, answered for all
    assert sorted(a.message_id for a in answers) == sorted(ids)
    assert all(a.event is not None for a in answers)
    assert poll.observed == ["ok"] * 3
    assert status_requests(sim, "mesms") == 3


@pytest.mark.anyio
async def test_mesms_answers_none_for_what_the_sweep_did_not_see(sim: SimulatorClient) -> None:
    first = sim.create_messages("mesms", 3, per_send=3)
    second = sim.create_messages("mesms", 2, per_send=2)
    uuid = first[0].split(":")[0]
    absent, not_ours = f"{uuid}:66899999999", "not-a-mesms-id"
    poll = poller(settings_for(sim), "mesms")
    answers = {a.message_id: a.event for a in await poll(first[0], second[0], absent, not_ours)}
    assert set(answers) == {*first, *second, absent, not_ours}
    assert answers[absent] is None and answers[not_ours] is None
    assert all(answers[i] is not None for i in (*first, *second))
    assert poll.observed == ["ok", "ok"]  # one sweep per send; nothing asked for "not-a-..."


def mesms_api(pages: Callable[[int], dict[str, Any]]) -> tuple[httpx.MockTransport, list[int]]:
    """A me-sms recipients endpoint answering `pages(after)`; also the cursors it was asked."""
    asked: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["after"])
        asked.append(after)
        return httpx.Response(200, json=pages(after))

    return httpx.MockTransport(handle), asked


UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
RECIPIENT = {"msisdn": "66812345678", "status": "success", "updatedAt": "2026-02-13T10:30:04Z"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "page",
    [
        pytest.param({"data": [RECIPIENT], "nextCursor": 0, "hasMore": True}, id="cursor-stuck"),
        pytest.param({"data": [RECIPIENT], "nextCursor": "1", "hasMore": True}, id="cursor-text"),
        pytest.param({"data": [RECIPIENT], "nextCursor": True, "hasMore": True}, id="cursor-bool"),
        pytest.param({"data": [RECIPIENT], "hasMore": True}, id="cursor-missing"),
        pytest.param({"data": [RECIPIENT], "nextCursor": 1}, id="hasMore-missing"),
        pytest.param({"data": RECIPIENT, "nextCursor": 1, "hasMore": False}, id="data-object"),
        # One malformed recipient is only that recipient's problem (tests/test_campaign.py).
    ],
)
async def test_a_malformed_recipients_page_is_unavailable_and_never_a_loop(
    page: dict[str, Any],
) -> None:
    transport, asked = mesms_api(lambda after: page)
    poll = poller(settings_for(None, MESMS_API_KEY="k"), "mesms", transport=transport)
    with pytest.raises(Unavailable) as caught:
        await poll(f"{UUID}:66812345678")
    assert caught.value.result == "unavailable"
    assert poll.observed == ["unavailable"]
    assert asked == [0]


@pytest.mark.anyio
async def test_a_sweep_that_never_ends_stops_at_the_page_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mesms_client, "MAX_PAGES", 5)
    transport, asked = mesms_api(
        lambda after: {"data": [], "nextCursor": after + 1, "hasMore": True}
    )
    poll = poller(settings_for(None, MESMS_API_KEY="k"), "mesms", transport=transport)
    with pytest.raises(Unavailable, match="after 5 pages"):
        await poll(f"{UUID}:66812345678")
    assert asked == [0, 1, 2, 3, 4]
    assert poll.observed == ["ok"] * 5


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["twilio", "telecom23"])
@pytest.mark.parametrize(
    "body",
    [{}, {"status": None}, {"status": 3}, {"status": ["delivered"]}, {"status": "x" * 300}],
    ids=["empty", "null", "number", "list", "too-long"],
)
async def test_an_answer_without_a_usable_status_is_unavailable(
    provider: str, body: dict[str, Any]
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    env = {"TWILIO_ACCOUNT_SID": SIM.twilio_account_sid, "TWILIO_AUTH_TOKEN": "t"}
    poll = poller(settings_for(None, TELECOM23_API_KEY="k", **env), provider, transport=transport)
    with pytest.raises(Unavailable) as caught:
        await poll(UNKNOWN[provider])
    assert caught.value.result == "unavailable"
    assert poll.observed == ["unavailable"]


@pytest.mark.anyio
async def test_an_unknown_status_is_kept_raw_and_unmapped() -> None:
    body = {"sid": UNKNOWN["twilio"], "status": "Teleported", "error_code": None, "to": 15551234}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    settings = settings_for(None, TWILIO_ACCOUNT_SID=SIM.twilio_account_sid, TWILIO_AUTH_TOKEN="t")
    (answer,) = await poller(settings, "twilio", transport=transport)(UNKNOWN["twilio"])
    assert answer.event is not None
    assert (answer.event.provider_status, answer.event.status) == ("teleported", None)
    # An odd optional field is read as the adapters read it; a missing one is None.
    assert (answer.event.to_number, answer.event.event_time) == ("15551234", None)


# --- settings ---------------------------------------------------------------------------------


def test_only_providers_with_polling_credentials_get_a_client() -> None:
    token_only = {"TWILIO_AUTH_TOKEN": "t"}  # no account to ask about
    one_account = {"TWILIO_ACCOUNTS": f"{SIM.twilio_account_sid}:t"}
    assert build_clients(settings_for(None)) == {}
    assert build_clients(settings_for(None, **token_only)) == {}
    assert set(build_clients(settings_for(None, **one_account))) == {"twilio"}
    assert set(build_clients(settings_for(None, TELECOM23_API_KEY="k"))) == {"telecom23"}
    assert set(build_clients(settings_for(None, MESMS_API_KEY="k"))) == {"mesms"}
    every = settings_for(None, TWILIO_ACCOUNT_SID=SIM.twilio_account_sid, **token_only)
    assert set(
        build_clients(
            every.replace(
                provider_env=MappingProxyType(
                    {**every.provider_env, "TELECOM23_API_KEY": "k", "MESMS_API_KEY": "k"}
                )
            )
        )
    ) == set(PROVIDERS)


@pytest.mark.parametrize("variable", ["TWILIO_API_BASE", "TELECOM23_API_BASE", "MESMS_API_BASE"])
@pytest.mark.parametrize(
    "value",
    [
        "api.example.com",
        "ftp://api.example.com",
        "https://",
        "https://api.example.com/?x=1",
        "https://api.example.com/#top",
        "https://user:secret@api.example.com",
        "https://api.example.com:port",
        "https://api.example.com/a path",
    ],
)
def test_a_bad_base_url_is_a_settings_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable) as caught:
        build_clients(settings_for(None, **{variable: value}))
    assert "secret" not in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("env", "urls"),
    [
        pytest.param(
            {},
            [
                f"https://api.twilio.com/2010-04-01/Accounts/{SIM.twilio_account_sid}"
                f"/Messages/{UNKNOWN['twilio']}.json",
                f"https://restlink23telecom.com/api/v1/sms/status/{UNKNOWN['telecom23']}",
                f"https://api.me-sms.com/api/v2/sms/{UNKNOWN['mesms'].split(':')[0]}"
                "/recipients?after=0&limit=1000",
            ],
            id="defaults",
        ),
        pytest.param(
            {
                "TWILIO_API_BASE": "http://127.0.0.1:1/",
                "TELECOM23_API_BASE": "http://127.0.0.1:2/t23/",
                "MESMS_API_BASE": "http://localhost:3/prefix",
            },
            [
                f"http://127.0.0.1:1/2010-04-01/Accounts/{SIM.twilio_account_sid}"
                f"/Messages/{UNKNOWN['twilio']}.json",
                f"http://127.0.0.1:2/t23/sms/status/{UNKNOWN['telecom23']}",
                f"http://localhost:3/prefix/api/v2/sms/{UNKNOWN['mesms'].split(':')[0]}"
                "/recipients?after=0&limit=1000",
            ],
            id="set",
        ),
    ],
)
async def test_requests_go_to_the_base_urls_with_each_providers_credentials(
    env: dict[str, str], urls: list[str]
) -> None:
    """The real APIs by default; a base URL's trailing slash does not double."""
    seen: list[httpx.Request] = []

    def not_found(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={})

    credentials = {
        "TWILIO_ACCOUNT_SID": SIM.twilio_account_sid,
        "TWILIO_AUTH_TOKEN": "tok",
        "TELECOM23_API_KEY": "t23-key",
        "MESMS_API_KEY": "mesms-key",
    }
    settings = settings_for(None, **credentials, **env)
    for provider in PROVIDERS:
        poll = poller(settings, provider, transport=httpx.MockTransport(not_found))
        assert await poll(UNKNOWN[provider]) == [PollAnswer(UNKNOWN[provider], None)]
    assert [str(r.url) for r in seen] == urls
    basic = base64.b64encode(f"{SIM.twilio_account_sid}:tok".encode()).decode()
    assert seen[0].headers["authorization"] == f"Basic {basic}"
    assert seen[1].headers["x-api-key"] == "t23-key"
    assert seen[2].headers["x-api-key"] == "mesms-key"


@pytest.mark.parametrize("sid", ["AC123", "SM" + "0" * 32, "AC" + "g" * 32])
def test_a_twilio_account_sid_that_is_not_one_is_a_settings_error(sid: str) -> None:
    with pytest.raises(SettingsError, match="TWILIO_ACCOUNT_SID"):
        build_clients(settings_for(None, TWILIO_ACCOUNT_SID=sid, TWILIO_AUTH_TOKEN="t"))


def test_the_polling_variables_are_read_from_the_environment() -> None:
    env = {"TWILIO_API_BASE": "https://twilio.test", "MESMS_POLL_RATE": "2", "MESMS_API_KEY": "k"}
    settings = Settings.from_env(env)
    assert dict(settings.provider_env) == env


# --- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP date
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    assert retry_after_seconds(header) == seconds


def test_retry_after_as_a_future_http_date_is_the_seconds_until_then() -> None:
    header = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    seconds = retry_after_seconds(header)
    # The header is whole seconds, and some time passes before it is read: a minute's slack.
    assert seconds is not None and 3540 <= seconds <= 3600


def test_an_answer_nested_too_deep_is_unavailable_not_a_crash() -> None:
    """Python's JSON reader gives up on deep nesting with RecursionError, not a ValueError."""
    import asyncio as _asyncio

    from receiver.polling.base import Unavailable as _Unavailable
    from receiver.polling.base import get_json as _get_json

    deep = b"[" * 100_000 + b"]" * 100_000
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=deep))
    seen: list[str] = []

    async def ask() -> None:
        async with httpx.AsyncClient(transport=transport) as http:
            await _get_json(http, "https://provider.test/status", seen.append)

    with pytest.raises(_Unavailable):
        _asyncio.run(ask())
    assert seen == ["unavailable"]
