"""Where a request really came from and which URL it really called, behind proxies or not.

Signatures such as Twilio's cover the URL the provider called, so it must be rebuilt exactly:
from RECEIVER_PUBLIC_URL when set, else from X-Forwarded-Proto/-Host when
RECEIVER_TRUST_FORWARDED is on, else from the request itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from starlette.types import Scope

from receiver.settings import Settings


def _first(value: str | None) -> str | None:
    if not value:
        return None
    first = value.split(",")[0].strip()
    return first or None


def external_url(scope: Scope, headers: Mapping[str, str], settings: Settings) -> str:
    """The absolute URL the caller used, raw path and query exactly as sent.

    `headers` answers lower-case names with the first value of each (Starlette's Headers, or a
    plain dict of them).
    """
    raw_path = scope.get("raw_path")
    path: str = raw_path.decode("latin-1") if raw_path else scope["path"]
    path = path.split("?", 1)[0]  # some servers keep the query in raw_path
    query = scope.get("query_string", b"").decode("latin-1")
    tail = path + ("?" + query if query else "")
    if settings.public_url:
        return settings.public_url + tail
    scheme: str = scope.get("scheme", "http")
    host = headers.get("host")
    if settings.trust_forwarded:
        # The first value is the one the outermost proxy saw from the provider.
        scheme = _first(headers.get("x-forwarded-proto")) or scheme
        host = _first(headers.get("x-forwarded-host")) or host
        # The port also applies to a Host header passed through without one (nginx's $host).
        port = _first(headers.get("x-forwarded-port"))
        if host and port and ":" not in host.rsplit("]", 1)[-1]:
            host = f"{host}:{port}"
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    return f"{scheme}://{host}{tail}"


def client_ip(scope: Scope, settings: Settings) -> str | None:
    """The caller's address; behind a trusted proxy, the last X-Forwarded-For hop it added."""
    if settings.trust_forwarded:
        # Every X-Forwarded-For line, in order: a proxy may add its hop as a line of its own,
        # after one the client forged, so only the very last hop is the proxy's word.
        forwarded = ",".join(
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        )
        if forwarded:
            last = forwarded.split(",")[-1].strip()
            if last:
                return last
    client = scope.get("client")
    return client[0] if client else None


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1
    return ip.is_loopback
