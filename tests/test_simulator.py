"""The provider simulator, over real sockets: what it pushes, how untidily, and what it answers.

Pushes go to a capture app (also under uvicorn) that checks every signature on its own: Twilio's
with Twilio's SDK, the others by hand from the providers' documents.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support import SECRET_KEY, WAIT, AppServer, LiveServer, wait_until
from twilio.request_validator import RequestValidator

from receiver.simulator.client import SimulatorClient, SimulatorError
from receiver.simulator.config import Accounts
from receiver.simulator.model import FLAVORS
from receiver.simulator.signing import standard_webhook_signature, twilio_signature

ACCOUNTS = Accounts(telecom23_webhook_secret="t23-dlr-secret", mesms_api_key="k-from-flag")
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
UNTIDY = {"duplicate": 0.3, "reorder": 0.3, "late_sent": 0.3}


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Capture:
    """A callback target that records every push, checks its signature, and can fail on cue."""

    requests: list[Captured] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)  # answers for the next requests
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: AppServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return self.server.base_url + path

    def verify(self, request: Request, body: bytes) -> bool:
        headers = request.headers
        if request.url.path == "/twilio":
            validator = RequestValidator(ACCOUNTS.twilio_auth_token)
            params = dict(parse_qsl(body.decode()))
            return bool(validator.validate(str(request.url), params, headers["x-twilio-signature"]))
        if request.url.path == "/telecom23":
            expected = hmac.new(b"t23-dlr-secret", body, hashlib.sha256).hexdigest()
            return hmac.compare_digest(headers["x-telecom23-signature"], "sha256=" + expected)
        if request.url.path.startswith("/standard/"):
            return verify_standard(
                WHSEC,
                headers["webhook-id"],
                headers["webhook-timestamp"],
                body,
                headers["webhook-signature"],
            )
        return True  # me-sms reports are authenticated by the secret in the URL

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            status = self.fail_with.pop(0) if self.fail_with else 204
            self.requests.append(
                Captured(request.url.path, dict(request.headers), body, self.verify(request, body))
            )
        return Response(status_code=status)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.fail_with.clear()


def verify_standard(secret: str, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """Standard Webhooks v1, by hand from the spec (independent of receiver.simulator)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, "sha256")
    expected = base64.b64encode(mac.digest()).decode()
    candidates = [s.split(",", 1)[1] for s in header.split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, c) for c in candidates)


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    cap = Capture()
    app = Starlette(routes=[Route("/{path:path}", cap.handle, methods=["POST"])])
    cap.server = AppServer(app).start()
    yield cap
    cap.server.stop()


