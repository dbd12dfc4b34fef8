"""Authentication for providers whose callbacks carry no signature of their own.

The receiver hands out the callback URL itself, with a token signed by RECEIVER_SECRET_KEY
(itsdangerous) that names the provider and the key. Rotating the key revokes every URL it
signed; keys kept in RECEIVER_SECRET_KEY_FALLBACKS still verify until removed. An optional
IP allow-list and an optional HMAC of the body (for gateways that sign) add to it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from itsdangerous import BadSignature, URLSafeSerializer

from receiver.env import read_networks
from receiver.providers.base import CallbackRejected, InboundRequest, ProviderSettings

# Bumping the salt revokes every URL ever issued, whatever the key.
SALT = "receiver.callback-url.v1"
# A token we issue is under 200 characters; anything far longer is not one of ours.
MAX_TOKEN_LENGTH = 512
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def key_id(secret: str) -> str:
    """A short public name for a key: says which key signed a URL, reveals nothing of it."""
    return hashlib.sha256(b"receiver-key-id:" + secret.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class TokenClaims:
    provider: str
    key_id: str
    label: str | None
    current_key: bool  # False: signed by a fallback key, so the URL should be re-issued


class CallbackTokens:
    """Issues and checks the tokens in signed callback URLs. Built once at start."""

    def __init__(self, keys: Sequence[str]) -> None:
        # keys[0] signs; all verify. One serializer per key, so a verified token names its key.
        self._serializers = [
            (
                key_id(key),
                URLSafeSerializer(key, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256}),
            )
            for key in keys
        ]

    @property
    def configured(self) -> bool:
        return bool(self._serializers)

    def issue(self, provider: str, label: str | None = None) -> tuple[str, str]:
        """A token for `provider`'s callback URL, and the id of the key that signed it."""
        if not self._serializers:
            raise ValueError("RECEIVER_SECRET_KEY is not set")
        if label is not None and not LABEL_PATTERN.fullmatch(label):
            raise ValueError("label must be 1-64 letters, digits, '_', '.' or '-'")
        kid, serializer = self._serializers[0]
        claims: dict[str, Any] = {"p": provider, "k": kid}
        if label is not None:
            claims["l"] = label
        return str(serializer.dumps(claims)), kid

    def verify(self, token: str, provider: str) -> TokenClaims:
        """The token's claims; CallbackRejected(403) unless it is ours and for `provider`."""
        if not self._serializers:
            raise CallbackRejected(
                403,
                "provider_not_configured",
                "RECEIVER_SECRET_KEY is not set, so no signed callback URL is valid",
            )
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise CallbackRejected(403, "token_invalid", "the callback URL's token is not valid")
        for index, (kid, serializer) in enumerate(self._serializers):
            try:
                claims = serializer.loads(token)
            except BadSignature:
                continue
            if not isinstance(claims, dict) or claims.get("k") != kid:
                break
            if claims.get("p") != provider:
                raise CallbackRejected(
                    403, "token_wrong_provider", "this callback URL was issued for another provider"
                )
            label = claims.get("l")
            return TokenClaims(
                provider=provider,
                key_id=kid,
                label=label if isinstance(label, str) else None,
                current_key=index == 0,
            )
        # Unknown, tampered, or signed by a key that was rotated out: revoked.
        raise CallbackRejected(
            403, "token_invalid", "the callback URL's token is not valid (or has been revoked)"
        )


def redact_token(url: str, token: str | None) -> str:
    """`url` with a callback token's signature hidden: a signed URL is a credential, and logs
    travel further than secrets should. What the token claims (provider, key id) stays."""
    if not token:
        return url
    claims, dot, _signature = token.rpartition(".")
    return url.replace(token, f"{claims}.<redacted>" if dot else "<redacted>")


def check_ip(client_host: str | None, allowed: Sequence[Network], provider: str) -> None:
    """CallbackRejected(403) unless an allow-list is unset or names the caller's address."""
    if not allowed:
        return
    try:
        address = ipaddress.ip_address((client_host or "").split("%", 1)[0])
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address is None or not any(address in network for network in allowed):
        raise CallbackRejected(
            403,
            "ip_not_allowed",
            f"{client_host or 'the caller'} is not in {provider.upper()}_ALLOWED_IPS",
        )


def check_body_hmac(
    body: bytes, header_value: str | None, secrets: Sequence[bytes], header: str
) -> None:
    """CallbackRejected(403) unless `header` is "sha256=<hex HMAC-SHA256 of the body>"."""
    if not secrets:
        return
    if not header_value:
        raise CallbackRejected(403, "signature_missing", f"{header} header missing")
    given = header_value.strip()
    if given.lower().startswith("sha256="):
        given = given[len("sha256=") :]
    given_bytes = given.lower().encode("ascii", "replace")
    # Every secret is tried (rotation); compare_digest, never ==.
    valid = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        valid |= hmac.compare_digest(expected, given_bytes)
    if not valid:
        raise CallbackRejected(403, "signature_invalid", "signature check failed")


class SignedUrlAuth:
    """The checks for one signed-URL provider, in order: caller's address, then token."""

    def __init__(self, provider: str, keys: Sequence[str], allowed: Sequence[Network]) -> None:
        self.provider = provider
        self.tokens = CallbackTokens(keys)
        self.allowed = tuple(allowed)

    @property
    def configured(self) -> bool:
        return self.tokens.configured

    def check(self, client_host: str | None, token: str | None) -> TokenClaims:
        check_ip(client_host, self.allowed, self.provider)
        return self.tokens.verify(token or "", self.provider)


class SignedUrlProvider:
    """What providers authenticated by a receiver-issued URL share: the route, the token and
    the optional allow-list `<NAME>_ALLOWED_IPS`. Subclasses add parsing (read_callback)."""

    name: ClassVar[str]
    callback_path: ClassVar[str] = "dlr/{token}"
    signed_url: ClassVar[bool] = True

    def __init__(self, settings: ProviderSettings) -> None:
        allowed = read_networks(settings.provider_env, f"{self.name.upper()}_ALLOWED_IPS")
        self._auth = SignedUrlAuth(self.name, settings.secret_keys(), allowed)

    @property
    def configured(self) -> bool:
        return self._auth.configured

    @property
    def message_providers(self) -> tuple[str, ...]:
        return (self.name,)

    def authenticate(self, request: InboundRequest) -> TokenClaims:
        """The URL's claims; CallbackRejected(403) for a refused address or token."""
        return self._auth.check(request.client_host, request.path_params.get("token"))
