"""23 Telecom: SMPP-style delivery reports, pushed to a signed callback URL.

Its documents name no signing scheme, so the receiver issues the URL (with a signed token) and
may also check the caller's address and a gateway's HMAC of the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

from receiver.engine import Status
from receiver.env import read_list
from receiver.providers import fields
from receiver.providers.base import InboundRequest, ProviderSettings, StatusEvent, poll_env_vars
from receiver.providers.callback_auth import SignedUrlProvider, check_body_hmac

# The DLR statuses and what they mean here (README: "23 Telecom"). Upper-case SMPP states,
# plus the lower-case interim states its API also reports.
STATUS_MAP: Final[Mapping[str, Status]] = MappingProxyType(
    {
        "DELIVRD": Status.DELIVERED,
        "UNDELIV": Status.UNDELIVERED,
        "REJECTD": Status.REJECTED,
        "DELETED": Status.FAILED,
        "EXPIRED": Status.EXPIRED,
        "ENROUTE": Status.SENT,
        "sent": Status.SENT,
        "ACCEPTD": Status.QUEUED,
        "pending": Status.QUEUED,
        "UNKNOWN": Status.UNCONFIRMED,
    }
)
_BY_FOLDED = {raw.upper(): status for raw, status in STATUS_MAP.items()}

SIGNATURE_HEADER: Final = "X-Telecom23-Signature"
MAX_RECORDS = 100  # one send reaches at most 100 recipients
KEPT_HEADERS: Final = ("content-type", "user-agent")


def canonical(raw: str) -> Status | None:
    """The canonical status for a raw 23 Telecom status, whatever its case."""
    return _BY_FOLDED.get(raw.upper())


class Telecom23Provider(SignedUrlProvider):
    name: ClassVar[str] = "telecom23"
    status_map: ClassVar[Mapping[str, Status]] = STATUS_MAP
    env_vars: ClassVar[tuple[str, ...]] = (
        "TELECOM23_WEBHOOK_SECRET",
        "TELECOM23_ALLOWED_IPS",
        "TELECOM23_API_BASE",
        "TELECOM23_API_KEY",
        *poll_env_vars("TELECOM23"),
    )

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        # Several secrets may be listed while a gateway's secret is rotated.
        self._hmac_secrets = [
            s.encode() for s in read_list(settings.provider_env, "TELECOM23_WEBHOOK_SECRET")
        ]

    def read_callback(self, request: InboundRequest) -> list[StatusEvent]:
        claims = self.authenticate(request)
        check_body_hmac(
            request.body,
            request.headers.get(SIGNATURE_HEADER.lower()),
            self._hmac_secrets,
            SIGNATURE_HEADER,
        )
        kept = {h: v for h in KEPT_HEADERS if (v := request.headers.get(h)) is not None}
        records = fields.records(
            request.body, request.headers.get("content-type"), max_records=MAX_RECORDS
        )
        return [
            self._event(record, claims.label, fields.record_body(request.body, records, i), kept)
            for i, record in enumerate(records)
        ]

    def _event(
        self, record: Mapping[str, object], account: str | None, body: str, kept: dict[str, str]
    ) -> StatusEvent:
        message_id = fields.text(
            record, "message_id", "client_message_id", required=True, what="message_id"
        )
        raw_status = fields.text(record, "status", required=True)
        assert message_id is not None and raw_status is not None  # required=True
        status = canonical(raw_status)
        code = fields.text(record, "status_code", "error_code")
        return StatusEvent(
            provider=self.name,
            message_id=message_id,
            provider_status=raw_status,
            status=status,
            account=account,
            to_number=fields.text(record, "dnis", "recipient", "to"),
            from_number=fields.text(record, "sender_id", "from"),
            # "000" (or 0, from a gateway that sends numbers) is success; any other code
            # explains a failure.
            error_code=code if code and code.strip("0") else None,
            event_time=fields.iso_time(
                fields.text(record, "done_date", "delivered_at", "timestamp")
            ),
            body=body,
            headers=kept,
        )
