"""The app factory: its start-up summary and warnings."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
from support import STANDARD_SECRET, LiveServer, make_settings

from receiver import __version__
from receiver.logging import configure_logging


def startup_events(tmp_path: Path, **overrides: Any) -> list[dict[str, Any]]:
    with structlog.testing.capture_logs() as logs:
        LiveServer(make_settings(tmp_path, **overrides)).start().stop()
    return logs


def test_startup_names_every_providers_callback_url_signed_urls_included(tmp_path: Path) -> None:
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
    for name in ("telecom23", "mesms"):  # a signed URL is a credential: never in the logs
        assert urls[name].startswith(f"GET /v1/callback-url?provider={name} ")
    assert "/dlr/" not in str(events)
    assert started["providers_not_configured"] == []


def test_startup_is_one_summary_with_the_callback_urls_to_paste_into_each_provider(
    tmp_path: Path,
) -> None:
    events = startup_events(tmp_path, public_url="https://sms.example.com", api_token="t")
    started = next(e for e in events if e["event"] == "started")
    assert started == {
        "event": "started",
        "log_level": "info",
        "version": __version__,
        "store": "sqlite",
        "database": str(tmp_path / "receiver.db"),
        "migrations_applied": [
            "0001_messages_and_events",
            "0002_prunable_index",
            "0003_status_counts",
            "0004_poll_queue",
            "0006_messages_one_id_index",
            "0007_push_outbox",
            "0008_deadlines_and_changes",
            "0009_registered_sent_at",
            "0010_sends",
            "0011_dashboard_rollups",
            "0012_bulk_registration",
            "0013_message_parts",
            "0015_part_events",
            "0016_counted_per_batch",
        ],
        "providers_configured": ["twilio"],
        "providers_not_configured": ["telecom23", "mesms", "standard"],
        "public_url": "https://sms.example.com",
        "callback_urls": {"twilio": "https://sms.example.com/v1/webhook/twilio/sms-status"},
        "polling": "off",  # the tests' default: never ask the real providers
    }
    assert [e["event"] for e in events if e["log_level"] != "debug"] == ["started", "stopped"]


def test_without_a_public_url_the_summary_says_the_urls_use_the_bind_address(
    tmp_path: Path,
) -> None:
    events = startup_events(tmp_path, host="127.0.0.1", port=8123, api_token="t")
    started = next(e for e in events if e["event"] == "started")
    assert started["public_url"] is None
    assert started["callback_urls"] == {
        "twilio": "http://127.0.0.1:8123/v1/webhook/twilio/sms-status"
    }
    assert "RECEIVER_PUBLIC_URL" in started["note"]


def test_the_summary_database_is_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    events = startup_events(tmp_path, database="./here.db")
    started = next(e for e in events if e["event"] == "started")
    assert started["database"] == str(tmp_path / "here.db")


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


def test_unconfigured_providers_are_named_and_none_configured_is_warned_about(
    tmp_path: Path,
) -> None:
    events = startup_events(tmp_path, twilio_auth_token=None)
    started = next(e for e in events if e["event"] == "started")
    assert (started["providers_configured"], started["providers_not_configured"]) == (
        [],
        ["twilio", "telecom23", "mesms", "standard"],
    )
    assert set(started["callback_urls"]) == {"twilio"}  # signed URLs need the secret key
    warning = next(e for e in events if e["event"] == "no_provider_configured")
    assert warning["log_level"] == "warning"


def test_the_console_summary_reads_in_the_order_it_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Version first, callback URLs last, each URL printed whole so it can be copied."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info", "console", cache=False)
        LiveServer(make_settings(tmp_path, public_url="https://sms.example.com")).start().stop()
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in capsys.readouterr().out.splitlines()]
    summary = next(ln for ln in lines if re.search(r"\] started ", ln))
    keys = re.findall(r" (\w+)=", summary)
    assert keys[0] == "version" and keys[-1] == "callback_urls"
    assert "https://sms.example.com/v1/webhook/twilio/sms-status" in summary
