"""The poll scheduler: for each provider, claim the messages whose DLR is late, ask the provider,
and record what it says through the same rule as callbacks.

One loop per provider, inside the service (started and stopped by the app's lifespan) or once
from `receiver poll --once`. Each loop keeps to the provider's request rate and concurrency,
waits out a 429's Retry-After, backs off on 5xx and timeouts, and stops on 401/403 until the
credentials are fixed. Messages are leased in the store, so several processes sharing one
database never ask about the same message at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import structlog

from receiver.engine import Outcome, format_time, parse_time
from receiver.polling.base import (
    NOT_FOUND,
    OK,
    RATE_LIMITED,
    PollAnswer,
    PollError,
    PollLimits,
    RateLimited,
    StatusClient,
    Unauthorized,
    Unavailable,
)
from receiver.polling.policy import Backoff, Pacer, give_up_from
from receiver.polling.sends import SendSweeper
from receiver.settings import Settings, say_duration
from receiver.store import Store, StoreUnavailable
from receiver.store.base import DueMessage, PollDone, Recorded
from receiver.version import __version__

log = structlog.get_logger("receiver.polling")

# Results of a claimed message that was not asked about.
NO_CLIENT = "no_client"  # nothing to ask: the provider has no status endpoint configured
STOPPED = "stopped"  # polling this provider stopped on 401/403
DEFERRED = "deferred"  # the provider asked us to wait (429) or is failing: asked later
UNEXPECTED = "error"  # the status client failed in a way it should not have (logged)

# A provider without limits of its own (it is never asked: its messages only time out).
DEFAULT_RATE, DEFAULT_CONCURRENCY = 5.0, 4
# The longest Retry-After honoured.
RETRY_AFTER_MAX = 86400.0
# Polled events recorded per write transaction.
RECORD_SLICE = 500
# The shortest and longest a loop sleeps when nothing is due (never a hot loop).
MIN_IDLE = 0.05
# A provider failing (5xx, timeouts; 429s without Retry-After) is retried after 1, 2, 4 ... s,
# at most 5 minutes.
OUTAGE_BACKOFF = Backoff(base=1.0, cap=300.0)


def owner_id() -> str:
    """Who holds a claim: unique per process (host, pid and a random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


@dataclass
class ProviderState:
    """What /readyz and the logs tell about one provider's polling."""

    state: str = "polling"  # polling | paused | stopped | not_configured
    detail: str | None = None
    paused_until: float = 0.0  # monotonic
    failures: int = 0  # consecutive 5xx/timeouts
    last_error: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"state": self.state, "detail": self.detail}


@dataclass
class SweepResult:
    """What one pass over a provider's due messages did."""

    claimed: int = 0
    asked: int = 0
    applied: int = 0
    gave_up: int = 0
    deferred: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, other: SweepResult) -> None:
        self.claimed += other.claimed
        self.asked += other.asked
        self.applied += other.applied
        self.gave_up += other.gave_up
        self.deferred += other.deferred
        for k, v in other.outcomes.items():
            self.outcomes[k] = self.outcomes.get(k, 0) + v


RequestCounter = Callable[[str, str], None]  # (provider, result)


class _Held(Exception):
    """A request stopped before it went out: its provider was paused or stopped meanwhile."""


