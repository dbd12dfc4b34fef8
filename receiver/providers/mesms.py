"""me-sms: one send (a uuid) to many recipients, each tracked as "<uuid>:<msisdn>".

Its documents describe status by polling only; accounts that have pushed reports send the
recipients' shape to a signed callback URL, authenticated as for 23 Telecom.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

from receiver.engine import Status
from receiver.providers import fields
from receiver.providers.base import CallbackRejected, InboundRequest, StatusEvent, poll_env_vars
from receiver.providers.callback_auth import SignedUrlProvider

# Per-recipient statuses and what they mean here (README: "me-sms").
STATUS_MAP: Final[Mapping[str, Status]] = MappingProxyType(
    {
        "pending": Status.QUEUED,
        "success": Status.DELIVERED,
        "failed": Status.UNDELIVERED,
        "invalid": Status.REJECTED,
        "blocked": Status.REJECTED,
        "expired": Status.EXPIRED,
        "timeout": Status.UNCONFIRMED,
    }
)

MAX_RECIPIENTS = 1000  # one pushed report
KEPT_HEADERS: Final = ("content-type", "user-agent")
# A send's uuid: hex and dashes. Kept strict, since "<uuid>:<msisdn>" must split back apart.
UUID_PATTERN = re.compile(r"[0-9A-Fa-f-]{8,64}")


def message_id(uuid: str, msisdn: str) -> str:
    """The receiver's id for one recipient of one send."""
    return f"{uuid}:{msisdn}"


def split_message_id(value: str) -> tuple[str, str] | None:
    """(uuid, msisdn) from a receiver message id, or None if it is not one of ours."""
    uuid, sep, msisdn = value.partition(":")
    if not sep or not UUID_PATTERN.fullmatch(uuid) or not msisdn:
        return None
    return uuid, msisdn


class MeSmsProvider(SignedUrlProvider):
    name: ClassVar[str] = "mesms"
    status_map: ClassVar[Mapping[str, Status]] = STATUS_MAP
    env_vars: ClassVar[tuple[str, ...]] = (
        "MESMS_ALLOWED_IPS",
        "MESMS_API_BASE",
        "MESMS_API_KEY",
        *poll_env_vars("MESMS"),
    )

    def read_callback(self, request: InboundRequest) -> list[StatusEvent]:
        claims = self.authenticate(request)
        kept = {h: v for h in KEPT_HEADERS if (v := request.headers.get(h)) is not None}
        reports = fields.records(
            request.body, request.headers.get("content-type"), max_records=MAX_RECIPIENTS
        )
        events: list[StatusEvent] = []
        for i, report in enumerate(reports):
            uuid = fields.text(report, "uuid", "smsUuid", "sms_uuid", required=True)
            assert uuid is not None  # required=True
            if not UUID_PATTERN.fullmatch(uuid):
                raise CallbackRejected(400, "invalid_field", "uuid is not a me-sms send uuid")
            recipients = report.get("recipients")
            if recipients is None:  # one flat recipient
                recipients = [report]
            if (
                not isinstance(recipients, list)
                or not recipients
                or not all(isinstance(r, dict) for r in recipients)
            ):
                raise CallbackRejected(
                    400, "invalid_field", "recipients must be a non-empty list of objects"
                )
            if len(events) + len(recipients) > MAX_RECIPIENTS:
                raise CallbackRejected(
                    400, "too_many_records", f"at most {MAX_RECIPIENTS} recipients in one request"
                )
            whole = len(reports) == 1 and len(recipients) == 1
            for recipient in recipients:
                body = (
                    fields.record_body(request.body, reports, i)
                    if whole
                    else fields.json_text({**recipient, "uuid": uuid})  # the uuid it is filed under
                )
                events.append(self._event(uuid, recipient, claims.label, body, kept))
        return events

    def _event(
        self,
        uuid: str,
        recipient: Mapping[str, Any],
        account: str | None,
        body: str,
        kept: dict[str, str],
    ) -> StatusEvent:
        msisdn = fields.text(recipient, "msisdn", "phone", required=True)
        raw_status = fields.text(recipient, "status", required=True)
        assert msisdn is not None and raw_status is not None  # required=True
        raw_status = raw_status.lower()
        return StatusEvent(
            provider=self.name,
            message_id=message_id(uuid, msisdn),
            provider_status=raw_status,
            status=STATUS_MAP.get(raw_status),
            account=account,
            to_number=msisdn,
            error_code=fields.text(recipient, "errorCode", "error_code", "error"),
            event_time=fields.iso_time(
                fields.text(recipient, "updatedAt", "updated_at", "deliveredAt", "timestamp")
            ),
            body=body,
            headers=kept,
        )
