"""Reading one environment value: the small, checked readers every layer uses (the service's
settings, the providers' own variables, the push settings). A wrong value is a SettingsError
whose message names the variable. Nothing here knows which variables exist.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def read_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting: 1/0, true/false, yes/no, on/off."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def read_int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    """A whole-number setting within bounds."""
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


def read_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, case-insensitive."""
    value = env.get(name, default).strip().lower() or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def read_str(env: Mapping[str, str], name: str) -> str | None:
    """An optional text setting: None when unset or blank."""
    value = env.get(name, "").strip()
    return value or None


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


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def read_duration(
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


def read_float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    """A number setting within bounds."""
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