@pytest.fixture(scope="module", name="http")
def http_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=WAIT) as client:
        yield client


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """`receiver simulate` in its own process, as a user runs it (and with a core of its own,
    so its pushes and the servers receiving them in this process run side by side)."""
    command = [sys.executable, "-m", "receiver", "simulate", "--port", "0", "--seed", "42"]
    command += ["--speed", "2000", "--twilio-auth-token", ACCOUNTS.twilio_auth_token]
    command += ["--telecom23-webhook-secret", "t23-dlr-secret", "--mesms-api-key", "k-from-flag"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # printed once the socket listens
            yield line.split(" on ", 1)[1].split()[0]
        finally:
            proc.terminate()
            proc.wait(timeout=WAIT)


@pytest.fixture
def sim(sim_url: str, capture: Capture) -> Iterator[SimulatorClient]:
    """The shared simulator, reset, fast, pushing to the capture app with tidy realism."""
    with SimulatorClient(sim_url) as client:
        client.reset(seed=1)
        capture.clear()
        client.configure(
            speed=2000,
            retry_base=1,
            max_attempts=5,
            api_latency=0,
            concurrency=4,
            realism={k: 0 for k in (*UNTIDY, "drop_all", "drop_final")} | {"delivered": 0.9},
            timing={"sent_after": [0.5, 3], "final_after": [1, 30]},
            batch_size={"telecom23": 1, "mesms": 1},
            telecom23_format="json",
            mesms_flat=False,
            callbacks={
                "twilio": capture.url("/twilio"),
                "telecom23": capture.url("/telecom23"),
                "mesms": capture.url("/mesms"),
            },
            standard_sources={"acme": {"url": capture.url("/standard/acme"), "secret": WHSEC}},
        )
        yield client
        client.clear_faults()


def pushes_by_message(capture: Capture) -> dict[str, list[tuple[str, str]]]:
    """message id -> [(status, delivery id)] in arrival order, from every provider's format."""
    seen: dict[str, list[tuple[str, str]]] = {}
    for req in capture.requests:
        assert req.verified, req
        for message_id, status in parse_push(req):
            delivery = req.headers.get("i-twilio-idempotency-token") or req.headers.get(
                "webhook-id", ""
            )
            seen.setdefault(message_id, []).append((status, delivery))
    return seen


def parse_push(req: Captured) -> list[tuple[str, str]]:
    if req.path == "/twilio":
        form = dict(parse_qsl(req.body.decode()))
        assert form["SmsStatus"] == form["MessageStatus"] and form["SmsSid"] == form["MessageSid"]
        return [(form["MessageSid"], form["MessageStatus"])]
    if req.path == "/telecom23" and req.headers["content-type"].startswith("application/x-www"):
        form = dict(parse_qsl(req.body.decode()))
        return [(form.get("message_id") or form["client_message_id"], form["status"])]
    data = json.loads(req.body)
    if req.path == "/telecom23":
        reports = data if isinstance(data, list) else [data]
        return [(r.get("message_id") or r["client_message_id"], r["status"]) for r in reports]
    if req.path == "/mesms":
        items = data.get("recipients") or [data]
        return [(f"{data['uuid']}:{r['msisdn']}", r["status"]) for r in items]
    assert data["type"] == "message.status"
    return [(data["data"]["message_id"], data["data"]["status"])]


# --- signing, against the providers' published vectors and SDK -------------------------------


def test_standard_webhooks_signature_matches_the_published_test_vector() -> None:
    msg_id, timestamp, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify_standard(WHSEC, msg_id, str(timestamp), body, expected)  # the test's own
    assert standard_webhook_signature(WHSEC, msg_id, timestamp, body) == expected


def test_twilio_signature_is_the_one_twilios_sdk_computes() -> None:
    url = "https://example.com/v1/webhook/twilio/sms-status?x=1"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+1555", "Body": "héllo"}
    sdk = RequestValidator("tok").compute_signature(url, params)
    assert twilio_signature("tok", url, params.items()) == sdk


# --- pushes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["twilio", "telecom23", "mesms", "standard"])
def test_each_provider_pushes_signed_callbacks_ending_in_the_final_status(
    sim: SimulatorClient, capture: Capture, provider: str
) -> None:
    source = {"source": "acme"} if provider == "standard" else {}
    ids = sim.create_messages(provider, 30, **source)
    stats = sim.wait_idle(timeout=WAIT)
    assert stats["deliveries"]["gave_up"] == 0
    pushed = pushes_by_message(capture)
    assert set(pushed) == set(ids)
    for message in sim.messages(provider=provider):
        statuses = [s for s, _ in pushed[message["message_id"]]]
        assert statuses == [p["provider_status"] for p in message["plan"]]
        assert statuses == message["delivered"]
        assert statuses[-1] == message["final"]["provider_status"]
        # The timeline minus the send's own answer, which is never pushed.
        assert statuses == [t["provider_status"] for t in message["timeline"][1:]]


def test_telecom23_batches_form_bodies_and_field_variants(
    sim: SimulatorClient, capture: Capture
) -> None:
    sim.configure(batch_size={"telecom23": 50}, telecom23_field_variants=True)
    ids = sim.create_messages("telecom23", 200)
    sim.wait_idle(timeout=WAIT)
    bodies = [json.loads(r.body) for r in capture.requests]
    assert all(isinstance(b, list) and 1 <= len(b) <= 50 for b in bodies)
    assert any(len(b) > 1 for b in bodies)
    reports = [r for b in bodies for r in b]
    assert {r.get("message_id") or r.get("client_message_id") for r in reports} == set(ids)
    assert any("client_message_id" in r for r in reports) and any("dnis" in r for r in reports)
    for r in reports:
        assert (r.get("status_code") == "000") == (r["status"] == "DELIVRD")
    capture.clear()
    sim.configure(batch_size={"telecom23": 1}, telecom23_format="form")
    ids = sim.create_messages("telecom23", 10)
    sim.wait_idle(timeout=WAIT)
    assert set(pushes_by_message(capture)) == set(ids)
    assert all(r.headers["content-type"].startswith("application/x-www") for r in capture.requests)


def test_mesms_reports_carry_many_recipients_of_one_send_or_one_flat_recipient(
    sim: SimulatorClient, capture: Capture
) -> None:
    sim.configure(batch_size={"mesms": 1000})
    ids = sim.create_messages("mesms", 500, per_send=250)
    sim.wait_idle(timeout=WAIT)
    assert set(pushes_by_message(capture)) == set(ids)
    bodies = [json.loads(r.body) for r in capture.requests]
    assert len({b["uuid"] for b in bodies}) == 2
    assert len(bodies) < 250  # batched: far fewer reports than recipients
    assert all(1 <= len(b["recipients"]) <= 1000 for b in bodies)
    capture.clear()
    sim.configure(batch_size={"mesms": 1}, mesms_flat=True)
    ids = sim.create_messages("mesms", 5)
    sim.wait_idle(timeout=WAIT)
    assert set(pushes_by_message(capture)) == set(ids)
    assert all("msisdn" in json.loads(r.body) for r in capture.requests)


def test_realism_knobs_make_duplicates_reorders_late_sent_and_drops(
    sim: SimulatorClient, capture: Capture
) -> None:
    realism = UNTIDY | {"drop_all": 0.1, "drop_final": 0.1, "delivered": 1.0}
    sim.create_messages("twilio", 300, realism=realism)
    sim.wait_idle(timeout=WAIT)
    pushed = pushes_by_message(capture)
    messages = sim.messages()
    flags = Counter()
    for m in messages:
        got = pushed.get(m["message_id"], [])
        assert [s for s, _ in got] == [p["provider_status"] for p in m["plan"]]
        deliveries = Counter(d for _, d in got)
        assert sum(n - 1 for n in deliveries.values()) == m["duplicates"]
        if m["dropped"] == "all":
            assert got == []
        elif m["dropped"] == "final":
            assert "delivered" not in [s for s, _ in got]
        else:
            assert "delivered" in [s for s, _ in got]
        if m["late_sent"]:
            kinds = [p["kind"] for p in m["plan"]]
            assert "late" in kinds
            if not m["reordered"]:
                assert [s for s, _ in got][-1] == "sent"
        in_time_order = [p["provider_status"] for p in sorted(m["plan"], key=lambda p: p["order"])]
        assert ([s for s, _ in got] != in_time_order) == m["reordered"]
        flags.update(
            dropped_all=m["dropped"] == "all",
            dropped_final=m["dropped"] == "final",
            late=m["late_sent"],
            reordered=m["reordered"],
            duplicated=m["duplicates"] > 0,
        )
    # Seeded, so exact; the bounds say the rates are what was asked (300 messages).
    assert 15 <= flags["dropped_all"] <= 50
    assert 12 <= flags["dropped_final"] <= 50
    assert 45 <= flags["late"] <= 110
    assert 45 <= flags["reordered"] <= 120
    assert 90 <= flags["duplicated"] <= 210


def test_the_same_seed_makes_the_same_messages_and_plans(sim: SimulatorClient) -> None:
    def run(seed: int, realism: dict[str, float]) -> list[tuple[Any, ...]]:
        sim.reset(seed=seed)
        sim.create_messages("telecom23", 50, realism=realism)
        return [
            (m["message_id"][-16:], m["to"], m["final"]["provider_status"], m["plan"])
            for m in sim.messages()
        ]

    untidy = UNTIDY | {"drop_final": 0.2}
    first = run(7, untidy)
    assert run(7, untidy) == first
    # Other knobs change the pushes, never which messages there are or how they end.
    tidy = run(7, {})
    assert [t[:3] for t in tidy] == [t[:3] for t in first] and tidy != first
    assert [t[1] for t in run(8, untidy)] != [t[1] for t in first]
    sim.wait_idle(timeout=WAIT)


def test_outcomes_follow_the_mix_and_map_to_canonical_statuses(sim: SimulatorClient) -> None:
    sim.create_messages("mesms", 1000, realism={"drop_all": 1})
    finals = Counter(m["final"]["provider_status"] for m in sim.messages())
    assert 850 <= finals["success"] <= 950
    assert set(finals) - {"success"} <= {"failed", "invalid", "blocked", "expired", "timeout"}
    sim.reset()
    sim.create_messages("telecom23", 40, outcomes={"UNDELIV": 1, "UNKNOWN": 1})
    for m in sim.messages():
        raw, canonical = m["final"]["provider_status"], m["final"]["status"]
        assert (raw, canonical) in {("UNDELIV", "undelivered"), ("UNKNOWN", "unconfirmed")}
        assert m["final"]["error_code"] is not None
    with pytest.raises(SimulatorError, match="outcomes"):
        sim.create_messages("telecom23", 1, outcomes={"delivered": 1})
    sim.wait_idle(timeout=WAIT)


def test_canonical_mapping_is_the_one_the_issue_pins() -> None:
    pinned = {
        "twilio": "delivered:delivered undelivered:undelivered failed:failed sent:sent "
        "queued:queued accepted:queued scheduled:queued sending:sending canceled:canceled "
        "read:delivered",
        "telecom23": "DELIVRD:delivered UNDELIV:undelivered REJECTD:rejected DELETED:failed "
        "EXPIRED:expired ENROUTE:sent sent:sent ACCEPTD:queued pending:queued UNKNOWN:unconfirmed",
        "mesms": "pending:queued success:delivered failed:undelivered invalid:rejected "
        "blocked:rejected expired:expired timeout:unconfirmed",
    }
    for provider, pairs in pinned.items():
        assert dict(p.split(":") for p in pairs.split()) == dict(FLAVORS[provider].canonical)


def test_standard_source_can_relay_a_providers_raw_statuses(
    sim: SimulatorClient, capture: Capture
) -> None:
    ids = sim.create_messages("standard", 10, source="acme", status_provider="telecom23")
    sim.wait_idle(timeout=WAIT)
    events = [json.loads(r.body)["data"] for r in capture.requests]
    assert {e["message_id"] for e in events} == set(ids)
    assert all(e["status_provider"] == "telecom23" for e in events)
    assert {e["status"] for e in events} <= set(FLAVORS["telecom23"].canonical)


# --- delivery: retries ---------------------------------------------------------------------------


def test_a_push_answered_5xx_is_retried_with_the_same_delivery_id(
    sim: SimulatorClient, capture: Capture
) -> None:
    capture.fail_with.extend([500, 503, 429])
    (sid,) = sim.create_messages("twilio", 1, outcomes={"failed": 1})  # one push: failed
    stats = sim.wait_idle(timeout=WAIT)
    tokens = [r.headers["i-twilio-idempotency-token"] for r in capture.requests]
    assert len(tokens) == 4 and len(set(tokens)) == 1
    assert stats["deliveries"]["answers"]["twilio"] == {"500": 1, "503": 1, "429": 1, "204": 1}
    message = sim.message(sid)
    assert message["delivered"] == ["failed"] and message["attempts"] == 4


def test_pushes_give_up_after_max_attempts_and_do_not_retry_other_4xx(
    sim: SimulatorClient, capture: Capture
) -> None:
    sim.configure(max_attempts=3)
    capture.fail_with.extend([500] * 3 + [400])
    sim.create_messages("twilio", 1, outcomes={"delivered": 1})  # two pushes: sent, delivered
    stats = sim.wait_idle(timeout=WAIT)
    assert stats["deliveries"]["answers"]["twilio"] == {"500": 3, "400": 1}
    assert stats["deliveries"]["gave_up"] == 2
    assert [m["gave_up"] for m in sim.messages()] == [2]


def test_connection_errors_are_retried_then_given_up(sim: SimulatorClient) -> None:
    closed = AppServer(Starlette()).start()
    closed.stop()  # nothing listens there any more
    sim.configure(max_attempts=2, callbacks={"mesms": closed.base_url + "/x"})
    sim.create_messages("mesms", 3)
    stats = sim.wait_idle(timeout=WAIT)
    assert stats["deliveries"]["answers"]["mesms"] == {"error": 6}
    assert stats["deliveries"]["gave_up"] == 3


# --- provider APIs: send, status, auth, pagination ---------------------------------------------


def test_twilio_send_and_fetch_follow_the_timeline_behind_basic_auth(
    sim: SimulatorClient, sim_url: str, capture: Capture, http: httpx.Client
) -> None:
    # Real time until the 'queued' checks are done (a minute before it is sent), then fast.
    sim.configure(speed=1, timing={"sent_after": [60, 60], "final_after": [60, 60]})
    auth = (ACCOUNTS.twilio_account_sid, ACCOUNTS.twilio_auth_token)
    base = f"{sim_url}/2010-04-01/Accounts/{ACCOUNTS.twilio_account_sid}/Messages"
    with httpx.Client(auth=auth, timeout=WAIT) as twilio:
        sent = twilio.post(
            base + ".json",
            data={
                "To": "+15558675310",
                "From": "+15017122661",
                "Body": "hi",
                "StatusCallback": capture.url("/twilio"),
            },
        )
        assert sent.status_code == 201, sent.text
        sid = sent.json()["sid"]
        assert sid.startswith("SM") and len(sid) == 34 and sent.json()["status"] == "queued"
        assert twilio.get(f"{base}/{sid}.json").json()["status"] == "queued"
        sim.configure(speed=100_000)
        sim.wait_idle(timeout=WAIT)
        fetched = twilio.get(f"{base}/{sid}.json").json()
        final = sim.message(sid)["final"]["provider_status"]
        assert fetched["status"] == final and fetched["date_sent"].endswith("+0000")
        assert (fetched["error_code"] is None) == (final == "delivered")
        missing = twilio.get(f"{base}/SM{'0' * 32}.json")
        assert missing.status_code == 404 and missing.json()["code"] == 20404
        bad = twilio.post(base + ".json", data={"From": "+1", "Body": "x"})
        assert bad.json()["code"] == 21604
    wrong = http.get(f"{base}/{sid}.json", auth=(auth[0], "nope"))
    assert wrong.status_code == 401 and wrong.json()["code"] == 20003
    assert sim.message(sid)["status_requests"] == 2


def test_a_dropped_dlr_leaves_the_final_status_to_the_status_endpoints(
    sim: SimulatorClient, sim_url: str, capture: Capture, http: httpx.Client
) -> None:
    (message_id,) = sim.create_messages("telecom23", 1, realism={"drop_all": 1})
    sim.wait_idle(timeout=WAIT)

    def ended() -> bool:
        found = sim.message(message_id)
        return bool(found["current"]["provider_status"] == found["final"]["provider_status"])

    wait_until(ended, what="the end of its timeline")
    assert capture.requests == []
    answer = http.get(
        f"{sim_url}/api/v1/sms/status/{message_id}",
        headers={"X-API-Key": ACCOUNTS.telecom23_api_key},
    ).json()
    message = sim.message(message_id)
    assert answer["status"] == message["final"]["provider_status"]
    assert answer["message_id"] == message_id and answer["delivered_at"] is not None


def test_telecom23_send_answers_in_its_own_shape_and_errors(
    sim: SimulatorClient, sim_url: str, http: httpx.Client
) -> None:
    url = sim_url + "/api/v1/sms/send"
    key = {"X-API-Key": ACCOUNTS.telecom23_api_key}
    body = {"to": ["+14155551234", "+447911123456"], "message": "hi", "sender_id": "MyApp"}
    sent = http.post(url, json=body, headers=key).json()
    assert sent["status"] is True and sent["summary"]["accepted_count"] == 2
    ids = [m["message_id"] for m in sent["messages"]]
    assert all(i.startswith(f"api_{ACCOUNTS.telecom23_account}_") for i in ids)
    assert {m["message_id"] for m in sim.messages(provider="telecom23")} == set(ids)
    cases = [
        ({**body, "to": []}, key, 400, "INVALID_TO"),
        ({**body, "to": ["+1415555123"] * 101}, key, 400, "TOO_MANY_RECIPIENTS"),
        ({**body, "message": ""}, key, 400, "INVALID_MESSAGE"),
        ({**body, "sender_id": None}, key, 400, "INVALID_SENDER"),
        (body, {"X-API-Key": "wrong"}, 401, "UNAUTHORIZED"),
    ]
    for payload, headers, status, code in cases:
        answer = http.post(url, json=payload, headers=headers)
        assert answer.status_code == status
        assert answer.json() == {"status": False, "error_code": code, "description": ANY_TEXT}
    missing = http.get(sim_url + "/api/v1/sms/status/api_1_2_3", headers=key)
    assert missing.status_code == 404 and missing.json()["error_code"] == "NOT_FOUND"
    sim.wait_idle(timeout=WAIT)


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT: Any = _AnyText()


def test_mesms_recipient_pages_cover_every_recipient_exactly_once(
    sim: SimulatorClient, sim_url: str, http: httpx.Client
) -> None:
    key = {"x-api-key": ACCOUNTS.mesms_api_key}
    numbers = [f"08{i:08d}" for i in range(250)] + ["0800000000"]  # one repeat
    sent = http.post(
        sim_url + "/api/v2/sms/send",
        json={"msisdns": numbers, "content": "hi", "sender": "Shop"},
        headers=key,
    ).json()
    assert sent["status"] == "pending" and sent["total"] == 250
    sim.wait_idle(timeout=WAIT)
    url = f"{sim_url}/api/v2/sms/{sent['uuid']}/recipients"
    seen: list[str] = []
    after, pages = 0, 0
    for _ in range(20):  # bounded: 250 recipients, 37 a page
        page = http.get(url, params={"after": after, "limit": 37}, headers=key).json()
        seen += [r["msisdn"] for r in page["data"]]
        pages += 1
        assert sum(s["count"] for s in page["summary"]) == 250
        if not page["hasMore"]:
            break
        after = page["nextCursor"]
    assert pages == 7 and len(seen) == 250 and set(seen) == {"66" + n[1:] for n in numbers}
    finals = Counter(m["final"]["provider_status"] for m in sim.messages(send_id=sent["uuid"]))
    failed = http.get(url, params={"status": "failed", "limit": 1000}, headers=key).json()
    assert len(failed["data"]) == finals["failed"] and not failed["hasMore"]
    for params, status, code in [
        ({"limit": 1001}, 400, "INVALID_PARAMETERS"),
        ({"after": -1}, 400, "INVALID_PARAMETERS"),
    ]:
        answer = http.get(url, params=params, headers=key)
        assert answer.status_code == status and answer.json()["code"] == code
    unauthorized = http.get(url, headers={"x-api-key": "wrong"})
    assert unauthorized.status_code == 401 and set(unauthorized.json()) == {"error", "code"}
    assert http.get(url.replace(sent["uuid"], "nope"), headers=key).status_code == 404
    assert sim.stats()["requests"]["mesms.recipients"] == pages + 5


# --- faults and counting -------------------------------------------------------------------------


def status_call(sim_url: str, provider: str, message_id: str, http: httpx.Client) -> httpx.Response:
    base = sim_url
    if provider == "twilio":
        auth = (ACCOUNTS.twilio_account_sid, ACCOUNTS.twilio_auth_token)
        path = f"/2010-04-01/Accounts/{auth[0]}/Messages/{message_id}.json"
        return http.get(base + path, auth=auth)
    if provider == "telecom23":
        key = {"X-API-Key": ACCOUNTS.telecom23_api_key}
        return http.get(f"{base}/api/v1/sms/status/{message_id}", headers=key)
    key = {"x-api-key": ACCOUNTS.mesms_api_key}
    return http.get(f"{base}/api/v2/sms/{message_id.split(':')[0]}/recipients", headers=key)


ERROR_CODE: dict[str, Callable[[dict[str, Any]], object]] = {
    "twilio": lambda body: body["code"],
    "telecom23": lambda body: body["error_code"],
    "mesms": lambda body: body["code"],
}
CODES = {
    "twilio": {401: 20003, 429: 20429, 503: 20500},
    "telecom23": {401: "UNAUTHORIZED", 429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE"},
    "mesms": {401: "UNAUTHORIZED", 429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE"},
}


@pytest.mark.parametrize("provider", ["twilio", "telecom23", "mesms"])
def test_faults_answer_429_outage_and_401_in_the_providers_shape(
    sim: SimulatorClient, sim_url: str, http: httpx.Client, provider: str
) -> None:
    (message_id,) = sim.create_messages(provider, 1, realism={"drop_all": 1})

    def answers(n: int) -> list[int]:
        got = []
        for _ in range(n):
            response = status_call(sim_url, provider, message_id, http)
            if response.status_code != 200:
                code = ERROR_CODE[provider](response.json())
                assert code == CODES[provider][response.status_code]
            if response.status_code == 429:
                assert response.headers["Retry-After"] == "7"
            got.append(response.status_code)
        return got

    sim.fault(provider, "rate_limit", count=2, retry_after=7)
    assert answers(3) == [429, 429, 200]
    sim.fault(provider, "outage", count=2)
    assert answers(3) == [503, 503, 200]
    sim.fault(provider, "outage", seconds=1)  # the next two requests come well within it
    assert answers(2) == [503, 503]
    wait_until(
        lambda: http.get(f"{sim_url}/_sim/faults").json()[provider]["outage_seconds_left"] == 0,
        what="the outage's end",
    )
    assert answers(1) == [200]
    sim.fault(provider, "unauthorized")
    assert answers(3) == [401, 401, 401]
    sim.clear_faults(provider)
    assert answers(1) == [200]
    endpoint = {"twilio": "status", "telecom23": "status", "mesms": "recipients"}[provider]
    stats = sim.stats()
    assert stats["requests"] == {f"{provider}.{endpoint}": 13}
    assert stats["requests_by_provider"] == {provider: 13}
    assert stats["responses"][f"{provider}.{endpoint}"] == {
        "200": 4,
        "429": 2,
        "503": 4,
        "401": 3,
    }


def test_overlapping_status_requests_for_one_message_are_counted(
    sim: SimulatorClient, sim_url: str, http: httpx.Client
) -> None:
    # Each answer takes a second: requests started together overlap even on a slow machine.
    sim.configure(api_latency=1.0)
    one, other = sim.create_messages("telecom23", 2, realism={"drop_all": 1})
    together = threading.Barrier(3, timeout=WAIT)

    def call(message_id: str) -> None:
        together.wait()
        status_call(sim_url, "telecom23", message_id, http)

    threads = [threading.Thread(target=call, args=(m,)) for m in (one, one, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    assert sim.message(one)["max_concurrent_polls"] == 2
    assert sim.message(other)["max_concurrent_polls"] == 1
    assert sim.stats()["max_concurrent_polls"] == 2


def test_control_api_refuses_bad_input_with_json_errors(
    sim: SimulatorClient, sim_url: str, http: httpx.Client
) -> None:
    base = sim_url
    cases = [
        ("/_sim/config", {"realism": {"duplicate": 2}}, "invalid_config"),
        ("/_sim/config", {"speed": "fast"}, "invalid_config"),
        ("/_sim/config", {"nonsense": 1}, "invalid_config"),
        ("/_sim/config", {"callbacks": {"twilio": "ftp://x"}}, "invalid_config"),
        ("/_sim/messages", {"provider": "sinch"}, "invalid_request"),
        ("/_sim/messages", {"provider": "twilio", "count": 0}, "invalid_request"),
        ("/_sim/messages", {"provider": "standard"}, "invalid_request"),
        ("/_sim/faults", {"provider": "twilio", "kind": "meteor"}, "invalid_fault"),
        ("/_sim/faults", {"provider": "standard", "kind": "outage"}, "invalid_fault"),
        ("/_sim/reset", {"seed": "x"}, "invalid_request"),
    ]
    for path, payload, code in cases:
        answer = http.post(base + path, json=payload)
        assert answer.status_code == 400, (path, payload)
        assert answer.json()["code"] == code and answer.json()["error"]
    not_json = http.post(base + "/_sim/config", content=b"{")
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_config"
    missing = http.get(base + "/_sim/nowhere")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert sim.config()["realism"]["duplicate"] == 0


# --- end to end: the real receiver, and the CLI ------------------------------------------------


def test_a_thousand_messages_of_every_provider_through_the_receiver_end_in_the_final_status(
    start_server: Callable[..., LiveServer], sim_url: str
) -> None:
    """250 messages per provider, pushed with duplicates, reordering and late `sent`, in the
    providers' batch and body variants: every one ends in the simulator's final status."""
    receiver = start_server(
        twilio_auth_token=ACCOUNTS.twilio_auth_token,
        secret_key=SECRET_KEY,
        provider_env={
            "TELECOM23_WEBHOOK_SECRET": "t23-dlr-secret",
            "STANDARD_WEBHOOK_SECRETS": f"acme:{WHSEC}",
        },
    )
    providers = ("twilio", "telecom23", "mesms")
    with SimulatorClient(sim_url) as sim:
        sim.reset()
        sim.configure(
            batch_size={"telecom23": 20, "mesms": 50},
            telecom23_field_variants=True,
        )
        sim.point_at_receiver(
            receiver.base_url, providers=providers, standard_sources={"acme": WHSEC}
        )
        realism = UNTIDY | {"duplicate": 0.2}
        for provider in providers:
            sim.create_messages(provider, 250, realism=realism)
        sim.create_messages("standard", 250, source="acme", realism=realism)
        stats = sim.wait_idle(timeout=60)
        messages = sim.messages()
    assert len(messages) == 1000
    answers = stats["deliveries"]["answers"]
    assert set(answers) == {*providers, "standard"}
    for provider, by_status in answers.items():
        assert set(by_status) == {"204"}, (provider, by_status)  # nothing refused or failed
    assert sum(m["reordered"] for m in messages) > 100
    assert sum(m["duplicates"] for m in messages) > 100
    assert sum(m["late_sent"] for m in messages) > 100
    # A Standard Webhooks source's messages are stored under the source's name.
    expected = {
        (m.get("source") or m["provider"], m["message_id"]): m["final"]["status"] for m in messages
    }
    with receiver.client() as http:
        stored = http.get("/v1/messages", params={"limit": 1000}).json()
    got = {(m["provider"], m["message_id"]): m["status"] for m in stored["messages"]}
    assert stored["next_cursor"] is None
    assert got == expected


def test_receiver_simulate_serves_the_simulator_with_the_given_credentials(
    sim_url: str, http: httpx.Client
) -> None:
    with SimulatorClient(sim_url) as sim:
        sim.reset()
        accounts = sim.config()["accounts"]
    assert accounts["mesms_api_key"] == "k-from-flag"
    assert accounts["twilio_auth_token"] == ACCOUNTS.twilio_auth_token
    assert accounts["telecom23_webhook_secret"] == "t23-dlr-secret"
    sent = http.post(
        sim_url + "/api/v2/sms/send",
        json={"msisdns": ["66812345678"], "content": "hi"},
        headers={"x-api-key": "k-from-flag"},
    )
    assert sent.status_code == 200 and sent.json()["total"] == 1
