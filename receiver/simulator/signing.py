"""How each simulated provider signs its callbacks, written from the providers' documents.

Deliberately independent of receiver.providers: a shared bug in signing and verification would
cancel out and go unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 over the URL, then each key+value sorted by key."""
    payload = url + "".join(key + value for key, value in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def telecom23_signature(secret: str, body: bytes) -> str:
    """X-Telecom23-Signature: "sha256=" and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_webhook_signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """webhook-signature (Standard Webhooks v1) for a "whsec_<base64 key>" secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
