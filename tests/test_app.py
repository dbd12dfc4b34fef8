"""The app factory: its start-up summary and warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
from support import STANDARD_SECRET, LiveServer, make_settings

from receiver.providers.callback_auth import CallbackTokens


def startup_events(tmp_path: Path, **overrides: Any) -> list[dict[str, Any]]:
    with structlog.testing.capture_logs() as logs:
        LiveServer(make_settings(tmp_path, **overrides)).start().stop()
    return logs


def test_startup_names_the_callback_urls_to_paste_into_each_provider(tmp_path: Path) -> None:
    events = startup_events(
        tmp_path,
        public_url="https://sms.example.com",
        api_token="t",
        secret_key="k" * 32,
        provider_env={"STANDARD_WEBHOOK_SECRETS": f"acme:{STANDARD_SECRET}"},
    )
    started = next(e for e in events if e["event"] == "started")
    urls = started["callback_urls"]
    assert set(urls) == {"twilio", "telecom23", "mesms", "standard/acme"}
    assert urls["twilio"] == "https://sms.example.com/v1/webhook/twilio/sms-status"
    assert urls["standard/acme"] == "https://sms.example.com/v1/webhook/standard/acme"
    tokens = CallbackTokens(["k" * 32])
    for name in ("telecom23", "mesms"):
        prefix = f"https://sms.example.com/v1/webhook/{name}/dlr/"
        assert urls[name].startswith(prefix)
        assert tokens.verify(urls[name].removeprefix(prefix), name).current_key
    assert started["migrations_applied"] == ["0001_messages_and_events"]
    assert not any(e["event"].startswith("api_") for e in events)


@pytest.mark.parametrize(
    "overrides",
    [
        {"public_url": "https://sms.example.com"},
        {"trust_forwarded": True},
        {"host": "0.0.0.0"},
    ],
)
def test_an_exposed_service_without_a_token_is_warned_about(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    names = [e["event"] for e in startup_events(tmp_path, **overrides)]
    assert "api_token_unset" in names
    assert "api_exposed_without_token" in names


def test_a_local_sidecar_without_a_token_gets_only_the_loopback_notice(tmp_path: Path) -> None:
    names = [e["event"] for e in startup_events(tmp_path)]
    assert "api_token_unset" in names
    assert "api_exposed_without_token" not in names


def test_missing_provider_credentials_are_warned_about(tmp_path: Path) -> None:
    events = startup_events(tmp_path, twilio_auth_token=None)
    unconfigured = {e["provider"] for e in events if e["event"] == "provider_not_configured"}
    assert unconfigured == {"twilio", "telecom23", "mesms", "standard"}
    started = next(e for e in events if e["event"] == "started")
    assert set(started["callback_urls"]) == {"twilio"}  # signed URLs need the secret key
