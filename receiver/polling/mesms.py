"""me-sms's status client: one sweep of a send's recipients pages answers for all of them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import httpx
import structlog

from receiver.engine import StatusEvent
from receiver.env import read_str
from receiver.polling.base import DueMessage, PollAnswer, RequestObserver, Unavailable
from receiver.polling.clients import WrongShape, api_base, get_answer, required_text
from receiver.providers import fields
from receiver.providers.base import CallbackRejected, ProviderSettings
from receiver.providers.mesms import STATUS_MAP, message_id, split_message_id

log = structlog.get_logger("receiver.polling")

DEFAULT_API_BASE: Final = "https://api.me-sms.com"
PAGE_LIMIT: Final = 1000  # the most one page holds
# A send reaches at most 2,000,000 numbers (its documents): 2,000 full pages. Past that the
# API is not paging as documented, and the sweep stops rather than running on.
MAX_PAGES: Final = 2000


class MeSmsStatusClient:
    provider = "mesms"

    def __init__(self, settings: ProviderSettings) -> None:
        self.base = api_base(settings, "MESMS_API_BASE", DEFAULT_API_BASE)
        self._key = read_str(settings.provider_env, "MESMS_API_KEY") or ""
        self.configured = bool(self._key)

    def group(self, message: DueMessage) -> str:
        """The send's uuid: one sweep answers for every recipient of a send."""
        parts = split_message_id(message.message_id)
        return parts[0] if parts else message.message_id

    def group_prefix(self, message_id: str) -> str | None:
        """ "<uuid>:", so the store claims every tracked recipient of a send together."""
        parts = split_message_id(message_id)
        return f"{parts[0]}:" if parts else None

    async def poll(
        self, http: httpx.AsyncClient, messages: Sequence[DueMessage], observe: RequestObserver
    ) -> list[PollAnswer]:
        """Sweep each send asked about; answers for every recipient seen, and None for a
        message asked about but not seen (or not a "<uuid>:<msisdn>" id at all)."""
        sends: dict[str, list[DueMessage]] = {}
        for message in messages:
            parts = split_message_id(message.message_id)
            sends.setdefault(parts[0] if parts else "", []).append(message)
        answers: dict[str, PollAnswer] = {}
        for uuid, asked in sends.items():
            if uuid:
                for event in await self._sweep(http, uuid, asked[0].account, observe):
                    answers[event.message_id] = PollAnswer(event.message_id, event)
            for message in asked:
                answers.setdefault(message.message_id, PollAnswer(message.message_id, None))
        return list(answers.values())

    async def _sweep(
        self, http: httpx.AsyncClient, uuid: str, account: str | None, observe: RequestObserver
    ) -> list[StatusEvent]:
        """Every recipient of the send, page by page; [] when me-sms does not know the send.
        (A send registered whole is swept page by page instead: receiver.polling.sends.)"""
        events: list[StatusEvent] = []
        cursor = 0
        for _ in range(MAX_PAGES):
            page = await self.fetch_page(http, uuid, account, cursor, observe)
            if page is None:
                return []
            events.extend(page.events)
            if page.next_cursor is None:
                return events
            cursor = page.next_cursor
        raise Unavailable(f"send {uuid} still had more recipients after {MAX_PAGES} pages")

    async def fetch_page(
        self,
        http: httpx.AsyncClient,
        uuid: str,
        account: str | None,
        after: int,
        observe: RequestObserver,
    ) -> RecipientsPage | None:
        """One page of the send's recipients after the cursor `after`; None when me-sms does
        not know the send. A recipient that cannot be read is logged and kept raw in the page's
        `malformed`; the others are read all the same."""
        url = f"{self.base}/api/v2/sms/{uuid}/recipients"  # a uuid is hex and dashes
        page = await get_answer(
            http,
            url,
            observe,
            partial(read_page, uuid=uuid, account=account, after=after),
            params={"after": after, "limit": PAGE_LIMIT},
            headers={"x-api-key": self._key},
        )
        if page is not None and page.malformed:
            log.warning(
                "malformed_recipients",
                provider="mesms",
                send=uuid,
                after=after,
                count=len(page.malformed),
                first=page.malformed[0][:200],
            )
        return page


@dataclass(frozen=True)
class RecipientsPage:
    """A recipients page as read: its events, the recipients that could not be read (raw
    JSON text), and the cursor of the next page (None on the last)."""

    events: list[StatusEvent]
    malformed: list[str]
    next_cursor: int | None


def read_page(data: dict[str, Any], uuid: str, account: str | None, after: int) -> RecipientsPage:
    """A recipients page: its events, its malformed recipients, and the next page's cursor.

    The documents name the cursor fields but not the list's key: it is read under
    `recipients` (the name of what it holds) when that is a list, else under `data`. A page
    whose own shape is wrong is WrongShape (the provider is not answering as documented); one
    recipient that is wrong is only that recipient's problem.
    """
    items = data.get("recipients")
    if not isinstance(items, list):
        items = data.get("data")
    more, cursor = data.get("hasMore"), data.get("nextCursor")
    if not isinstance(items, list) or not isinstance(more, bool):
        raise WrongShape(
            "a recipients page needs a list (recipients or data) and hasMore true or false"
        )
    if more and (isinstance(cursor, bool) or not isinstance(cursor, int) or cursor <= after):
        # Asking again with the same cursor would get the same page, for ever.
        raise WrongShape(f"hasMore with a nextCursor ({cursor!r}) that does not pass {after}")
    events: list[StatusEvent] = []
    malformed: list[str] = []
    for item in items:
        try:
            events.append(recipient_event(item, uuid, account))
        except (WrongShape, CallbackRejected):
            malformed.append(json.dumps(item, ensure_ascii=False, default=str))
    return RecipientsPage(events, malformed, cursor if more else None)


def recipient_event(item: object, uuid: str, account: str | None) -> StatusEvent:
    if not isinstance(item, dict):
        raise WrongShape("a recipient is not a JSON object")
    msisdn = required_text(item, "msisdn")
    raw = required_text(item, "status").lower()
    return StatusEvent(
        provider="mesms",
        message_id=message_id(uuid, msisdn),
        provider_status=raw,
        status=STATUS_MAP.get(raw),
        source="poll",
        account=account,
        to_number=msisdn,
        error_code=fields.text(item, "errorCode"),
        event_time=fields.iso_time(fields.text(item, "updatedAt")),
        body=fields.json_text(item),
    )
