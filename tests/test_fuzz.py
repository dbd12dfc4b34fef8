"""Property-based tests: no input gives a 500, and nothing unauthenticated is ever stored.

Each provider is one entry in PROVIDERS: its callback path and a function that authenticates
arbitrary body bytes the way that provider would (or cannot, for bytes it could never sign).
Bodies are sent over real HTTP to one server per module, with its own SQLite file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SECRET_KEY, STANDARD_SECRET, TWILIO_TOKEN, LiveServer, make_settings

from receiver.providers.callback_auth import CallbackTokens
from receiver.providers.standard_signature import decode_secret, sign
from receiver.providers.twilio_signature import (
    BODY_HASH_PARAM,
    compute_body_hash,
    compute_signature,
)

MAX_BODY = 4096  # small, so "huge" inputs cross it cheaply
BOUNDED = settings(
    max_examples=60,
    # No per-example deadline: a loaded machine may take seconds over one, which is not a
    # failure; a hang still fails, on the client's own time-out.
    deadline=None,
    database=None,  # no .hypothesis directory: every run explores afresh
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _twilio_form(url: str, body: bytes) -> tuple[str, dict[str, str]]:
    try:
        params = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return url, {}  # Twilio never signs bytes that are not UTF-8 text: nothing to sign with
    return url, {"X-Twilio-Signature": compute_signature(url, params, TWILIO_TOKEN)}


def _twilio_json(url: str, body: bytes) -> tuple[str, dict[str, str]]:
    signed_url = f"{url}?{BODY_HASH_PARAM}={compute_body_hash(body)}"
    return signed_url, {"X-Twilio-Signature": compute_signature(signed_url, None, TWILIO_TOKEN)}


T23_SECRET = b"gateway-secret"
TOKENS = CallbackTokens([SECRET_KEY])


def _signed_url(provider: str) -> Callable[[str, bytes], tuple[str, dict[str, str]]]:
    """The receiver's own signed URL: the body plays no part in it."""
    token, _ = TOKENS.issue(provider)

    def authenticate(url: str, body: bytes) -> tuple[str, dict[str, str]]:
        return url.replace("{token}", token), {}

    return authenticate


def _telecom23(url: str, body: bytes) -> tuple[str, dict[str, str]]:
    """A signed URL, plus a gateway's HMAC of the body (TELECOM23_WEBHOOK_SECRET is set)."""
    url, _ = _signed_url("telecom23")(url, body)
    mac = hmac.new(T23_SECRET, body, hashlib.sha256).hexdigest()
    return url, {"X-Telecom23-Signature": f"sha256={mac}"}


def _standard(url: str, body: bytes) -> tuple[str, dict[str, str]]:
    msg_id, timestamp = f"msg_{hashlib.sha256(body).hexdigest()[:16]}", int(time.time())
    return url, {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(decode_secret(STANDARD_SECRET), msg_id, timestamp, body),
    }


@dataclass(frozen=True)
class ProviderCase:
    """How to send a provider a callback it would accept as authentic, for any body."""

    name: str
    path: str
    # (the callback URL, the body) -> (the URL to post to, the headers that authenticate it);
    # no headers when the provider could not have signed this body, or when the URL itself
    # carries the authentication.
    authenticate: Callable[[str, bytes], tuple[str, dict[str, str]]]
    content_type: str = "application/x-www-form-urlencoded"
    batches: bool = False  # one request may carry several reports


PROVIDERS = [
    ProviderCase("twilio", "/v1/webhook/twilio/sms-status", _twilio_form),
    ProviderCase("twilio-json", "/v1/webhook/twilio/sms-status", _twilio_json, "application/json"),
    ProviderCase(
        "telecom23", "/v1/webhook/telecom23/dlr/{token}", _telecom23, "application/json", True
    ),
    ProviderCase(
        "mesms", "/v1/webhook/mesms/dlr/{token}", _signed_url("mesms"), "application/json", True
    ),
    ProviderCase("standard", "/v1/webhook/standard/acme", _standard, "application/json"),
]
CASES = pytest.mark.parametrize("case", PROVIDERS, ids=lambda case: case.name)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("fuzz"),
        max_body=MAX_BODY,
        secret_key=SECRET_KEY,
        provider_env={
            "TELECOM23_WEBHOOK_SECRET": T23_SECRET.decode(),
            "STANDARD_WEBHOOK_SECRETS": f"acme:{STANDARD_SECRET}",
        },
    )
    live = LiveServer(settings).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def stored(server: LiveServer) -> tuple[int, int]:
    """(events, messages) in the store: committed before any 2xx, so counting is exact."""
    conn = sqlite3.connect(Path(server.settings.database))
    try:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        return events, messages
    finally:
        conn.close()


