"""Twilio's status client: GET the Message resource with the account's SID and auth token."""

from __future__ import annotations

import re
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx
import structlog

from receiver.engine import StatusEvent, format_time
from receiver.env import SettingsError, read_str
from receiver.polling.base import DueMessage, PollAnswer, RequestObserver, Unauthorized
from receiver.polling.clients import PerMessageClient, api_base, get_answer, required_text, segment
from receiver.providers import fields
from receiver.providers.base import ProviderSettings
from receiver.providers.twilio import STATUS_MAP, TwilioProvider

DEFAULT_API_BASE: Final = "https://api.twilio.com"
ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")

log = structlog.get_logger("receiver.polling")


class TwilioStatusClient(PerMessageClient):
    provider = "twilio"

    def __init__(self, settings: ProviderSettings) -> None:
        self.base = api_base(settings, "TWILIO_API_BASE", DEFAULT_API_BASE)
        self._adapter = TwilioProvider(settings)  # its tokens, checked and parsed once
        sid = read_str(settings.provider_env, "TWILIO_ACCOUNT_SID")
        if sid is not None and not ACCOUNT_SID.fullmatch(sid):
            raise SettingsError(
                "TWILIO_ACCOUNT_SID must be an account SID, AC and 32 hex digits; "
                f"got one starting {sid[:6]!r}"
            )
        listed = sorted({account for account, _ in self._adapter.accounts})
        self.main_sid = sid
        # The account of a message that does not name its own (registered by the app, and no
        # callback has told us): the one set, else the only subaccount listed.
        self.default_sid = sid or (listed[0] if len(listed) == 1 else None)
        # A token alone is not enough: it does not say which account to ask about.
        self.configured = self._adapter.configured and (sid is not None or bool(listed))

    def account_sid(self, message: DueMessage) -> str | None:
        """Whose Messages resource to ask: the message's own account, else the default."""
        if message.account and ACCOUNT_SID.fullmatch(message.account):
            return message.account
        return self.default_sid

    def credentials(self, sid: str) -> tuple[str, str] | None:
        """Who asks about the messages of account `sid`: the account itself when TWILIO_ACCOUNTS
        lists its token, else the main account (TWILIO_ACCOUNT_SID and its token), whose
        credentials reach its subaccounts' messages too; None when there is no token."""
        own = [token for account, token in self._adapter.accounts if account == sid]
        if own:
            return sid, own[0]
        # A subaccount's SID with the main account's token is refused (401) by Twilio.
        user = self.main_sid or sid
        tokens = self._adapter.tokens_for(user)
        return (user, tokens[0]) if tokens else None

    async def _poll_one(
        self, http: httpx.AsyncClient, message: DueMessage, observe: RequestObserver
    ) -> PollAnswer:
        sid = self.account_sid(message)
        auth = self.credentials(sid) if sid else None
        message_sid = segment(message.message_id)
        if sid is None or auth is None or message_sid is None:
            return PollAnswer(message.message_id, None)  # nothing we could ask Twilio
        url = f"{self.base}/2010-04-01/Accounts/{segment(sid)}/Messages/{message_sid}.json"
        try:
            event = await get_answer(
                http,
                url,
                observe,
                lambda data: self._event(message.message_id, sid, data),
                auth=auth,
            )
        except Unauthorized as exc:
            if auth[0] == sid:
                raise  # our own credentials for our own account: polling must stop
            # The main account's credentials refused for an account the app named: that account
            # is not one of ours, which says nothing of the others. Not found, for this message
            # alone, rather than stopping every Twilio poll over one registration.
            log.warning(
                "poll_account_unreachable",
                provider=self.provider,
                message_id=message.message_id,
                account=sid,
                detail=str(exc),
            )
            return PollAnswer(message.message_id, None)
        return PollAnswer(message.message_id, event)

    def _event(self, message_id: str, sid: str, data: dict[str, Any]) -> StatusEvent:
        raw = required_text(data, "status").lower()
        return StatusEvent(
            provider=self.provider,
            message_id=message_id,
            provider_status=raw,
            status=STATUS_MAP.get(raw),
            source="poll",
            account=sid,
            to_number=fields.text(data, "to"),
            from_number=fields.text(data, "from"),
            error_code=fields.text(data, "error_code"),  # a number, or null
            event_time=rfc2822_time(data.get("date_updated")),
            body=fields.json_text(data),
        )


def rfc2822_time(value: object) -> str | None:
    """Twilio's "Thu, 13 Feb 2026 10:30:04 +0000" as the receiver keeps times, or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, says RFC 2822
        moment = moment.replace(tzinfo=UTC)
    try:
        return format_time(moment)
    except OverflowError:
        return None
