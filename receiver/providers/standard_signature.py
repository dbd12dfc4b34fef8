"""The Standard Webhooks signature scheme (https://www.standardwebhooks.com), verify side.

A message is signed as base64(HMAC-SHA256(secret, f"{webhook-id}.{webhook-timestamp}.{body}"))
and sent as "v1,<signature>" in webhook-signature, several space-separated while keys rotate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
MAX_SIGNATURES = 10  # a header with more is not a rotation, it is an attempt at a search


class SignatureError(Exception):
    """Why a message does not verify; the text is safe to return to the caller."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


def decode_secret(secret: str) -> bytes:
    """The key bytes of a "whsec_<base64>" secret (the prefix is optional); ValueError if bad."""
    raw = secret.strip()
    if raw.startswith(SECRET_PREFIX):
        raw = raw[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "a Standard Webhooks secret is whsec_ followed by the base64 of 24 to 64 bytes"
        ) from None
    if not 24 <= len(key) <= 64:  # the specification's bounds
        raise ValueError(
            "a Standard Webhooks secret is whsec_ followed by the base64 of 24 to 64 bytes; "
            f"this one holds {len(key)}"
        )
    return key


def sign(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The "v1,<base64>" signature of one message."""
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(
    keys: Sequence[bytes],
    msg_id: str | None,
    timestamp: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: int,
) -> int:
    """The message's timestamp if one of its signatures is valid under one of `keys`.

    The timestamp must be within `tolerance` seconds of `now`, either way, so a captured
    request cannot be replayed later. Raises SignatureError otherwise.
    """
    if not msg_id or not timestamp or not signature_header:
        raise SignatureError(
            "signature_missing", "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:  # not "²"
        raise SignatureError("timestamp_invalid", "webhook-timestamp is not Unix seconds")
    sent_at = int(timestamp)
    if abs(now - sent_at) > tolerance:
        raise SignatureError(
            "timestamp_out_of_tolerance",
            f"webhook-timestamp is more than {tolerance} s away from the receiver's clock",
        )
    given = [
        part[3:].encode("ascii", "replace")
        for part in signature_header.split(" ")[:MAX_SIGNATURES]
        if part.startswith("v1,")
    ]
    valid = False
    for key in keys:
        expected = sign(key, msg_id, timestamp, body)[3:].encode()  # as sent
        for candidate in given:
            valid |= hmac.compare_digest(expected, candidate)  # never ==
    if not valid:
        raise SignatureError("signature_invalid", "signature check failed")
    return sent_at
