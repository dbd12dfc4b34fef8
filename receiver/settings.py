"""Every setting of the service, read once from the environment and checked at start.

Each field names the environment variable it comes from; README.md documents them all in one
table (a test keeps the two in step).
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
from urllib.parse import parse_qsl, urlsplit


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a whole number; got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}; got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _str(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


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


_LOCAL_HOSTS = {"", "localhost"}


def _is_local_host(host: str) -> bool:
    """A Unix socket (no host, or a path), localhost or a loopback address."""
    if host.startswith("/") or host.lower() in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_hosts(netloc: str, query: str) -> list[str]:
    """Every host a libpq URL names: several, comma-separated, for failover; or `host=`."""
    hosts = []
    for item in netloc.rpartition("@")[2].split(","):
        # host, host:port, [v6], [v6]:port
        hosts.append(
            item.partition("]")[0] + "]" if item.startswith("[") else item.partition(":")[0]
        )
    for key, value in parse_qsl(query):
        if key == "host":
            hosts.extend(value.split(","))
    return hosts


def _database_url(env: Mapping[str, str]) -> str | None:
    value = _str(env, "DATABASE_URL")
    return None if value is None else read_database_url(value, "DATABASE_URL")


def read_database_url(value: str, name: str) -> str:
    """A PostgreSQL URL as libpq takes it, with `sslmode=require` added for a host elsewhere;
    SettingsError naming `name` (a variable, or a command's option) for any other URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("postgres", "postgresql") or not value.startswith(f"{parts.scheme}://"):
        # Never the value itself in the message: it holds the database's password.
        scheme = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise SettingsError(
            f"{name} must be a PostgreSQL URL, postgres://user:password@host:5432/dbname "
            f"(or postgresql://...); got {scheme}"
        )
    query = dict(parse_qsl(parts.query))
    if "sslmode" not in query and not all(
        _is_local_host(host) for host in _url_hosts(parts.netloc, parts.query)
    ):
        # Heroku's URLs name no sslmode, and its databases refuse connections without TLS;
        # anything across a network should not send the password in clear anyway.
        separator = "&" if parts.query else "" if value.endswith("?") else "?"
        value += separator + "sslmode=require"
    return value


def redact_database_url(url: str) -> str:
    """The URL without its password (in the user part or a `password=` parameter), for logs."""
    parts = urlsplit(url)
    user, at, hosts = parts.netloc.rpartition("@")
    if at:
        user = user.partition(":")[0] + ":***" if ":" in user else user
    query = "&".join(
        f"{key}=***" if key == "password" else f"{key}={value}"
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return f"{parts.scheme}://{user}{at}{hosts}{parts.path}" + (f"?{query}" if query else "")


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


def read_str(env: Mapping[str, str], name: str) -> str | None:
    """A provider's optional text setting: None when unset or blank."""
    return _str(env, name)


def read_int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    """A provider's whole-number setting within bounds."""
    return _int(env, name, default, minimum=minimum, maximum=maximum)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    """Seconds, written as a number of seconds or with a unit: 500ms, 30s, 5m, 72h, 2d."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    match = _DURATION.fullmatch(raw.strip().lower())
    if match is None:
        raise SettingsError(
            f"{name} must be a duration such as 300, 30s, 5m, 72h or 500ms; got {raw!r}"
        )
    value = float(match[1]) * _UNIT_SECONDS[match[2] or "s"]
    if not minimum <= value <= maximum:
        raise SettingsError(
            f"{name} must be between {say_duration(minimum)} and {say_duration(maximum)}; "
            f"got {raw.strip()!r}"
        )
    return value


def parse_duration(raw: str) -> float | None:
    """Seconds from a duration written as the settings write them (30, 30s, 500ms, 5m); None
    when it is not one."""
    match = _DURATION.fullmatch(raw.strip().lower())
    return None if match is None else float(match[1]) * _UNIT_SECONDS[match[2] or "s"]


def say_duration(seconds: float) -> str:
    """Seconds as a duration setting would be written: 72h, 5m, 1.5s, 500ms."""
    for unit in ("d", "h", "m", "s"):
        if seconds >= _UNIT_SECONDS[unit] and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds / _UNIT_SECONDS[unit]:g}{unit}"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def _float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number; got {raw!r}") from None
    if not minimum <= value <= maximum:  # also refuses NaN
        raise SettingsError(f"{name} must be between {minimum:g} and {maximum:g}; got {raw!r}")
    return value


def read_duration(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    """A provider's duration setting in seconds (300, 30s, 5m, 72h, 500ms)."""
    return _duration(env, name, default, minimum=minimum, maximum=maximum)


def read_float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    """A provider's number setting within bounds."""
    return _float(env, name, default, minimum=minimum, maximum=maximum)


def read_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated setting, blanks dropped."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def read_networks(
    env: Mapping[str, str], name: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma-separated list of IP addresses or CIDR blocks (an allow-list)."""
    networks = []
    for item in read_list(env, name):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(
                f"{name} must be comma-separated IP addresses or CIDR blocks "
                f"(like 203.0.113.0/24); got {item!r}"
            ) from None
    return tuple(networks)


def _push_settings(env: Mapping[str, str]) -> dict[str, Any]:
    from receiver.push import config  # it reads its values with this module's helpers

    return config.read(env)


def _provider_env_names() -> list[str]:
    from receiver.providers import provider_env_names  # the adapters import this module

    return provider_env_names()


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
        from receiver.providers import check_provider_settings

        check_provider_settings(settings)
        from receiver.polling.service import check_polling_settings

        check_polling_settings(settings)
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