class ProviderPoller:
    """The due queue of one provider (a message provider name; its client may be None)."""

    def __init__(
        self,
        provider: str,
        client: StatusClient | None,
        store: Store,
        settings: Settings,
        *,
        owner: str,
        rate: float,
        concurrency: int,
        count_request: RequestCounter | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.client = client
        self.store = store
        self.settings = settings
        self.owner = owner
        self.status = ProviderState() if client else ProviderState("not_configured")
        if client is None:
            self.status.detail = "no status endpoint configured: late messages time out only"
        self._backoff = Backoff(settings.poll_backoff, settings.poll_backoff_max)
        self._rng = rng or random.Random()
        self._pacer = Pacer(rate)
        self._rate = rate
        # Requests of the batch in hand may start until then (monotonic): one started later
        # could outlive the batch's lease, and another claimer could ask about it meanwhile.
        self._lease_deadline = float("inf")
        self._slots = asyncio.Semaphore(concurrency)
        self._count = count_request or (lambda provider, result: None)
        self._http: httpx.AsyncClient | None = None
        self.concurrency = concurrency
        # The sweeps of sends registered whole, when the client reads a send page by page.
        self.sends = SendSweeper(self, client) if hasattr(client, "fetch_page") else None  # type: ignore[arg-type]

    # -- the HTTP client, paced per request ----------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.poll_timeout,
                headers={"User-Agent": f"receiver/{__version__} (delivery status poller)"},
                # Every request waits for its slot, pages of a sweep included.
                event_hooks={"request": [self._pace]},
                follow_redirects=False,
            )
        return self._http

    async def _pace(self, request: httpx.Request) -> None:
        delay = self._pacer.wait(time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)
        # A 429 or a refusal that came back while this request waited for its slot: it does
        # not go out (the pause covers requests already admitted, not only new claims).
        now = time.monotonic()
        if self.status.state == "stopped" or self.status.paused_until > now:
            raise _Held("the provider is paused or stopped")
        if now > self._lease_deadline:
            raise _Held("the claim's lease is running out")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _observe(self, result: str) -> None:
        self._count(self.provider, result)

    # -- what the sweeps of sends share with the message polls (receiver.polling.sends) ---------

    observe = _observe

    def pace(self, now: float) -> float:
        """The wait before the next request may go (its slot booked): one rate for both."""
        return self._pacer.wait(now)

    def failed(self, exc: PollError) -> None:
        """A failure of the provider during a send's sweep: paused or stopped as for polls."""
        self._failed([], exc)

    def recovered(self) -> None:
        self._recovered()

    @property
    def rng(self) -> random.Random:
        return self._rng

    # -- one pass ----------------------------------------------------------------------------

    async def sweep(self) -> SweepResult:
        """Claim one batch of due messages and settle each: asked, deferred or given up."""
        now = datetime.now(UTC)
        lease = self.settings.poll_lease
        # No request starts later than a timeout before the lease ends, so none outlives it.
        self._lease_deadline = time.monotonic() + lease - self.settings.poll_timeout
        claimed = await self.store.claim_due(
            self.provider,
            now=format_time(now),
            # About what the provider's rate gets through in half the lease; the rest of a
            # batch that runs late is handed back, not polled under an expired lease.
            limit=max(1, min(self.settings.poll_batch, int(self._rate * lease / 2))),
            lease_until=format_time(now + timedelta(seconds=lease)),
            owner=self.owner,
            group_of=self.client.group_prefix if self.client else None,
        )
        result = SweepResult(claimed=len(claimed))
        if not claimed:
            return result
        if self.client is None or self.status.state == "stopped":
            reason = NO_CLIENT if self.client is None else STOPPED
            await self._settle([], [self._unasked(m, reason) for m in claimed], result)
            return result
        groups: dict[str, list[DueMessage]] = {}
        for message in claimed:
            groups.setdefault(self.client.group(message), []).append(message)
        await asyncio.gather(*(self._poll_group(g, result) for g in groups.values()))
        return result

    async def _poll_group(self, messages: list[DueMessage], result: SweepResult) -> None:
        assert self.client is not None
        async with self._slots:
            wait = self.status.paused_until - time.monotonic()
            if self.status.state == "stopped" or wait > 0:
                # Paused (429 or an outage) or stopped while this group waited its turn.
                reason = STOPPED if self.status.state == "stopped" else DEFERRED
                await self._settle([], [self._unasked(m, reason, wait) for m in messages], result)
                return
            try:
                answers = await self.client.poll(self._client(), messages, self._observe)
            except _Held:
                wait = self.status.paused_until - time.monotonic()
                reason = STOPPED if self.status.state == "stopped" else DEFERRED
                await self._settle([], [self._unasked(m, reason, wait) for m in messages], result)
                return
            except PollError as exc:
                await self._settle([], self._failed(messages, exc), result)
                return
            except Exception as exc:  # a client's bug: the messages are settled all the same
                log.error("poll_error", provider=self.provider, error=repr(exc), exc_info=exc)
                failure = Unavailable(f"unexpected error: {exc!r}", UNEXPECTED)
                await self._settle([], self._failed(messages, failure), result)
                return
        self._recovered()
        await self._settle(*self._answered(messages, answers), result)

    def _answered(
        self, messages: Sequence[DueMessage], answers: Sequence[PollAnswer]
    ) -> tuple[list[PollAnswer], list[PollDone]]:
        by_id = {a.message_id: a for a in answers}
        done = []
        for message in messages:
            answer = by_id.get(message.message_id)
            found = answer is not None and answer.event is not None
            attempts = message.poll_attempts + 1
            done.append(
                PollDone(
                    message,
                    OK if found else NOT_FOUND,
                    self._next_poll(message, self._backoff.delay(attempts, self._rng)),
                    give_up_reason=self._expired(message, attempts, OK if found else NOT_FOUND),
                )
            )
        return list(answers), done

    def _failed(self, messages: Sequence[DueMessage], exc: PollError) -> list[PollDone]:
        now = time.monotonic()
        if isinstance(exc, Unauthorized):
            if self.status.state != "stopped":
                # Once: the credentials are wrong, and asking again will not fix them.
                log.error(
                    "polling_stopped",
                    provider=self.provider,
                    error=str(exc),
                    detail="the provider refused the credentials; fix them and restart",
                )
            self.status = ProviderState("stopped", f"credentials refused: {exc}")
            return [self._unasked(m, STOPPED) for m in messages]
        if self.status.paused_until <= now:
            # Once per pause: groups failing together are one failure of the provider.
            self.status.failures += 1
        if isinstance(exc, RateLimited):
            pause = exc.retry_after
            if pause is None:  # no Retry-After: 1, 2, 4 ... s while the 429s go on
                pause = OUTAGE_BACKOFF.delay(self.status.failures, self._rng)
            # At least a second (a Retry-After of 0, or a date the clocks disagree on, must not
            # turn into a tight loop), at most a day (a year-9999 date is not a plan).
            pause = min(max(pause, 1.0), RETRY_AFTER_MAX)
            detail = f"rate limited: waiting {pause:.1f} s"
        else:
            pause = OUTAGE_BACKOFF.delay(self.status.failures, self._rng)
            detail = f"{exc}; retrying in {pause:.1f} s"
        if self.status.paused_until < now + pause:
            if self.status.paused_until <= now:  # logged when a pause starts, not per answer
                log.warning(
                    "polling_paused", provider=self.provider, result=exc.result, detail=detail
                )
            self.status.paused_until = now + pause
            self.status.state, self.status.detail = "paused", detail
        return [
            PollDone(
                m,
                exc.result,
                self._next_poll(m, pause),
                attempted=not isinstance(exc, RateLimited),
                give_up_reason=self._expired(m, m.poll_attempts, exc.result),
            )
            for m in messages
        ]

    def _recovered(self) -> None:
        if self.status.state == "paused" and self.status.paused_until <= time.monotonic():
            log.info("polling_resumed", provider=self.provider)
            self.status = ProviderState()
        self.status.failures = 0

    def _unasked(self, message: DueMessage, result: str, wait: float = 0.0) -> PollDone:
        """A claimed message not asked about: deferred, or given up once past its age."""
        if result == DEFERRED:
            next_at = self._next_poll(message, max(wait, MIN_IDLE))
        elif result == STOPPED:
            # Looked at again now and then: after a restart with fixed credentials it is asked
            # within the longest backoff, not left until its time-out.
            next_at = self._next_poll(message, self.settings.poll_backoff_max)
        else:  # nobody to ask: the next thing to happen is its time-out
            next_at = format_time(self._expiry(message))
        return PollDone(
            message,
            result,
            next_at,
            attempted=False,
            give_up_reason=self._expired(message, message.poll_attempts, result),
        )

    # -- time ----------------------------------------------------------------------------------

    def _expiry(self, message: DueMessage) -> datetime:
        """When the message is given up: the maximum age after it started (give_up_from: when
        it was sent, unless that is in the future or already past the maximum age)."""
        sent = None
        if message.sent_at:
            with suppress(ValueError):
                sent = parse_time(message.sent_at)
        max_age = self.settings.poll_max_age
        start = give_up_from(parse_time(message.created_at), sent, max_age)
        return start + timedelta(seconds=max_age)

    def _next_poll(self, message: DueMessage, delay: float) -> str:
        """`delay` from now, but no later than the message's time-out, when it is asked once
        more and then given up."""
        now = datetime.now(UTC)
        delay = min(max(delay, 0.0), self.settings.poll_max_age)  # also keeps clear of year 9999
        return format_time(min(now + timedelta(seconds=delay), max(now, self._expiry(message))))

    def _expired(self, message: DueMessage, attempts: int, result: str) -> str | None:
        """The reason to give the message up now, or None while it is younger than the
        maximum age. Kept with the message (final_reason)."""
        if datetime.now(UTC) < self._expiry(message):
            return None
        age = say_duration(self.settings.poll_max_age)
        return f"no final status within {age}: {attempts} poll(s), last result {result}"

    # -- recording -----------------------------------------------------------------------------

    async def _settle(
        self, answers: Sequence[PollAnswer], done: Sequence[PollDone], result: SweepResult
    ) -> None:
        events = [a.event for a in answers if a.event is not None]
        # A big me-sms sweep is recorded a slice at a time, so callbacks are written between
        # the slices instead of waiting behind one long transaction.
        slices = [events[i : i + RECORD_SLICE] for i in range(0, len(events), RECORD_SLICE)]
        recorded: list[Recorded] = []
        for i, chunk in enumerate(slices or [[]]):
            last = i == max(len(slices), 1) - 1
            recorded += await self.store.finish_polls(self.owner, chunk, done if last else [])
        result.asked += sum(1 for d in done if d.attempted)
        result.deferred += sum(1 for d in done if d.result in (DEFERRED, RATE_LIMITED))
        for r in recorded:
            _log_recorded(r)
            key = "gave_up" if r.event.source == "timeout" else r.outcome.value
            result.outcomes[key] = result.outcomes.get(key, 0) + 1
            if r.event.source == "timeout" and r.outcome is Outcome.APPLIED:
                result.gave_up += 1
            elif r.outcome is Outcome.APPLIED:
                result.applied += 1


