"""The callback URL a user pastes into a provider's console: the `warning` of
GET /v1/callback-url when no provider could reach it, and `receiver callback-url PROVIDER`,
which prints the same URL from the command line (run here as a separate process)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from support import SECRET_KEY, LiveServer, make_settings, message

from receiver.api.callback_urls import unreachable_warning

BIN = Path(sys.executable).parent / "receiver"
PUBLIC = "https://sms.example.com"
PREFIXES = ("RECEIVER_", "TWILIO_", "TELECOM23_", "MESMS_", "STANDARD_WEBHOOK_")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`receiver ARGS` with only the given settings (none of the caller's own)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    clean.pop("HOST", None)
    clean.pop("PORT", None)
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=60, env={**clean, **env}
    )


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.9.9.9",
        "[::1]",
        "localhost",
        "LOCALHOST",
        "app.localhost",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.20",
        "169.254.10.1",
        "[fd12:3456::1]",
        "[fe80::1]",
        "[::ffff:10.0.0.1]",
        "0.0.0.0",
        "100.64.0.1",
        "receiver",  # a container's name: resolves inside the compose network only
        "printer.local",
    ],
)
def test_a_host_no_provider_can_reach_gets_a_warning(host: str) -> None:
    warning = unreachable_warning(f"http://{host}:8000/v1/webhook/mesms/dlr/abc")
    assert warning is not None and "RECEIVER_PUBLIC_URL" in warning


@pytest.mark.parametrize(
    "host", ["sms.example.com", "203.0.114.7", "8.8.8.8", "[2606:4700::1111]", "172.32.0.1"]
)
def test_a_public_host_gets_no_warning(host: str) -> None:
    """Read as written, with no DNS lookup: a name with a dot is taken to be public."""
    assert unreachable_warning(f"https://{host}/v1/webhook/mesms/dlr/abc") is None


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose public URL is set, as a deployed one is."""
    settings = make_settings(
        tmp_path_factory.mktemp("public"), secret_key=SECRET_KEY, public_url=PUBLIC
    )
    server = LiveServer(settings)
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server without RECEIVER_PUBLIC_URL: its URLs are built on 127.0.0.1."""
    server = LiveServer(make_settings(tmp_path_factory.mktemp("local"), secret_key=SECRET_KEY))
    yield server.start()
    server.stop()


def get_url(server: LiveServer, **params: str) -> dict[str, object]:
    with server.client() as client:
        response = client.get("/v1/callback-url", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.mark.parametrize("provider", ["twilio", "telecom23", "mesms"])
def test_the_api_answer_warns_about_a_loopback_url(local: LiveServer, provider: str) -> None:
    """In the answer the user reads, not only in the server's log."""
    body = get_url(local, provider=provider)
    assert str(body["url"]).startswith("http://127.0.0.1:")
    warning = body["warning"]
    assert isinstance(warning, str) and "RECEIVER_PUBLIC_URL" in warning
    assert "127.0.0.1" in warning


def test_the_api_answer_warns_about_a_private_public_url(tmp_path: Path) -> None:
    """RECEIVER_PUBLIC_URL set to a LAN address is no better than unset."""
    settings = make_settings(tmp_path, secret_key=SECRET_KEY, public_url="http://192.168.1.20:8000")
    server = LiveServer(settings).start()
    try:
        body = get_url(server, provider="telecom23")
    finally:
        server.stop()
    assert str(body["url"]).startswith("http://192.168.1.20:8000/v1/webhook/telecom23/dlr/")
    assert "RECEIVER_PUBLIC_URL" in str(body["warning"])


@pytest.mark.parametrize("provider", ["twilio", "telecom23", "mesms"])
def test_a_public_url_has_no_warning_key(public: LiveServer, provider: str) -> None:
    body = get_url(public, provider=provider)
    assert str(body["url"]).startswith(PUBLIC + "/")
    assert "warning" not in body


# --- receiver callback-url PROVIDER -------------------------------------------------------


@pytest.mark.parametrize("provider", ["telecom23", "mesms"])
def test_the_command_prints_the_url_the_api_gives(public: LiveServer, provider: str) -> None:
    result = run(
        "callback-url",
        provider,
        "--label",
        "main",
        RECEIVER_SECRET_KEY=SECRET_KEY,
        RECEIVER_PUBLIC_URL=PUBLIC,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # a public URL: nothing to warn about
    assert result.stdout == str(get_url(public, provider=provider, label="main")["url"]) + "\n"


def test_the_printed_url_takes_callbacks(public: LiveServer) -> None:
    """The URL is not only well formed: the service accepts a report sent to it."""
    result = run(
        "callback-url", "telecom23", RECEIVER_SECRET_KEY=SECRET_KEY, RECEIVER_PUBLIC_URL=PUBLIC
    )
    assert result.returncode == 0, result.stderr
    path = urlsplit(result.stdout.strip()).path  # sent to the test server, not to the public host
    message_id = f"api_42_1743667200123456789_{uuid.uuid4().hex[:16]}"
    report = {"message_id": message_id, "status": "DELIVRD", "status_code": "000"}
    assert httpx.post(public.base_url + path, json=report).status_code == 204
    assert message(public, message_id, "telecom23")["status"] == "delivered"


@pytest.mark.parametrize(
    ("env", "base"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"HOST": "0.0.0.0", "PORT": "9000"}, "http://0.0.0.0:9000"),
        ({"HOST": "::1"}, "http://[::1]:8000"),
    ],
)
def test_a_url_no_provider_can_reach_is_printed_with_a_warning_on_stderr(
    env: dict[str, str], base: str
) -> None:
    result = run("callback-url", "mesms", RECEIVER_SECRET_KEY=SECRET_KEY, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(base + "/v1/webhook/mesms/dlr/")
    assert result.stdout.count("\n") == 1  # the URL alone on stdout, for scripts
    assert "warning" in result.stderr and "RECEIVER_PUBLIC_URL" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["nosuch"], {"RECEIVER_SECRET_KEY": SECRET_KEY}, "unknown provider 'nosuch'"),
        (["twilio"], {"RECEIVER_SECRET_KEY": SECRET_KEY}, "/v1/webhook/twilio/sms-status"),
        (["standard"], {"RECEIVER_SECRET_KEY": SECRET_KEY}, "signs its own callbacks"),
        (["telecom23"], {}, "set RECEIVER_SECRET_KEY"),
        (["mesms", "--label", "no spaces"], {"RECEIVER_SECRET_KEY": SECRET_KEY}, "label"),
        (["mesms"], {"RECEIVER_SECRET_KEY": "short"}, "RECEIVER_SECRET_KEY must be"),
    ],
)
def test_a_provider_without_signed_urls_or_a_missing_key_is_a_clear_error(
    args: list[str], env: dict[str, str], says: str
) -> None:
    result = run("callback-url", *args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_the_command_is_listed_in_help() -> None:
    result = run("--help")
    assert result.returncode == 0 and "callback-url" in result.stdout
    result = run("callback-url", "--help")
    assert result.returncode == 0
    assert "RECEIVER_PUBLIC_URL" in result.stdout and "--label" in result.stdout
