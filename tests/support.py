"""Test support: a real uvicorn server on a loopback port, and Twilio request signing."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import uvicorn
from starlette.datastructures import MultiDict
from twilio.request_validator import RequestValidator

from receiver.app import create_app
from receiver.settings import Settings
from receiver.store import Store

TWILIO_TOKEN = "test-auth-token-primary"
TWILIO_ACCOUNT = "AC00000000000000000000000000000001"
CALLBACK_PATH = "/v1/webhook/twilio/sms-status"
SECRET_KEY = "test-secret-key-0123456789abcdef"
# The Standard Webhooks spec's own example secret (its libraries' test vectors use it).
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# Tests wait for conditions, never for a guessed time: WAIT bounds how long a condition may take
# on a loaded machine (only a failing test waits that long), and POLL_INTERVAL is how often it
# is looked at (a slow machine looks fewer times, it does not fail).
WAIT = 30.0
_T = TypeVar("_T")
POLL_INTERVAL = 0.02


def wait_until(check: Callable[[], _T], timeout: float = WAIT, what: str = "") -> _T:
    """Return `check()`'s first true answer; AssertionError if none came within `timeout`."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
        time.sleep(POLL_INTERVAL)
    return result


async def wait_until_async(
    check: Callable[[], object], timeout: float = WAIT, what: str = ""
) -> None:
    """wait_until inside an event loop: the loop runs other tasks while it waits."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
        await asyncio.sleep(POLL_INTERVAL)


@dataclass
class AppServer:
    """Any ASGI app under real uvicorn on 127.0.0.1 (a free port), in a thread."""

    app: Any
    base_url: str = ""
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> AppServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # proxy_headers off: the app reads forwarded headers itself, when told to trust them.
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="on", proxy_headers=False, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + WAIT
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(POLL_INTERVAL)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=WAIT)


@dataclass
class LiveServer:
    """The real app under uvicorn on 127.0.0.1, in a thread, with its own SQLite file."""

    settings: Settings
    store: Store | None = None
    _server: AppServer | None = field(default=None, repr=False)

    def start(self) -> LiveServer:
        self._server = AppServer(create_app(self.settings, self.store)).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the server first"
        return self._server.base_url

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=WAIT, **kwargs)

    @property
    def callback_url(self) -> str:
        return self.base_url + CALLBACK_PATH


def new_sid() -> str:
    """A fresh message SID in Twilio's shape, so tests can share a server."""
    return "SM" + uuid.uuid4().hex


def assert_error(response: httpx.Response, status: int, error_code: str) -> dict[str, Any]:
    """The response is the JSON error every failure must be: {error_code, message[, details]}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error_code"] == error_code
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"error_code", "message", "details"}
    return body


# Twilio's variables, which tests may give as keyword arguments of make_settings.
TWILIO_VARS = {
    "twilio_auth_token": "TWILIO_AUTH_TOKEN",
    "twilio_auth_token_secondary": "TWILIO_AUTH_TOKEN_SECONDARY",
    "twilio_accounts": "TWILIO_ACCOUNTS",
}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test server: loopback, its own database, Twilio's test token, no polling.

    Providers' variables go in `provider_env`; Twilio's may also be keyword arguments
    (twilio_auth_token=None removes the token; twilio_accounts takes (sid, token) pairs).
    """
    env = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN}
    for key, var in TWILIO_VARS.items():
        if key not in overrides:
            continue
        value = overrides.pop(key)
        if value is None:
            env.pop(var, None)
        else:
            env[var] = value if isinstance(value, str) else ",".join(f"{s}:{t}" for s, t in value)
    env.update(overrides.pop("provider_env", {}))
    base = Settings(
        host="127.0.0.1",
        port=0,
        database=str(tmp_path / "receiver.db"),
        provider_env=MappingProxyType(env),
        # Off unless a test turns it on with its API bases on the simulator: a test server
        # must never ask the real providers' APIs.
        polling=False,
    )
    return base.replace(**overrides)


def twilio_form(
    url: str, params: Mapping[str, str] | list[tuple[str, str]], token: str = TWILIO_TOKEN
) -> tuple[bytes, dict[str, str]]:
    """A form body and headers signed by Twilio's own SDK, as Twilio would send them."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    # A MultiDict, as Flask or Django would hand the SDK: repeated keys keep every value.
    signature = RequestValidator(token).compute_signature(url, MultiDict(pairs))
    return urlencode(pairs).encode(), {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
    }


def status_params(message_sid: str, status: str, **extra: str) -> dict[str, str]:
    """The fields of a real Twilio SMS status callback."""
    params = {
        "SmsSid": message_sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": "+15558675310",
        "MessageSid": message_sid,
        "AccountSid": TWILIO_ACCOUNT,
        "From": "+15017122661",
        "ApiVersion": "2010-04-01",
    }
    params.update(extra)
    return params


def post_status(
    client: httpx.Client,
    url: str,
    message_sid: str,
    status: str,
    token: str = TWILIO_TOKEN,
    **extra: str,
) -> httpx.Response:
    body, headers = twilio_form(url, status_params(message_sid, status, **extra), token)
    return client.post(url, content=body, headers=headers)


def send_head_only(base_url: str, path: str, content_length: int, start: bytes = b"") -> bytes:
    """POST `path` declaring `content_length` but sending only `start`; return the whole response.

    Proves the server answers before the body arrives (it can't have read what was never sent).
    """
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {content_length}\r\n\r\n".encode()
            + start
        )
        response = b""
        while b"\r\n\r\n" not in response or not _complete(response):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    return response


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


# --- reading results back, for any provider ------------------------------------------


def callback_url(server: LiveServer, provider: str, **params: str) -> str:
    """A signed callback URL, asked of GET /v1/callback-url as a user would."""
    with server.client() as client:
        response = client.get("/v1/callback-url", params={"provider": provider, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["signed"] is True and body["provider"] == provider
    url: str = body["url"]
    assert url.startswith(f"{server.base_url}/v1/webhook/{provider}/dlr/")
    return url


def message(server: LiveServer, message_id: str, provider: str | None = None) -> dict[str, Any]:
    """GET /v1/messages/{id}, which must answer 200."""
    params = {"provider": provider} if provider else {}
    with server.client() as client:
        response = client.get(f"/v1/messages/{message_id}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def events(
    server: LiveServer, message_id: str, provider: str | None = None
) -> list[dict[str, Any]]:
    """GET /v1/messages/{id}/events, which must answer 200."""
    params = {"provider": provider} if provider else {}
    with server.client() as client:
        response = client.get(f"/v1/messages/{message_id}/events", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["events"]
    return items


def query(server: LiveServer, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the server's database."""
    with sqlite3.connect(f"file:{server.settings.database}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def count_events(server: LiveServer, message_id: str | None = None) -> int:
    """Events stored, for one message or in all."""
    with sqlite3.connect(f"file:{server.settings.database}?mode=ro", uri=True) as conn:
        sql, args = "SELECT count(*) FROM events", ()
        if message_id is not None:
            sql, args = sql + " WHERE message_id = ?", (message_id,)
        count: int = conn.execute(sql, args).fetchone()[0]
    return count


# --- servers in child processes ---------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (for a child process to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_healthz(
    base_url: str, proc: subprocess.Popen[Any], timeout: float = WAIT
) -> httpx.Response:
    """The first answer of a starting server's /healthz; RuntimeError if it exits or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(base_url + "/healthz", timeout=5)
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not start (exit code {proc.returncode})"
                ) from None
            time.sleep(POLL_INTERVAL)
