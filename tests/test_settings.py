"""Settings: read from the environment once, checked at start, secrets kept out of repr."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from receiver.providers.twilio import TwilioProvider
from receiver.settings import Settings, SettingsError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_run_a_local_sidecar() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.database) == ("127.0.0.1", 8000, "./receiver.db")
    assert s.api_token is None and s.public_url is None and s.trust_forwarded is False
    assert s.unknown_messages == "create"


def test_every_variable_is_read() -> None:
    env = {
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "RECEIVER_DATABASE": "/data/r.db",
        "RECEIVER_DB_BUSY_TIMEOUT_MS": "250",
        "DATABASE_URL": "postgres://u:pw@db.example.com:5432/receiver",
        "RECEIVER_PG_POOL_SIZE": "4",
        "RECEIVER_ALLOW_EPHEMERAL": "on",
        "RECEIVER_API_TOKEN": "tok",
        "RECEIVER_METRICS_TOKEN": "scrape",
        "RECEIVER_MAX_BODY": "2048",
        "RECEIVER_PUBLIC_URL": "https://sms.example.com/prefix/",
        "RECEIVER_TRUST_FORWARDED": "yes",
        "RECEIVER_UNKNOWN_MESSAGES": "hold",
        "RECEIVER_LOG_LEVEL": "debug",
        "RECEIVER_LOG_FORMAT": "json",
        "RECEIVER_RETENTION_DAYS": "0",
        "RECEIVER_EXPORT_MAX_ROWS": "5000",
        "RECEIVER_MAX_WAITERS": "2000",
        "RECEIVER_MAX_STREAMS": "7",
        "RECEIVER_STREAM_PING": "5s",
        "TWILIO_AUTH_TOKEN": "main",
        "TWILIO_AUTH_TOKEN_SECONDARY": "next",
        "TWILIO_ACCOUNTS": "AC1:one, AC2:two,AC1:one-new",
        "RECEIVER_SECRET_KEY": "new-key-0123456789abcdef",
        "RECEIVER_SECRET_KEY_FALLBACKS": "old-key-0123456789abcdef, older-key-0123456789abc",
        "TELECOM23_WEBHOOK_SECRET": "gateway-secret",
        "TELECOM23_ALLOWED_IPS": "203.0.113.0/24, 2001:db8::1",
        "MESMS_ALLOWED_IPS": "198.51.100.7",
        "STANDARD_WEBHOOK_SECRETS": "acme:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "STANDARD_WEBHOOK_TOLERANCE": "120",
        "RECEIVER_POLLING": "off",
        "RECEIVER_DLR_GRACE": "90s",
        "RECEIVER_POLL_MAX_AGE": "2d",
        "RECEIVER_POLL_BACKOFF": "30",
        "RECEIVER_POLL_BACKOFF_MAX": "15m",
        "RECEIVER_POLL_INTERVAL": "500ms",
        "RECEIVER_POLL_BATCH": "50",
        "RECEIVER_POLL_LEASE": "1m",
        "RECEIVER_POLL_TIMEOUT": "5s",
        "TWILIO_API_BASE": "https://twilio.example.test",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_POLL_RATE": "2",
        "TWILIO_POLL_CONCURRENCY": "2",
        "TWILIO_DLR_GRACE": "1m",
        "TELECOM23_API_BASE": "https://t23.example.test/api/v1",
        "TELECOM23_API_KEY": "t23-key",
        "TELECOM23_POLL_RATE": "2",
        "TELECOM23_POLL_CONCURRENCY": "2",
        "TELECOM23_DLR_GRACE": "1m",
        "MESMS_API_BASE": "https://mesms.example.test",
        "MESMS_API_KEY": "mesms-key",
        "MESMS_POLL_RATE": "2",
        "MESMS_POLL_CONCURRENCY": "2",
        "MESMS_DLR_GRACE": "1m",
        "RECEIVER_PUSH_URL": "http://127.0.0.1:8080/sms-status",
        "RECEIVER_PUSH_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "RECEIVER_PUSH_EVENTS": "all",
        "RECEIVER_PUSH_TIMEOUT": "5s",
        "RECEIVER_PUSH_RETRY_SCHEDULE": "1s,1m",
        "RECEIVER_PUSH_CONCURRENCY": "4",
        "RECEIVER_DASHBOARD": "off",
    }
    s = Settings.from_env(env)
    assert set(env) == set(s.env_names())
    assert not s.dashboard
    assert s.secret_keys() == [
        "new-key-0123456789abcdef",
        "old-key-0123456789abcdef",
        "older-key-0123456789abc",
    ]
    assert s.provider_env["TELECOM23_ALLOWED_IPS"] == "203.0.113.0/24, 2001:db8::1"
    assert (s.host, s.port, s.database, s.db_busy_timeout_ms) == (
        "0.0.0.0",
        9000,
        "/data/r.db",
        250,
    )
    assert s.database_url == "postgres://u:pw@db.example.com:5432/receiver?sslmode=require"
    assert (s.pg_pool_size, s.allow_ephemeral) == (4, True)
    assert s.public_url == "https://sms.example.com/prefix"
    assert s.trust_forwarded and s.unknown_messages == "hold"
    assert (s.retention_days, s.export_max_rows) == (0, 5000)
    assert (s.max_waiters, s.max_streams, s.stream_ping) == (2000, 7, 5.0)
    assert (s.api_token, s.metrics_token) == ("tok", "scrape")
    assert not s.polling
    assert (s.dlr_grace, s.poll_max_age, s.poll_backoff, s.poll_backoff_max) == (
        90,
        2 * 86400,
        30,
        900,
    )
    assert (s.poll_interval, s.poll_batch, s.poll_lease, s.poll_timeout) == (0.5, 50, 60, 5)
    assert TwilioProvider(s).accounts == (("AC1", "one"), ("AC2", "two"), ("AC1", "one-new"))


@pytest.mark.parametrize(
    ("account", "tokens"),
    [
        ("AC1", ["one", "one-new", "next"]),
        ("AC2", ["two", "next"]),
        ("AC9", ["main", "next"]),
        (None, ["main", "next"]),
    ],
)
def test_twilio_token_is_chosen_by_account(account: str | None, tokens: list[str]) -> None:
    s = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": "main",
            "TWILIO_AUTH_TOKEN_SECONDARY": "next",
            "TWILIO_ACCOUNTS": "AC1:one,AC2:two,AC1:one-new",
        }
    )
    assert TwilioProvider(s).tokens_for(account) == tokens


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("HOST", "not a host"),
        ("RECEIVER_TRUST_FORWARDED", "maybe"),
        ("RECEIVER_UNKNOWN_MESSAGES", "drop"),
        ("RECEIVER_PUBLIC_URL", "sms.example.com"),
        ("RECEIVER_PUBLIC_URL", "https://sms.example.com/?x=1"),
        ("RECEIVER_PUBLIC_URL", "https://hook:s3cret@sms.example.com"),
        ("RECEIVER_LOG_LEVEL", "loud"),
        ("RECEIVER_DB_BUSY_TIMEOUT_MS", "-1"),
        ("RECEIVER_MAX_BODY", "10"),
        ("RECEIVER_RETENTION_DAYS", "-1"),
        ("RECEIVER_RETENTION_DAYS", "ninety"),
        ("RECEIVER_EXPORT_MAX_ROWS", "0"),
        ("DATABASE_URL", "mysql://u:p@db.example.com/r"),
        ("RECEIVER_PG_POOL_SIZE", "0"),
        ("RECEIVER_ALLOW_EPHEMERAL", "perhaps"),
        ("TWILIO_ACCOUNTS", "AC1-without-token"),
        ("TWILIO_ACCOUNTS", "XX1:token"),
        ("RECEIVER_SECRET_KEY", "short"),
        ("RECEIVER_SECRET_KEY_FALLBACKS", "long-enough-key-0123456789,short"),
        ("RECEIVER_SECRET_KEY_FALLBACKS", "old-key-without-a-new-one-set"),
        ("STANDARD_WEBHOOK_TOLERANCE", "3²"),
        ("TELECOM23_ALLOWED_IPS", "203.0.113.0/24,not-an-ip"),
        ("MESMS_ALLOWED_IPS", "10.0.0.0/33"),
        ("STANDARD_WEBHOOK_SECRETS", "acme:not base64!"),
        ("STANDARD_WEBHOOK_SECRETS", "acme:whsec_c2hvcnQ="),
        ("STANDARD_WEBHOOK_SECRETS", "acme:whsec_" + "QUFB" * 6),  # 18 bytes: under 24
        ("STANDARD_WEBHOOK_SECRETS", "Acme:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("STANDARD_WEBHOOK_SECRETS", "twilio:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("STANDARD_WEBHOOK_SECRETS", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("STANDARD_WEBHOOK_TOLERANCE", "0"),
        ("RECEIVER_POLLING", "sometimes"),
        ("RECEIVER_DLR_GRACE", "5 minutes"),
        ("RECEIVER_DLR_GRACE", "0"),
        ("RECEIVER_DLR_GRACE", "-5m"),
        ("RECEIVER_POLL_MAX_AGE", "1000d"),
        ("RECEIVER_POLL_BACKOFF", "nan"),
        ("RECEIVER_POLL_BACKOFF_MAX", "1s"),  # under the first backoff (1m)
        ("RECEIVER_POLL_INTERVAL", "2h"),
        ("RECEIVER_POLL_BATCH", "0"),
        ("RECEIVER_POLL_LEASE", "15s"),  # under twice the request timeout (10 s)
        ("RECEIVER_POLL_TIMEOUT", "1e3"),
        ("TWILIO_POLL_RATE", "fast"),
        ("TELECOM23_POLL_CONCURRENCY", "0"),
        ("MESMS_DLR_GRACE", "soon"),
        ("MESMS_API_BASE", "ftp://mesms.example"),
        ("TWILIO_ACCOUNT_SID", "AC1"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("300", 300), ("300s", 300), ("5m", 300), ("72h", 259200), ("2d", 172800), ("250ms", 0.25)],
)
def test_durations_take_a_unit_or_plain_seconds(value: str, seconds: float) -> None:
    assert Settings.from_env({"RECEIVER_DLR_GRACE": value}).dlr_grace == seconds


def test_secrets_never_appear_in_repr() -> None:
    s = Settings.from_env(
        {
            "RECEIVER_API_TOKEN": "api-secret",
            "RECEIVER_METRICS_TOKEN": "metrics-secret",
            "DATABASE_URL": "postgres://u:db-secret@db.example.com/r",
            "TWILIO_AUTH_TOKEN": "tw-secret",
            "TWILIO_AUTH_TOKEN_SECONDARY": "tw-secret-2",
            "TWILIO_ACCOUNTS": "AC1:sub-secret",
            "RECEIVER_SECRET_KEY": "url-key-secret-0123456789",
            "RECEIVER_SECRET_KEY_FALLBACKS": "old-url-key-secret-0123456789",
            "TELECOM23_WEBHOOK_SECRET": "t23-secret",
            "STANDARD_WEBHOOK_SECRETS": "acme:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        }
    )
    text = repr(s)
    assert "Settings(" in text
    for secret in (
        "api-secret",
        "metrics-secret",
        "db-secret",
        "tw-secret",
        "tw-secret-2",
        "sub-secret",
        "url-key-secret",
        "t23-secret",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ):
        assert secret not in text


def test_docs_document_every_setting_and_nothing_else() -> None:
    """The settings tables in docs/settings.md and the variables the code reads are the same set."""
    text = (README.parent / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", text, flags=re.M))
    assert documented == set(Settings().env_names())


def test_no_module_reads_the_environment_behind_settings_back() -> None:
    package = README.parent / "receiver"
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "settings.py" and re.search(r"os\.environ|getenv\(", path.read_text())
    ]
    assert offenders == []
