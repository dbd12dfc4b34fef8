"""The provider registry: what each adapter declares, and that a new one is one module and
one registry line (routes, settings and the query API follow)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar

import httpx
import pytest
from support import SECRET_KEY, STANDARD_SECRET, LiveServer, assert_error, make_settings

from receiver.engine import Status
from receiver.providers import REGISTRY, callback_path, provider_env_names
from receiver.providers.base import CallbackRejected, InboundRequest, StatusEvent
from receiver.settings import Settings, SettingsError, read_str


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_adapter_declares_itself(name: str) -> None:
    cls = REGISTRY[name]
    assert cls.name == name
    assert cls.status_map and all(isinstance(s, Status) for s in cls.status_map.values())
    assert not cls.callback_path.startswith("/")
    assert callback_path(name).startswith(f"/v1/webhook/{name}/")
    assert all(var.isupper() for var in cls.env_vars)
    assert cls.signed_url == ("{token}" in cls.callback_path)


def test_provider_variables_are_read_only_through_settings() -> None:
    names = provider_env_names()
    assert len(names) == len(set(names))
    assert set(names) <= set(Settings().env_names())


class EchoProvider:
    """A made-up provider: a shared-secret header, a JSON body {id, state}."""

    name: ClassVar[str] = "echo"
    status_map: ClassVar[Mapping[str, Status]] = {"ok": Status.DELIVERED, "ko": Status.FAILED}
    callback_path: ClassVar[str] = "report"
    env_vars: ClassVar[tuple[str, ...]] = ("ECHO_SECRET",)
    signed_url: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.secret = read_str(settings.provider_env, "ECHO_SECRET")
        if self.secret is not None and len(self.secret) < 4:
            raise SettingsError("ECHO_SECRET must be at least 4 characters")

    @property
    def configured(self) -> bool:
        return self.secret is not None

    @property
    def message_providers(self) -> tuple[str, ...]:
        return (self.name,)

    def read_callback(self, request: InboundRequest) -> list[StatusEvent]:
        if self.secret is None or request.headers.get("x-echo-secret") != self.secret:
            raise CallbackRejected(403, "signature_invalid", "wrong secret")
        data = json.loads(request.body)
        return [
            StatusEvent(
                provider=self.name,
                message_id=data["id"],
                provider_status=data["state"],
                status=self.status_map.get(data["state"]),
            )
        ]


@pytest.fixture
def with_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "echo", EchoProvider)


@pytest.mark.usefixtures("with_echo")
def test_a_new_provider_is_one_class_and_one_registry_line(
    start_server: Callable[..., LiveServer],
) -> None:
    assert "ECHO_SECRET" in Settings().env_names()
    with pytest.raises(SettingsError, match="ECHO_SECRET"):
        Settings.from_env({"ECHO_SECRET": "x"})
    settings = Settings.from_env({"ECHO_SECRET": "s3cret"})
    server = start_server(provider_env=settings.provider_env)
    url = f"{server.base_url}/v1/webhook/echo/report"
    assert_error(httpx.post(url, json={"id": "e1", "state": "ok"}), 403, "signature_invalid")
    response = httpx.post(
        url, json={"id": "e1", "state": "ok"}, headers={"x-echo-secret": "s3cret"}
    )
    assert response.status_code == 204
    with server.client() as client:
        got = client.get("/v1/messages/e1", params={"provider": "echo"}).json()
        assert (got["provider"], got["status"]) == ("echo", "delivered")
        fixed = client.get("/v1/callback-url", params={"provider": "echo"}).json()
        assert "RECEIVER_PUBLIC_URL" in fixed.pop("warning")  # a loopback test server
        assert fixed == {"provider": "echo", "url": url, "signed": False}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("urls"),
        secret_key=SECRET_KEY,
        api_token="tok",
        provider_env={"STANDARD_WEBHOOK_SECRETS": f"acme:{STANDARD_SECRET}"},
    )
    server = LiveServer(settings)
    yield server.start()
    server.stop()


def get_url(server: LiveServer, token: str | None = "tok", **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with server.client() as client:
        return client.get("/v1/callback-url", params=params, headers=headers)


def test_callback_url_gives_fixed_paths_for_self_signing_providers(api: LiveServer) -> None:
    twilio = get_url(api, provider="twilio").json()
    assert "RECEIVER_PUBLIC_URL" in twilio.pop("warning")  # a loopback test server
    assert twilio == {
        "provider": "twilio",
        "url": f"{api.base_url}/v1/webhook/twilio/sms-status",
        "signed": False,
    }
    standard = get_url(api, provider="standard", source="acme").json()
    assert standard["url"] == f"{api.base_url}/v1/webhook/standard/acme"
    assert_error(get_url(api, provider="standard", source="nosuch"), 409, "provider_not_configured")


def test_callback_url_is_fresh_and_never_cached(api: LiveServer) -> None:
    response = get_url(api, provider="telecom23", label="eu")
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["label"] == "eu" and len(response.json()["key_id"]) == 8


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "invalid_parameter"),
        ({"provider": "nope"}, 400, "invalid_parameter"),
        ({"provider": "twilio", "label": "x"}, 400, "invalid_parameter"),
        ({"provider": "telecom23", "label": "has space"}, 400, "invalid_parameter"),
        ({"provider": "telecom23", "source": "acme"}, 400, "invalid_parameter"),
        ({"provider": "standard"}, 400, "invalid_parameter"),
        ({"provider": "standard", "source": "Bad Source"}, 400, "invalid_parameter"),
        ({"provider": "telecom23", "extra": "1"}, 400, "unknown_parameter"),
    ],
)
def test_callback_url_refuses_bad_parameters(
    api: LiveServer, params: dict[str, str], status: int, code: str
) -> None:
    assert_error(get_url(api, **params), status, code)


def test_callback_url_needs_the_api_token(api: LiveServer) -> None:
    assert_error(get_url(api, token=None, provider="telecom23"), 401, "unauthorized")
    assert_error(get_url(api, token="wrong", provider="telecom23"), 401, "unauthorized")
