"""Who may read and register messages: a bearer token, or loopback clients when none is set."""

from __future__ import annotations

import functools
import hmac

from starlette.requests import Request
from starlette.types import Scope

from receiver.api.errors import ApiError
from receiver.api.origin import client_ip, is_loopback
from receiver.settings import Settings

# Headers that proxies add; their presence means the peer address is not the client's.
_PROXY_HEADERS = frozenset((b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip"))

# The same few peer addresses come request after request: each is parsed once, not per request.
_is_loopback = functools.lru_cache(maxsize=1024)(is_loopback)


def require_api_access(request: Request) -> None:
    """Raise ApiError 401/403 unless the caller may use the query API."""
    check_api_access(request.scope, request.state.settings)


def check_api_access(scope: Scope, settings: Settings) -> None:
    """require_api_access from the ASGI scope, for an endpoint that makes no Request."""
    if settings.api_token is None:
        # A proxy on this host makes every client look like loopback. Unless forwarded headers
        # are trusted (and then the proxy's own hop decides), a forwarded request is a remote
        # one, whatever the peer address says.
        # ASGI header names are lowercase: one pass over the raw list, no Headers lookups.
        if not settings.trust_forwarded and any(
            name in _PROXY_HEADERS for name, _ in scope["headers"]
        ):
            raise ApiError(
                403,
                "loopback_only",
                "this request came through a proxy and RECEIVER_API_TOKEN is not set; "
                "set the token (or RECEIVER_TRUST_FORWARDED=on behind a trusted proxy)",
            )
        if not _is_loopback(client_ip(scope, settings)):
            raise ApiError(
                403,
                "loopback_only",
                "RECEIVER_API_TOKEN is not set, so the API answers loopback clients only",
            )
        return
    _require_bearer(scope, settings.api_token, "RECEIVER_API_TOKEN")


def require_metrics_access(request: Request) -> None:
    """Raise ApiError 401/403 unless the caller may scrape /metrics.

    RECEIVER_METRICS_TOKEN, when set, is the only key (a scraper need not hold the API token);
    otherwise the query API's rule applies.
    """
    settings: Settings = request.state.settings
    if settings.metrics_token is None:
        require_api_access(request)
    else:
        _require_bearer(request.scope, settings.metrics_token, "RECEIVER_METRICS_TOKEN")


def _require_bearer(scope: Scope, expected: str, variable: str) -> None:
    # The first Authorization header, as Starlette's Headers.get gives it.
    value = next((v for name, v in scope["headers"] if name == b"authorization"), b"")
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", f"send Authorization: Bearer <{variable}>")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "the bearer token is not valid")
