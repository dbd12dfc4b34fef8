"""23 Telecom's status client: GET one message's status with the account's X-API-Key."""

from __future__ import annotations

from typing import Any, Final

import httpx

from receiver.engine import StatusEvent
from receiver.env import read_str
from receiver.polling.base import DueMessage, PollAnswer, RequestObserver
from receiver.polling.clients import PerMessageClient, api_base, get_answer, required_text, segment
from receiver.providers import fields
from receiver.providers.base import ProviderSettings
from receiver.providers.telecom23 import canonical

DEFAULT_API_BASE: Final = "https://restlink23telecom.com/api/v1"


class Telecom23StatusClient(PerMessageClient):
    provider = "telecom23"

    def __init__(self, settings: ProviderSettings) -> None:
        self.base = api_base(settings, "TELECOM23_API_BASE", DEFAULT_API_BASE)
        self._key = read_str(settings.provider_env, "TELECOM23_API_KEY") or ""
        self.configured = bool(self._key)

    async def _poll_one(
        self, http: httpx.AsyncClient, message: DueMessage, observe: RequestObserver
    ) -> PollAnswer:
        message_id = segment(message.message_id)
        if message_id is None:
            return PollAnswer(message.message_id, None)
        event = await get_answer(
            http,
            f"{self.base}/sms/status/{message_id}",
            observe,
            lambda data: self._event(message, data),
            headers={"X-API-Key": self._key},
        )
        return PollAnswer(message.message_id, event)

    def _event(self, message: DueMessage, data: dict[str, Any]) -> StatusEvent:
        raw = required_text(data, "status")
        code = fields.text(data, "status_code")
        return StatusEvent(
            provider=self.provider,
            message_id=message.message_id,
            provider_status=raw,
            status=canonical(raw),
            source="poll",
            account=message.account,
            to_number=fields.text(data, "recipient"),
            # "000" is success; any other code explains a failure (as in its callbacks).
            error_code=code if code and code.strip("0") else None,
            event_time=fields.iso_time(fields.text(data, "delivered_at")),
            body=fields.json_text(data),
        )
