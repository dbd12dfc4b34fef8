"""Sweeps of sends registered whole (a me-sms send by its uuid alone), page by page.

A claim leases a send and says where its sweep stands; each page is written as it arrives,
with the cursor moved past it in the same transaction (receiver.store.sends), so memory holds
one page whatever the send's size, and a sweep that stops anywhere (its lease's time used up,
a kill -9, a restart) is continued from its stored cursor by whichever instance claims the
send next. Requests share the provider's pace, pause and stop with its message polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import httpx
import structlog

from receiver.engine import format_time, parse_time
from receiver.env import say_duration
from receiver.polling.base import PollError, RequestObserver
from receiver.polling.policy import Backoff, give_up_from
from receiver.store.sends import SendClaim, SendPage
from receiver.version import __version__

if TYPE_CHECKING:
    from receiver.polling.mesms import RecipientsPage
    from receiver.settings import Settings
    from receiver.store.base import Store

log = structlog.get_logger("receiver.polling")

# Why a claimed send's sweep stopped (the send's last_result, the summary's `outcomes`).
SWEPT = "swept"  # the sweep read its last page
HANDED_BACK = "handed_back"  # its lease's time was used up: the next claim continues it
DEFERRED = "deferred"  # the provider is paused or stopped: continued after the pause
NOT_FOUND = "not_found"  # the provider does not know the send (yet): asked again later
LOST = "lost"  # another claimer took the send over (this one's lease ran out)
ERROR = "error"  # the client failed in a way it should not have (logged)


class PollerState(Protocol):
    """Where a provider's polling stands (scheduler.ProviderState)."""

    state: str
    paused_until: float  # monotonic


class SweepingPoller(Protocol):
    """What a sweep shares with its provider's message poller (scheduler.ProviderPoller, which
    builds the sweeper): the store, the settings, the pace, the pauses and the counts."""

    provider: str
    owner: str
    concurrency: int
    store: Store
    settings: Settings
    status: PollerState

    @property
    def rng(self) -> random.Random: ...

    def pace(self, now: float) -> float: ...

    def observe(self, result: str) -> None: ...

    def failed(self, exc: PollError) -> None: ...

    def recovered(self) -> None: ...


class PagedClient(Protocol):
    """A status client that reads a send's recipients a page at a time (me-sms)."""

    async def fetch_page(
        self,
        http: httpx.AsyncClient,
        uuid: str,
        account: str | None,
        after: int,
        observe: RequestObserver,
    ) -> RecipientsPage | None: ...


@dataclass
class SendsResult:
    """What one round of send sweeps did."""

    claimed: int = 0
    pages: int = 0
    recipients: int = 0
    settled: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    uuids: list[str] = field(default_factory=list)


