"""GET /v1/callback-url: the URL to paste into a provider's console.

For providers without a signing scheme of their own (23 Telecom, me-sms) the URL carries a
token signed with RECEIVER_SECRET_KEY; for the others it is their fixed webhook path. The
`receiver callback-url` command hands out the same URLs, built by the same code.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.api.auth import require_api_access
from receiver.api.errors import ApiError
from receiver.api.origin import external_url
from receiver.api.query import query
from receiver.providers import REGISTRY, callback_path
from receiver.providers.callback_auth import CallbackTokens
from receiver.providers.standard import SOURCE_PATTERN
from receiver.settings import Settings


def base_url(request: Request | None, settings: Settings) -> str:
    """Where providers reach this service: RECEIVER_PUBLIC_URL, else as this request came in."""
    if settings.public_url:
        return settings.public_url
    if request is None:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6
        return f"http://{host}:{settings.port}"
    parts = urlsplit(external_url(request.scope, request.headers, settings))
    return f"{parts.scheme}://{parts.netloc}"


# Names that never resolve from the internet: RFC 6761 (localhost), RFC 6762 (.local, mDNS),
# RFC 8375 (home.arpa), and .internal (reserved for private use by ICANN in 2024).
_PRIVATE_SUFFIXES = (".localhost", ".local", ".home.arpa", ".internal")


def unreachable_warning(url: str) -> str | None:
    """A sentence for the user when a provider on the internet cannot reach `url`'s host.

    Judged from the host as written, with no DNS lookup: a loopback, private, link-local or
    otherwise non-public address, localhost, a reserved private name, or a name of one label
    (a container's name, say). None for anything else.
    """
    host = (urlsplit(url).hostname or "").rstrip(".")
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        private = host == "localhost" or host.endswith(_PRIVATE_SUFFIXES) or "." not in host
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        private = not ip.is_global
    if not private:
        return None
    return (
        f"{host or 'this host'} is not reachable from the internet, so a provider cannot "
        "deliver callbacks to this URL; set RECEIVER_PUBLIC_URL to the service's public base "
        "URL (like https://sms.example.com) and get the URL again"
    )


def callback_url(
    base: str,
    provider: str,
    tokens: CallbackTokens,
    *,
    label: str | None = None,
    source: str | None = None,
) -> tuple[str, str | None]:
    """A provider's callback URL and, when signed, the id of the key that signed it."""
    path = callback_path(provider)
    key_id = None
    if REGISTRY[provider].signed_url:
        token, key_id = tokens.issue(provider, label)
        path = path.replace("{token}", token)
    if source is not None:
        path = path.replace("{source}", source)
    return base + path, key_id


async def get_callback_url(request: Request) -> Response:
    require_api_access(request)
    settings: Settings = request.state.settings
    tokens: CallbackTokens = request.state.callback_tokens
    params = query(request, {"provider", "label", "source"})
    provider = params.get("provider")
    if provider not in REGISTRY:
        raise ApiError(
            400,
            "invalid_parameter",
            "provider is required" if provider is None else f"unknown provider {provider!r}",
            parameter="provider",
            allowed=sorted(REGISTRY),
        )
    cls = REGISTRY[provider]
    label = params.get("label")
    source = params.get("source")
    if label is not None and not cls.signed_url:
        raise ApiError(
            400, "invalid_parameter", f"{provider} URLs take no label", parameter="label"
        )
    if "{source}" in cls.callback_path:
        if source is None or not SOURCE_PATTERN.fullmatch(source):
            raise ApiError(
                400,
                "invalid_parameter",
                "source is required: lower-case letters, digits, '-' or '_' (32 at most)",
                parameter="source",
            )
        if source not in request.state.providers[provider].message_providers:
            raise ApiError(
                409,
                "provider_not_configured",
                f"no secret is configured for source {source!r} in STANDARD_WEBHOOK_SECRETS",
                parameter="source",
            )
    elif source is not None:
        raise ApiError(
            400, "invalid_parameter", f"{provider} URLs take no source", parameter="source"
        )
    if cls.signed_url and not tokens.configured:
        raise ApiError(
            409,
            "secret_key_unset",
            "set RECEIVER_SECRET_KEY to issue signed callback URLs",
        )
    try:
        url, key_id = callback_url(
            base_url(request, settings), provider, tokens, label=label, source=source
        )
    except ValueError as exc:  # a label outside the allowed characters
        raise ApiError(400, "invalid_parameter", str(exc), parameter="label") from None
    body: dict[str, object] = {"provider": provider, "url": url, "signed": cls.signed_url}
    if key_id is not None:
        body |= {"key_id": key_id, "label": label}
    # In the answer, not only in the log: the user about to paste the URL reads this one.
    warning = unreachable_warning(url)
    if warning is not None:
        body["warning"] = warning
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
