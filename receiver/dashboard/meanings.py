"""What a provider's error code means, where its documents say (docs/integrate.md lists the
same); a code missing here is shown as the provider gave it."""

from __future__ import annotations

ERROR_MEANINGS: dict[str, dict[str, str]] = {
    "twilio": {
        "30003": "handset unreachable: off or out of coverage (retry later)",
        "30004": "blocked by the recipient or the carrier",
        "30005": "unknown number (stop sending to it)",
        "30006": "a landline or an unreachable carrier (stop sending to it)",
        "30007": "filtered as spam by the carrier (change the content or sender)",
        "30008": "unknown error (retry later)",
    },
}


def meaning(provider: str, code: str) -> str | None:
    return ERROR_MEANINGS.get(provider, {}).get(code)