def assert_json_error(response: httpx.Response) -> None:
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert isinstance(body["error_code"], str) and body["error_code"]


# -- strategies ---------------------------------------------------------------------------------

TWILIO_FIELDS = ["MessageSid", "SmsSid", "MessageStatus", "SmsStatus", "AccountSid", "To"]
TWILIO_FIELDS += ["From", "ErrorCode", "RawDlrDoneDate", "ApiVersion"]
# The other providers' fields (23 Telecom, me-sms, Standard Webhooks), so bodies reach past
# the "missing field" checks into each parser.
OTHER_FIELDS = ["message_id", "client_message_id", "status", "status_code", "dnis", "recipient"]
OTHER_FIELDS += ["done_date", "delivered_at", "uuid", "msisdn", "updatedAt", "errorCode"]
OTHER_FIELDS += ["recipients", "data", "status_provider", "timestamp", "error_code"]
STATUSES = ["delivered", "sent", "failed", "undelivered", "queued", "read", "DELIVERED", " x "]
STATUSES += ["DELIVRD", "UNDELIV", "ENROUTE", "success", "timeout", "blocked"]
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)  # urlencode needs UTF-8
field_names = st.sampled_from(TWILIO_FIELDS + OTHER_FIELDS) | text
field_values = (
    st.sampled_from(STATUSES)
    | text
    | st.integers(0, MAX_BODY * 2).map(lambda n: "x" * n)  # up to twice the body limit
    | st.just("'; DROP TABLE events; --")
)
pairs = st.lists(st.tuples(field_names, field_values), max_size=12)
# A callback's two required fields with anything for values, plus any other fields.
callbacks = st.tuples(
    st.tuples(st.just("MessageSid"), text.map(lambda t: "SM" + t)),
    st.tuples(st.just("MessageStatus"), st.sampled_from(STATUSES) | text),
    pairs,
).map(lambda t: [t[0], t[1], *t[2]])
# Repeated keys included: a list of pairs, not a dict.
forms = (pairs | callbacks).map(lambda p: urlencode(p).encode())
json_values = field_values | st.integers() | st.none() | st.lists(st.integers())
json_objects = st.dictionaries(field_names, json_values, max_size=10)
# Near-valid reports of the other providers: the right ids and statuses, anything around them,
# alone, in a list, or nested where each provider nests (data, recipients).
UUID = "0b6f2a6e-8d1c-4f7e-9a53-2a1f0c9e7b11"
reports = st.fixed_dictionaries(
    {
        "message_id": text | st.integers(),
        "status": st.sampled_from(STATUSES) | text,
        "uuid": st.just(UUID) | text,
        "msisdn": text,
    },
    optional={
        "done_date": text | st.integers(),
        "status_code": text | st.integers() | st.none(),
        "status_provider": st.sampled_from(["telecom23", "mesms", "twilio", "x"]) | st.none(),
        "updatedAt": text,
    },
)
nested = (
    reports
    | st.lists(reports | json_objects, max_size=4)
    | reports.map(lambda r: {"data": r})
    | st.lists(reports, max_size=4).map(lambda rs: {"uuid": UUID, "recipients": rs})
)
json_bodies = (json_objects | callbacks.map(dict) | nested).map(lambda d: json.dumps(d).encode())
raw = st.binary(max_size=512)  # invalid UTF-8, NULs, anything
bodies = forms | json_bodies | raw
callback_bodies = callbacks.map(lambda p: urlencode(p).encode()) | callbacks.map(
    lambda p: json.dumps(dict(p)).encode()
)
content_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/json",
        "text/plain; charset=utf-8",
        "multipart/form-data; boundary=zzz",
        "application/x-www-form-urlencoded; charset=latin-1",
        "",
    ]
)
bad_signatures = st.none() | st.text(string.ascii_letters + string.digits + "+/=", max_size=40)


# -- callbacks ----------------------------------------------------------------------------------


