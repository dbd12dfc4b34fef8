"""Every setting of the service, read once from the environment and checked at start.

Each field names the environment variable it comes from; README.md documents them all in one
table (a test keeps the two in step). The settings compose the layers below them: the value
readers (receiver.env), the push settings, the provider adapters and the status clients, each
of which checks its own variables when the settings are read.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlsplit

from receiver import polling, providers
from receiver.env import (
    SettingsError,
    parse_duration,
    read_bool,
    read_choice,
    read_database_url,
    read_duration,
    read_float,
    read_int,
    read_list,
    read_networks,
    read_str,
    redact_database_url,
    say_duration,
)
from receiver.push import config as push_config

# Importable from here too, as they always were.
__all__ = [
    "PREFIXES",
    "Settings",
    "SettingsError",
    "parse_duration",
    "read_database_url",
    "read_duration",
    "read_float",
    "read_int",
    "read_list",
    "read_networks",
    "read_str",
    "redact_database_url",
    "say_duration",
    "unknown_variables",
]

# The readers under the short names Settings.from_env uses.
_bool, _int, _choice, _str = read_bool, read_int, read_choice, read_str
_duration, _float = read_duration, read_float


def _public_url(env: Mapping[str, str]) -> str | None:
    value = _str(env, "RECEIVER_PUBLIC_URL")
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        # A password here would be logged and shown; providers never sign with userinfo anyway.
        raise SettingsError("RECEIVER_PUBLIC_URL must not contain a user or password")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError(
            "RECEIVER_PUBLIC_URL must be the external base URL, like https://sms.example.com "
            f"(scheme and host, optional path, no query); got {value!r}"
        )
    return value.rstrip("/")


def _database_url(env: Mapping[str, str]) -> str | None:
    value = _str(env, "DATABASE_URL")
    return None if value is None else read_database_url(value, "DATABASE_URL")


HEROKU_WITHOUT_DATABASE = (
    "DATABASE_URL is not set, and this is a Heroku dyno (DYNO={dyno}). A dyno's filesystem is "
    "wiped at every restart (at least daily), so a SQLite file there would lose every tracked "
    "message. Add a PostgreSQL database, which sets DATABASE_URL: "
    "`heroku addons:create heroku-postgresql:essential-0`. To run on the dyno's disk anyway "
    "(a trial whose data may go), set RECEIVER_ALLOW_EPHEMERAL=1"
)


_WEEK = 7 * 86400.0
MIN_SECRET_KEY_LENGTH = 16


def _secret_key(value: str | None, name: str) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if len(value) < MIN_SECRET_KEY_LENGTH:
        raise SettingsError(
            f"{name} must be at least {MIN_SECRET_KEY_LENGTH} characters (a random string, "
            "e.g. from `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return value


def _secret_key_fallbacks(env: Mapping[str, str]) -> tuple[str, ...]:
    name = "RECEIVER_SECRET_KEY_FALLBACKS"
    keys = tuple(key for item in env.get(name, "").split(",") if (key := _secret_key(item, name)))
    if keys and not _str(env, "RECEIVER_SECRET_KEY"):
        # Moving the old key here before setting the new one would revoke every URL at once.
        raise SettingsError(f"{name} is set but RECEIVER_SECRET_KEY is not: set the new key too")
    return keys


def _push_settings(env: Mapping[str, str]) -> dict[str, Any]:
    return push_config.read(env)


def _provider_env_names() -> list[str]:
    return providers.provider_env_names()


@dataclass(frozen=True)
class Settings:
    """The service's configuration. Build it with `Settings.from_env(os.environ)`."""

    host: str = "127.0.0.1"
    port: int = 8000
    database: str = "./receiver.db"
    db_busy_timeout_ms: int = 5000
    # PostgreSQL instead of the SQLite file when set (receiver/store/postgres/); its password
    # is in it, hence out of repr. `database_label` is the form to log and print.
    database_url: str | None = field(default=None, repr=False)
    pg_pool_size: int = 10
    allow_ephemeral: bool = False
    max_body: int = 65536
    api_token: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    public_url: str | None = None
    trust_forwarded: bool = False
    unknown_messages: str = "create"
    log_level: str = "info"
    log_format: str = "auto"
    retention_days: int = 90
    export_max_rows: int = 1_000_000
    # Long polls and streams (receiver/realtime/): how many at once, and the stream's ping.
    max_waiters: int = 10_000
    max_streams: int = 100
    stream_ping: float = 15.0
    # Polling for late DLRs (receiver/polling/); durations in seconds.
    polling: bool = True
    dlr_grace: float = 300.0
    poll_max_age: float = 72 * 3600.0
    poll_backoff: float = 60.0
    poll_backoff_max: float = 3600.0
    poll_interval: float = 5.0
    poll_batch: int = 500
    poll_lease: float = 120.0
    poll_timeout: float = 10.0
    secret_key: str | None = field(default=None, repr=False)
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    # Pushing status changes to the app (receiver/push/; checked by receiver.push.config).
    push_url: tuple[str, ...] = field(default=(), repr=False)
    push_secret: tuple[str, ...] = field(default=(), repr=False)
    push_events: str = "final"
    push_timeout: float = 15.0
    push_retry_schedule: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    push_concurrency: int = 10
    dashboard: bool = True  # GET /dashboard (receiver/dashboard/)
    # The variables each provider adapter declares (its `env_vars`), as found in the
    # environment; the adapter checks and reads them itself (providers/<name>.py).
    provider_env: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )

    # The environment variable behind each field, for docs and error messages.
    ENV: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "host": "HOST",
            "port": "PORT",
            "database": "RECEIVER_DATABASE",
            "db_busy_timeout_ms": "RECEIVER_DB_BUSY_TIMEOUT_MS",
            "database_url": "DATABASE_URL",
            "pg_pool_size": "RECEIVER_PG_POOL_SIZE",
            "allow_ephemeral": "RECEIVER_ALLOW_EPHEMERAL",
            "max_body": "RECEIVER_MAX_BODY",
            "api_token": "RECEIVER_API_TOKEN",
            "metrics_token": "RECEIVER_METRICS_TOKEN",
            "public_url": "RECEIVER_PUBLIC_URL",
            "trust_forwarded": "RECEIVER_TRUST_FORWARDED",
            "unknown_messages": "RECEIVER_UNKNOWN_MESSAGES",
            "log_level": "RECEIVER_LOG_LEVEL",
            "log_format": "RECEIVER_LOG_FORMAT",
            "retention_days": "RECEIVER_RETENTION_DAYS",
            "export_max_rows": "RECEIVER_EXPORT_MAX_ROWS",
            "max_waiters": "RECEIVER_MAX_WAITERS",
            "max_streams": "RECEIVER_MAX_STREAMS",
            "stream_ping": "RECEIVER_STREAM_PING",
            "polling": "RECEIVER_POLLING",
            "dlr_grace": "RECEIVER_DLR_GRACE",
            "poll_max_age": "RECEIVER_POLL_MAX_AGE",
            "poll_backoff": "RECEIVER_POLL_BACKOFF",
            "poll_backoff_max": "RECEIVER_POLL_BACKOFF_MAX",
            "poll_interval": "RECEIVER_POLL_INTERVAL",
            "poll_batch": "RECEIVER_POLL_BATCH",
            "poll_lease": "RECEIVER_POLL_LEASE",
            "poll_timeout": "RECEIVER_POLL_TIMEOUT",
            "secret_key": "RECEIVER_SECRET_KEY",
            "secret_key_fallbacks": "RECEIVER_SECRET_KEY_FALLBACKS",
            "push_url": "RECEIVER_PUSH_URL",
            "push_secret": "RECEIVER_PUSH_SECRET",
            "push_events": "RECEIVER_PUSH_EVENTS",
            "push_timeout": "RECEIVER_PUSH_TIMEOUT",
            "push_retry_schedule": "RECEIVER_PUSH_RETRY_SCHEDULE",
            "push_concurrency": "RECEIVER_PUSH_CONCURRENCY",
            "dashboard": "RECEIVER_DASHBOARD",
        }
    )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
    ) -> Settings:
        """Read and check every setting; raise SettingsError naming the first bad one.

        `overrides` (variable name -> value, e.g. from command-line flags) go through the same
        checks as the environment they override.
        """
        env = {**(os.environ if env is None else env), **(overrides or {})}
        host = _str(env, "HOST") or "127.0.0.1"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise SettingsError(
                    f"HOST must be an IP address or localhost; got {host!r}"
                ) from None
        settings = cls(
            host=host,
            port=_int(env, "PORT", 8000, minimum=0, maximum=65535),
            database=_str(env, "RECEIVER_DATABASE") or "./receiver.db",
            db_busy_timeout_ms=_int(
                env, "RECEIVER_DB_BUSY_TIMEOUT_MS", 5000, minimum=0, maximum=600_000
            ),
            database_url=_database_url(env),
            pg_pool_size=_int(env, "RECEIVER_PG_POOL_SIZE", 10, minimum=1, maximum=1000),
            allow_ephemeral=_bool(env, "RECEIVER_ALLOW_EPHEMERAL", False),
            max_body=_int(env, "RECEIVER_MAX_BODY", 65536, minimum=1024, maximum=16 * 1024 * 1024),
            api_token=_str(env, "RECEIVER_API_TOKEN"),
            metrics_token=_str(env, "RECEIVER_METRICS_TOKEN"),
            public_url=_public_url(env),
            trust_forwarded=_bool(env, "RECEIVER_TRUST_FORWARDED", False),
            unknown_messages=_choice(
                env, "RECEIVER_UNKNOWN_MESSAGES", "create", ("create", "hold")
            ),
            log_level=_choice(
                env, "RECEIVER_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ),
            log_format=_choice(env, "RECEIVER_LOG_FORMAT", "auto", ("auto", "json", "console")),
            retention_days=_int(env, "RECEIVER_RETENTION_DAYS", 90, minimum=0, maximum=36_500),
            export_max_rows=_int(
                env, "RECEIVER_EXPORT_MAX_ROWS", 1_000_000, minimum=1, maximum=100_000_000
            ),
            max_waiters=_int(env, "RECEIVER_MAX_WAITERS", 10_000, minimum=1, maximum=1_000_000),
            max_streams=_int(env, "RECEIVER_MAX_STREAMS", 100, minimum=1, maximum=100_000),
            stream_ping=_duration(env, "RECEIVER_STREAM_PING", 15.0, minimum=1.0, maximum=300.0),
            polling=_bool(env, "RECEIVER_POLLING", True),
            dlr_grace=_duration(env, "RECEIVER_DLR_GRACE", 300.0, minimum=0.01, maximum=_WEEK),
            poll_max_age=_duration(
                env, "RECEIVER_POLL_MAX_AGE", 72 * 3600.0, minimum=1.0, maximum=90 * 86400.0
            ),
            poll_backoff=_duration(
                env, "RECEIVER_POLL_BACKOFF", 60.0, minimum=0.01, maximum=86400.0
            ),
            poll_backoff_max=_duration(
                env, "RECEIVER_POLL_BACKOFF_MAX", 3600.0, minimum=0.01, maximum=_WEEK
            ),
            poll_interval=_duration(
                env, "RECEIVER_POLL_INTERVAL", 5.0, minimum=0.01, maximum=3600.0
            ),
            poll_batch=_int(env, "RECEIVER_POLL_BATCH", 500, minimum=1, maximum=10_000),
            poll_lease=_duration(env, "RECEIVER_POLL_LEASE", 120.0, minimum=1.0, maximum=86400.0),
            poll_timeout=_duration(env, "RECEIVER_POLL_TIMEOUT", 10.0, minimum=0.1, maximum=300.0),
            secret_key=_secret_key(env.get("RECEIVER_SECRET_KEY"), "RECEIVER_SECRET_KEY"),
            secret_key_fallbacks=_secret_key_fallbacks(env),
            **_push_settings(env),
            dashboard=_bool(env, "RECEIVER_DASHBOARD", True),
            provider_env=MappingProxyType(
                {name: env[name] for name in _provider_env_names() if name in env}
            ),
        )
        dyno = _str(env, "DYNO")
        if dyno and settings.database_url is None and not settings.allow_ephemeral:
            raise SettingsError(HEROKU_WITHOUT_DATABASE.format(dyno=dyno))
        if settings.poll_backoff_max < settings.poll_backoff:
            raise SettingsError(
                "RECEIVER_POLL_BACKOFF_MAX must be at least RECEIVER_POLL_BACKOFF "
                f"({settings.poll_backoff:g} s); got {settings.poll_backoff_max:g} s"
            )
        if settings.poll_lease < 2 * settings.poll_timeout:
            # A claim must outlive the requests made under it, or another instance could
            # claim the same message while this one still polls it.
            raise SettingsError(
                "RECEIVER_POLL_LEASE must be at least twice RECEIVER_POLL_TIMEOUT "
                f"({2 * settings.poll_timeout:g} s); got {settings.poll_lease:g} s"
            )
        # Each adapter checks its own variables now, so a wrong value stops the start.
        providers.check_provider_settings(settings)
        polling.check_polling_settings(settings)
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def env_names(self) -> list[str]:
        """Every environment variable the service reads, the providers' own included."""
        return [*self.ENV.values(), *_provider_env_names()]

    @property
    def database_label(self) -> str:
        """Where the data is, as logs and messages show it: the URL without its password, or
        the SQLite file's path."""
        if self.database_url is not None:
            return redact_database_url(self.database_url)
        return self.database

    def dlr_grace_by_provider(self) -> dict[str, float]:
        """Each pollable provider's own grace (<PROVIDER>_DLR_GRACE), else the service's."""
        return {
            name: limits.grace for name, limits in polling.poll_limits_by_provider(self).items()
        }

    def secret_keys(self) -> list[str]:
        """The key that signs callback URLs first, then the older ones still accepted."""
        return [self.secret_key, *self.secret_key_fallbacks] if self.secret_key else []


# The prefixes of the service's own variables: any other name with one of them is a mistake.
PREFIXES = ("RECEIVER_", "TWILIO_", "TELECOM23_", "MESMS_", "STANDARD_WEBHOOK_")
# Names with those prefixes that are read, but not by the service: the app's variable that
# points at the receiver (docs/integrate.md), often set in an environment shared with it.
NOT_SETTINGS = frozenset({"RECEIVER_URL"})
# What Kubernetes adds for every Service in the namespace (a Service named "receiver" gives
# RECEIVER_SERVICE_HOST, RECEIVER_PORT_8000_TCP, ...): not the user's doing, never a typo.
_SERVICE_LINK = re.compile(
    r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?"
    r"|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)"
)
_SERVICE_LINK_URL = re.compile(r"(tcp|udp|sctp)://")


def unknown_variables(env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Variables with one of the service's prefixes that no setting reads, each with the
    closest setting's name (None when none is close): a misspelt setting is otherwise
    silently ignored, and its default used."""
    env = os.environ if env is None else env
    known = Settings().env_names()
    unknown: dict[str, str | None] = {}
    for name in sorted(env):
        upper = name.upper()
        if name in known or name in NOT_SETTINGS or not upper.startswith(PREFIXES):
            continue
        if _SERVICE_LINK.fullmatch(name) or (
            name.endswith("_PORT") and _SERVICE_LINK_URL.match(env[name])
        ):
            continue
        unknown[name] = _closest(upper, known)
    return unknown


def _closest(name: str, known: list[str]) -> str | None:
    if name in known:  # written in lower case
        return name
    for prefix in PREFIXES:
        # RECEIVER_PORT for PORT, TWILIO_RECEIVER_SECRET_KEY for RECEIVER_SECRET_KEY
        if name.startswith(prefix) and name.removeprefix(prefix) in known:
            return name.removeprefix(prefix)
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return matches[0] if matches else None
