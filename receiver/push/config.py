"""The push settings (RECEIVER_PUSH_*), read and checked at start with the others."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from receiver.env import SettingsError, read_duration, read_int, read_list
from receiver.providers.standard_signature import decode_secret

# The Standard Webhooks specification's retry schedule: the waits after each failed attempt.
DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DEFAULT_TIMEOUT = 15.0
DEFAULT_CONCURRENCY = 10
EVENTS = ("final", "all")
MAX_ENDPOINTS = 10
_SCHEDULE = "RECEIVER_PUSH_RETRY_SCHEDULE"
MAX_SECRETS = 10  # the verifier's own bound on signatures per request (MAX_SIGNATURES)


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            "RECEIVER_PUSH_URL must be http:// or https:// URLs, comma-separated, like "
            f"http://127.0.0.1:8080/sms-status; got {redact_url(value)!r}"
        )
    if parts.username is not None or parts.password is not None:
        # It would be logged, and shown in /readyz and /metrics.
        raise SettingsError("RECEIVER_PUSH_URL must not contain a user or password")
    if parts.fragment:
        raise SettingsError(f"RECEIVER_PUSH_URL must not have a #fragment; got {value!r}")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise SettingsError(f"RECEIVER_PUSH_URL has a bad port: {value!r}") from None
    return value


def redact_url(url: str) -> str:
    """The URL without its query (which may carry a token), for logs, /readyz and /metrics."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def is_plain_http_ok(url: str) -> bool:
    """Plain http:// to loopback or a private address is a sidecar's usual case."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def read(env: Mapping[str, str]) -> dict[str, Any]:
    """The Settings fields of pushing, checked (a SettingsError names the variable)."""
    urls = read_list(env, "RECEIVER_PUSH_URL")
    if len(urls) > MAX_ENDPOINTS:
        raise SettingsError(f"RECEIVER_PUSH_URL names at most {MAX_ENDPOINTS} endpoints")
    if len(set(urls)) != len(urls):
        raise SettingsError("RECEIVER_PUSH_URL names an endpoint twice")
    urls = tuple(_url(url) for url in urls)
    secrets = read_list(env, "RECEIVER_PUSH_SECRET")
    if len(secrets) > MAX_SECRETS:
        raise SettingsError(f"RECEIVER_PUSH_SECRET holds at most {MAX_SECRETS} secrets")
    for secret in secrets:
        try:
            decode_secret(secret)
        except ValueError as exc:
            raise SettingsError(f"RECEIVER_PUSH_SECRET: {exc}") from None
    if urls and not secrets:
        raise SettingsError(
            "RECEIVER_PUSH_URL is set but RECEIVER_PUSH_SECRET is not: every push is signed "
            "(whsec_ and the base64 of 24 to 64 random bytes)"
        )
    if secrets and not urls:
        raise SettingsError("RECEIVER_PUSH_SECRET is set but RECEIVER_PUSH_URL is not")
    events = env.get("RECEIVER_PUSH_EVENTS", "").strip().lower() or "final"
    if events not in EVENTS:
        raise SettingsError(f"RECEIVER_PUSH_EVENTS must be one of final, all; got {events!r}")
    schedule = tuple(
        read_duration({_SCHEDULE: item}, _SCHEDULE, 0, minimum=0.01, maximum=7 * 86400.0)
        for item in read_list(env, _SCHEDULE)
    )
    if env.get(_SCHEDULE, "").strip():
        if not schedule:
            raise SettingsError(f"{_SCHEDULE} must be comma-separated durations, like 5s,5m,30m")
        if len(schedule) > 50:
            raise SettingsError("RECEIVER_PUSH_RETRY_SCHEDULE holds at most 50 retries")
    return {
        "push_url": urls,
        "push_secret": secrets,
        "push_events": events,
        "push_timeout": read_duration(
            env, "RECEIVER_PUSH_TIMEOUT", DEFAULT_TIMEOUT, minimum=0.1, maximum=300.0
        ),
        "push_retry_schedule": schedule or DEFAULT_SCHEDULE,
        "push_concurrency": read_int(
            env, "RECEIVER_PUSH_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1, maximum=1000
        ),
    }