class SendSweeper:
    """The sweeps of one provider's sends registered whole, beside its message poller."""

    def __init__(self, poller: SweepingPoller, client: PagedClient) -> None:
        self.poller = poller
        self.client = client
        self.store = poller.store
        self.settings = poller.settings
        self._backoff = Backoff(self.settings.poll_backoff, self.settings.poll_backoff_max)
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.poll_timeout,
                headers={"User-Agent": f"receiver/{__version__} (delivery status poller)"},
                follow_redirects=False,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def held(self) -> float | None:
        """Seconds until the provider may be asked again, when it is paused or stopped."""
        status = self.poller.status
        if status.state == "stopped":
            return self.settings.poll_backoff_max
        wait = status.paused_until - time.monotonic()
        return wait if wait > 0 else None

    async def run(self, *, skip: Sequence[str] = ()) -> SendsResult:
        """Claim the due sends (as many as the provider's concurrency) and sweep each for at
        most its lease; those in `skip` (swept already by this run) are handed straight back."""
        result = SendsResult()
        if self.held() is not None:
            return result
        now = datetime.now(UTC)
        lease = self.settings.poll_lease
        claims = await self.store.claim_sends(
            self.poller.provider,
            now=format_time(now),
            limit=self.poller.concurrency,
            lease_until=format_time(now + timedelta(seconds=lease)),
            owner=self.poller.owner,
        )
        result.claimed = len(claims)
        again = [c for c in claims if c.uuid in skip]
        for claim in again:
            await self._release(claim, datetime.now(UTC), HANDED_BACK)
        outcomes = await asyncio.gather(
            *(self._sweep_or_hand_back(c, result) for c in claims if c.uuid not in skip)
        )
        for outcome in outcomes:
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
        result.uuids = [c.uuid for c in claims]
        return result

    async def _sweep_or_hand_back(self, claim: SendClaim, result: SendsResult) -> str:
        try:
            return await self._sweep(claim, result)
        except asyncio.CancelledError:
            # The service is stopping: the send is handed back with its cursor, so a restart
            # continues at once rather than after the lease.
            with contextlib.suppress(Exception):
                await self._release(claim, datetime.now(UTC), HANDED_BACK)
            raise

    async def _sweep(self, claim: SendClaim, result: SendsResult) -> str:
        """Read and write the send's pages from its cursor, until its last page or the end of
        the claim's time (a lease less a request's timeout after the claim)."""
        deadline = time.monotonic() + self.settings.poll_lease - self.settings.poll_timeout
        cursor = claim.cursor
        while True:
            if self.held() is not None:
                return await self._release(claim, datetime.now(UTC), DEFERRED, self.held())
            moment = time.monotonic()
            delay = self.poller.pace(moment)
            if moment + delay > deadline:
                return await self._release(claim, datetime.now(UTC), HANDED_BACK)
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                page = await self.client.fetch_page(
                    self._client(), claim.uuid, claim.account, cursor, self.poller.observe
                )
            except PollError as exc:
                self.poller.failed(exc)
                return await self._release(claim, datetime.now(UTC), DEFERRED, self.held())
            except Exception as exc:  # a client's bug: the send is asked again later
                log.error("sweep_error", send=claim.uuid, error=repr(exc), exc_info=exc)
                wait = self.settings.poll_interval
                return await self._release(claim, datetime.now(UTC), ERROR, wait)
            self.poller.recovered()
            now = datetime.now(UTC)
            if page is None:
                wait = self._backoff.delay(claim.sweeps + 1, self.poller.rng)
                return await self._release(claim, now, NOT_FOUND, wait)
            lease = timedelta(seconds=self.settings.poll_lease)
            pause = timedelta(seconds=self._backoff.delay(claim.sweeps + 1, self.poller.rng))
            written = await self.store.record_send_page(
                self.poller.owner,
                SendPage(
                    self.poller.provider,
                    claim.uuid,
                    cursor,
                    page.events,
                    page.next_cursor,
                    page.malformed,
                    lease_until=format_time(now + lease),
                    next_sweep_at=format_time(now + pause),
                    give_up_reason=self._give_up_reason(claim, now),
                ),
            )
            if written is None:
                log.warning("sweep_lost", provider=self.poller.provider, send=claim.uuid)
                return LOST
            result.pages += 1
            result.recipients += len(page.events) + len(page.malformed)
            if written.done:
                result.settled += int(written.settled)
                log.info(
                    "send_swept",
                    provider=self.poller.provider,
                    send=claim.uuid,
                    settled=written.settled,
                    **dict(written.tally),
                )
                return SWEPT
            assert page.next_cursor is not None
            cursor = page.next_cursor

    async def _release(
        self, claim: SendClaim, now: datetime, result: str, wait: float | None = 0.0
    ) -> str:
        due = now + timedelta(seconds=max(wait or 0.0, 0.0))
        await self.store.release_send(
            claim.provider,
            claim.uuid,
            self.poller.owner,
            next_sweep_at=format_time(due),
            result=result,
        )
        if result != HANDED_BACK:
            log.info("sweep_stopped", provider=claim.provider, send=claim.uuid, result=result)
        return result

    def _give_up_reason(self, claim: SendClaim, now: datetime) -> str | None:
        """Past the maximum age (counted as for a message), a sweep gives up every recipient
        it finds non-final, and the send is settled."""
        max_age = self.settings.poll_max_age
        sent = parse_time(claim.sent_at) if claim.sent_at else None
        start = give_up_from(parse_time(claim.created_at), sent, max_age)
        if now < start + timedelta(seconds=max_age):
            return None
        return f"no final status within {say_duration(max_age)}: the send's sweeps gave up"
