"""The Standard Webhooks headers of one attempt, signed with every configured secret.

The scheme is the one receiver verifies on its way in (receiver.providers.standard_signature):
the same `sign`, so the two sides cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from receiver.providers.standard_signature import decode_secret, sign


def keys(secrets: Sequence[str]) -> list[bytes]:
    """The key bytes of each `whsec_...` secret (checked at start by push.config)."""
    return [decode_secret(secret) for secret in secrets]


def headers(keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """webhook-id, webhook-timestamp (this attempt's) and one `v1,` signature per key, as
    the specification allows while secrets rotate."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, webhook_id, timestamp, body) for key in keys),
        "content-type": "application/json",
    }