def _log_recorded(r: Recorded) -> None:
    if r.event.source == "timeout":
        log.info(
            "gave_up",
            provider=r.event.provider,
            message_id=r.event.message_id,
            old_status=r.previous_status,
            new_status=r.status,
            reason=json.loads(r.event.body or "{}").get("reason"),
        )
        return
    log.info(
        "polled",
        provider=r.event.provider,
        message_id=r.event.message_id,
        provider_status=r.event.provider_status,
        outcome=r.outcome.value,
        old_status=r.previous_status,
        new_status=r.status,
    )


class Scheduler:
    """Every provider's poller, run as background tasks of the service."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clients: Mapping[str, StatusClient],
        providers: Sequence[str],
        *,
        limits: Mapping[str, PollLimits],
        count_request: RequestCounter | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.owner = owner or owner_id()
        self._clients = clients
        self._limits = limits
        self._count_request = count_request
        self.pollers: dict[str, ProviderPoller] = {}
        for name in providers:
            self._add(name)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def _add(self, name: str) -> None:
        limits = self._limits.get(name)
        self.pollers[name] = ProviderPoller(
            name,
            self._clients.get(name),
            self.store,
            self.settings,
            owner=self.owner,
            rate=limits.rate if limits else DEFAULT_RATE,
            concurrency=limits.concurrency if limits else DEFAULT_CONCURRENCY,
            count_request=self._count_request,
        )

    async def adopt_queued(self) -> None:
        """A poller for every provider with messages waiting in the queue, such as a Standard
        Webhooks source since removed from the settings: their messages still time out."""
        for name in await self.store.queued_providers():
            if name not in self.pollers:
                self._add(name)

    def polled_providers(self) -> list[str]:
        """The providers with a status client (the others' late messages only time out)."""
        return [name for name, p in self.pollers.items() if p.client is not None]

    def status(self) -> dict[str, dict[str, str | None]]:
        return {name: p.status.as_json() for name, p in self.pollers.items()}

    async def sweep_all(self) -> dict[str, SweepResult]:
        """Everything due now, once (`receiver poll --once`): batch after batch per provider
        until a batch comes back short."""
        results: dict[str, SweepResult] = {}
        await self.adopt_queued()

        async def drain(poller: ProviderPoller) -> None:
            total = SweepResult()
            while True:
                batch = await poller.sweep()
                total.add(batch)
                if batch.claimed < self.settings.poll_batch or batch.deferred:
                    break
            results[poller.provider] = total

        await asyncio.gather(*(drain(p) for p in self.pollers.values()))
        for poller in self.pollers.values():
            if poller.sends is not None:
                await self._sweep_sends_once(poller.sends, results[poller.provider])
        return results

    async def _sweep_sends_once(self, sweeper: SendSweeper, total: SweepResult) -> None:
        """Each due send once, for up to its lease (`receiver poll --once`): one that is not
        swept to its end is handed back, its cursor kept for the service or the next run."""
        swept: list[str] = []
        for _ in range(10_000):  # bounded: each round claims sends not swept yet
            batch = await sweeper.run(skip=swept)
            fresh = [u for u in batch.uuids if u not in swept]
            swept += fresh
            total.claimed += len(fresh)
            total.asked += batch.pages
            total.deferred += batch.outcomes.get("deferred", 0)
            if not fresh or batch.outcomes.get("deferred"):
                return

    async def start(self) -> None:
        await self.adopt_queued()
        self._tasks = [
            asyncio.create_task(self._run(p), name=f"receiver-poll-{p.provider}")
            for p in self.pollers.values()
        ]
        self._tasks += [
            asyncio.create_task(self._run_sends(p.sends), name=f"receiver-sweep-{p.provider}")
            for p in self.pollers.values()
            if p.sends is not None
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for poller in self.pollers.values():
            await poller.aclose()
            if poller.sends is not None:
                await poller.sends.aclose()

    async def _run(self, poller: ProviderPoller) -> None:
        while not self._stopping.is_set():
            try:
                batch = await poller.sweep()
                if batch.claimed:
                    log.info(
                        "poll_sweep",
                        provider=poller.provider,
                        claimed=batch.claimed,
                        asked=batch.asked,
                        applied=batch.applied,
                        gave_up=batch.gave_up,
                        deferred=batch.deferred,
                    )
                if batch.claimed >= self.settings.poll_batch and not batch.deferred:
                    await asyncio.sleep(0)  # more is due: go on, letting others run
                    continue
                await self._idle(poller)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("poll_store_unavailable", provider=poller.provider, error=str(exc))
                await asyncio.sleep(self.settings.poll_interval)
            except Exception as exc:  # the loop must live on; the next pass retries
                log.error("poll_failed", provider=poller.provider, error=str(exc), exc_info=exc)
                await asyncio.sleep(self.settings.poll_interval)

    async def _run_sends(self, sweeper: SendSweeper) -> None:
        """The sweeps of sends registered whole, beside the provider's message polls."""
        provider = sweeper.poller.provider
        while not self._stopping.is_set():
            try:
                batch = await sweeper.run()
                if batch.claimed:
                    await asyncio.sleep(0)  # a send handed back is due again at once
                    continue
                wait = self.settings.poll_interval
                held = sweeper.held()
                due = await self.store.next_send_due(provider)
                if held is not None:  # paused or stopped: not before the pause ends
                    wait = min(wait, held)
                elif due is not None:
                    wait = min(wait, (parse_time(due) - datetime.now(UTC)).total_seconds())
                await asyncio.sleep(max(wait, MIN_IDLE))
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("sweep_store_unavailable", provider=provider, error=str(exc))
                await asyncio.sleep(self.settings.poll_interval)
            except Exception as exc:  # the loop must live on; the next pass retries
                log.error("sweep_failed", provider=provider, error=str(exc), exc_info=exc)
                await asyncio.sleep(self.settings.poll_interval)

    async def _idle(self, poller: ProviderPoller) -> None:
        """Sleep until the soonest message falls due, the pause ends, or the poll interval
        passes (new messages may be due sooner), whichever is first, and never less than
        MIN_IDLE."""
        wait = self.settings.poll_interval
        due = await poller.store.next_due(poller.provider)
        if due is not None:
            wait = min(wait, (parse_time(due) - datetime.now(UTC)).total_seconds())
        # Not the whole of a pause: messages past their age are given up during one too (a
        # sweep defers the others to its end).
        wait = max(wait, MIN_IDLE)
        await asyncio.sleep(wait)