@CASES
@BOUNDED
@given(body=bodies, content_type=content_types, signature=bad_signatures)
def test_an_unauthenticated_callback_is_refused_and_stores_nothing(
    server: LiveServer,
    client: httpx.Client,
    case: ProviderCase,
    body: bytes,
    content_type: str,
    signature: str | None,
) -> None:
    url, good = case.authenticate(server.base_url + case.path, body)
    # A missing or made-up signature; random letters never match a real one.
    headers = {name: signature for name in good if signature is not None}
    if not good:  # the URL's token authenticates: make that up instead
        token = (signature or "").replace("/", "") or "x"  # a "/" would route elsewhere
        url = server.base_url + case.path.replace("{token}", token)
    elif headers == good:
        return
    before = stored(server)
    response = client.post(url, content=body, headers={"Content-Type": content_type, **headers})
    assert_json_error(response)
    assert response.status_code in (403, 413)
    assert stored(server) == before


@CASES
@BOUNDED
@given(body=bodies, other=bodies, content_type=content_types)
def test_a_signature_for_another_body_is_refused_and_stores_nothing(
    server: LiveServer,
    client: httpx.Client,
    case: ProviderCase,
    body: bytes,
    other: bytes,
    content_type: str,
) -> None:
    _, good = case.authenticate(server.base_url + case.path, other)
    url, own = case.authenticate(server.base_url + case.path, body)
    if good == own:  # the same signature: the bodies are equivalent for this provider
        return
    before = stored(server)
    response = client.post(url, content=body, headers={"Content-Type": content_type, **good})
    assert_json_error(response)
    assert response.status_code in (403, 413)
    assert stored(server) == before


@CASES
@BOUNDED
@given(body=bodies | callback_bodies, content_type=content_types)
def test_an_authentic_callback_with_any_body_is_never_a_500(
    server: LiveServer,
    client: httpx.Client,
    case: ProviderCase,
    body: bytes,
    content_type: str,
) -> None:
    url, headers = case.authenticate(server.base_url + case.path, body)
    before = stored(server)
    response = client.post(url, content=body, headers={"Content-Type": content_type, **headers})
    assert_json_error(response)
    after = stored(server)
    if response.status_code == 204:
        if case.batches:  # one report or a batch: at least one event, a message at most each
            assert after[0] > before[0]
            assert after[1] - before[1] <= after[0] - before[0]
        else:
            assert after[0] == before[0] + 1  # one callback, one event
            assert after[1] - before[1] in (0, 1)
    else:
        assert response.status_code in (400, 403, 413)
        assert after == before
    if len(body) > MAX_BODY:
        assert response.status_code == 413


# -- query API ----------------------------------------------------------------------------------

QUERY_NAMES = ["status", "provider", "to", "since", "until", "limit", "cursor"]
query_values = (
    text
    | st.integers(-(2**70), 2**70).map(str)
    | st.sampled_from(["2026-11-25", "2026-11-25T10:00:00+01:00", "0001-01-01", "9999-12-31"])
    | st.sampled_from(["delivered", "twilio", "+15558675310", "%", "_", "' OR 1=1 --", "\x00"])
)
queries = st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | text, query_values), max_size=6)


@BOUNDED
@given(query=queries, path=st.sampled_from(["/v1/messages", "/v1/stats"]))
def test_any_query_is_answered_or_refused_with_an_error_code(
    server: LiveServer, client: httpx.Client, query: list[tuple[str, str]], path: str
) -> None:
    response = client.get(path, params=query)
    assert_json_error(response)
    assert response.status_code in (200, 400)
    if response.status_code == 200 and path == "/v1/messages":
        limit = dict(query).get("limit")
        cap = int(limit) if limit is not None and limit.strip().isdigit() else 100
        assert len(response.json()["messages"]) <= min(cap, 1000)


@BOUNDED
@given(message_id=text.filter(bool), query=queries)
def test_any_message_id_is_found_or_not_never_a_500(
    server: LiveServer, client: httpx.Client, message_id: str, query: list[tuple[str, str]]
) -> None:
    for suffix in ("", "/events"):
        response = client.get(
            "/v1/messages/" + quote(message_id, safe="") + suffix, params=query[:1] or None
        )
        assert_json_error(response)
        assert response.status_code in (200, 400, 404, 409)
