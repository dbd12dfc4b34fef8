"""The dispatcher: claims the pushes owed (receiver.store.rules.owe_push wrote them in the
transaction of their change), POSTs each to its endpoint signed, and records every attempt.

It is woken after each commit that owed a push, and otherwise wakes when the next retry is
due. At most RECEIVER_PUSH_CONCURRENCY pushes are in flight; a message's pushes to one
endpoint go one at a time, in order (the store only lets a message's oldest pending push be
claimed). Delivery is at least once: a crash between the POST and recording it sends the push
again, with the same webhook-id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from receiver.engine import format_time, parse_time
from receiver.polling.base import retry_after_seconds
from receiver.push import signing
from receiver.push.config import redact_url
from receiver.settings import Settings
from receiver.store import Store, StoreUnavailable
from receiver.store.base import PushAttempt, PushJob
from receiver.version import __version__

log = structlog.get_logger("receiver.push")

RESPONSE_KEPT = 2048  # bytes of an answer's body kept with its attempt
JITTER = 0.2  # each retry's wait is the schedule's ±20%
GONE = 410  # the endpoint says it is gone for good: it is disabled
# The shortest and longest the dispatcher sleeps when it found nothing to send: it looks at
# least this often for pushes other instances owe, retries due, and leases run out.
IDLE_MIN, IDLE_MAX = 1.0, 30.0
LEASE_MARGIN = 30.0  # a claim's lease: twice the timeout and this, for a stuck attempt


def _owner() -> str:
    """This process's name on its leases: host, pid, and a token of this start."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


def dead_owner(owner: str, me: str) -> bool:
    """Whether a lease's owner is gone: an earlier start of this very process (same host and
    pid, another token: a restarted container's pid 1), or a process of this host no longer
    running. Owners on other hosts are left to their leases' ends."""
    host, _, rest = owner.partition("/")
    pid = rest.partition("/")[0]
    my_host = me.partition("/")[0]
    if host != my_host or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return owner != me
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def retry_delay(
    step: int,
    schedule: tuple[float, ...],
    retry_after: float | None,
    rand: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """The wait before the attempt after failed attempt number `step` + 1 of this round
    (None: the schedule is exhausted, the push fails). The schedule's wait ±20%, or the
    endpoint's Retry-After when it gave one, within 0 and the schedule's longest wait."""
    if step >= len(schedule):
        return None
    if retry_after is not None:
        return min(max(retry_after, 0.0), max(schedule))
    return schedule[step] * rand(1 - JITTER, 1 + JITTER)


class Dispatcher:
    """Sends the outbox's pushes; started and stopped by the app's lifespan."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        count_attempt: Callable[[str], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store: Any = store  # a RulesStore: the outbox methods are its own
        self.endpoints = settings.push_url
        self.keys = signing.keys(settings.push_secret)
        self.timeout = settings.push_timeout
        self.schedule = settings.push_retry_schedule
        self.concurrency = settings.push_concurrency
        self.count_attempt = count_attempt or (lambda result: None)
        self.owner = _owner()
        self.disabled: dict[str, str] = {}  # endpoint -> why (a 410)
        # Endpoints that could not be reached, left alone until then (time.monotonic()).
        self.unreachable: dict[str, float] = {}
        self._transport = transport
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.metrics: Any = None  # the app's PushMetrics, set at /metrics

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        released = await self.store.release_push_leases(lambda o: dead_owner(o, self.owner))
        if released:
            log.info("push_leases_released", pushes=released)
        await self.refresh()
        self._client = httpx.AsyncClient(
            transport=self._transport,
            follow_redirects=False,  # a redirect is not a delivery: it is retried
            limits=httpx.Limits(max_connections=self.concurrency),
            headers={"user-agent": f"receiver/{__version__} (push)"},
            timeout=self.timeout,
        )
        self._task = asyncio.create_task(self._run(), name="receiver-push")

    async def stop(self) -> None:
        """Stop sending; pushes in flight are released to be sent again (same webhook-id)."""
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.store.release_push_leases(lambda o: o == self.owner)
        if self._client is not None:
            await self._client.aclose()

    def wake(self) -> None:
        """A commit owed pushes (or a retry was asked for): look now. Not while every endpoint
        is in its wait after an unreachable attempt (none disabled): the loop would claim
        nothing, and it wakes by itself when the first wait is over. Commits owing pushes
        to a down endpoint then cost no wake-up each, and no read of the outbox."""
        if self._wake.is_set() or (not self.disabled and not self._reachable()):
            return
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """Each endpoint's state, for /readyz."""
        return {
            redact_url(url): (
                {"state": "disabled", "detail": self.disabled[url]}
                if url in self.disabled
                else {"state": "enabled", "detail": None}
            )
            for url in self.endpoints
        }

    async def refresh(self) -> None:
        """Read which endpoints are disabled (a retry or recover enables them again), and
        look for pushes now."""
        stats = await self.store.push_stats()
        self.disabled = {
            url: str(info.get("reason") or "disabled")
            for url, info in stats["disabled"].items()
            if url in self.endpoints
        }
        self.wake()

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            free = self.concurrency - len(self._inflight)
            claimed: list[PushJob] = []
            if free > 0 and (self._reachable() or self.disabled):
                try:
                    claimed = await self._claim(free)
                except StoreUnavailable as exc:
                    log.warning("push_claim_failed", error=str(exc))
                except Exception as exc:  # the loop must live on; the next look retries
                    log.error("push_claim_failed", error=str(exc), exc_info=exc)
                for push in claimed:
                    task = asyncio.create_task(self._deliver(push), name="receiver-push-send")
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == free:
                    continue  # there may be more due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), await self._idle(found=bool(claimed)))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free, and the message's next push may go now

    async def _claim(self, limit: int) -> list[PushJob]:
        now = datetime.now(UTC)
        found: list[PushJob] = await self.store.claim_pushes(
            owner=self.owner,
            now=format_time(now),
            lease_until=format_time(now + timedelta(seconds=2 * self.timeout + LEASE_MARGIN)),
            endpoints=self._reachable(),
            limit=limit,
        )
        return found

    def _reachable(self) -> list[str]:
        """The endpoints to send to now: neither disabled nor left alone as unreachable."""
        now = time.monotonic()
        return [
            url
            for url in self.endpoints
            if url not in self.disabled and self.unreachable.get(url, 0.0) <= now
        ]

    async def _idle(self, found: bool) -> float:
        """How long to sleep unless woken: until the next push is due, within bounds."""
        if len(self._inflight) >= self.concurrency:
            return IDLE_MAX  # a finishing send wakes the loop
        if not self._reachable():  # until the first unreachable endpoint is tried again
            until = [t for url, t in self.unreachable.items() if url not in self.disabled]
            if not until:
                return IDLE_MAX  # every endpoint disabled: a retry or recover wakes the loop
            return min(max(min(until) - time.monotonic(), 0.0), IDLE_MAX)
        try:
            due = await self.store.next_push_due()
        except StoreUnavailable:
            return IDLE_MIN
        if due is None:
            return IDLE_MAX
        wait = (parse_time(due) - datetime.now(UTC)).total_seconds()
        # Due already yet not claimed: leased, or behind an older push of its message.
        return min(max(wait, 0.0 if found else IDLE_MIN), IDLE_MAX)

    # -- one attempt -------------------------------------------------------------------------

    async def _deliver(self, push: PushJob) -> None:
        body = push.payload.encode()
        headers = signing.headers(self.keys, push.webhook_id, int(time.time()), body)
        attempted_at = format_time(datetime.now(UTC))
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        kept: bytes = b""
        retry_after: float | None = None
        assert self._client is not None
        try:
            async with asyncio.timeout(self.timeout):
                request = self._client.build_request(
                    "POST", push.endpoint, content=body, headers=headers
                )
                response = await self._client.send(request, stream=True)
                try:
                    status = response.status_code
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                    async for chunk in response.aiter_raw():
                        kept += chunk
                        if len(kept) >= RESPONSE_KEPT:
                            break
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            error = "timeout"
        except httpx.HTTPError:
            error = "network_error"
        duration_ms = round((time.monotonic() - started) * 1000)
        if error is None:
            self.unreachable.pop(push.endpoint, None)
        else:
            # Down (or too slow): every other push to it would fail the same way. It gets no
            # more until the first retry's wait is over, then a few pushes try it again.
            self.unreachable[push.endpoint] = time.monotonic() + self.schedule[0]
        attempt = self._outcome(push, attempted_at, duration_ms, status, error, kept, retry_after)
        self.count_attempt(attempt.result)
        if status == GONE:
            await self._disable(push.endpoint, kept)
        try:
            await self.store.finish_push(push, attempt)
        except Exception as exc:  # its lease runs out and it is sent again: at least once
            log.error("push_record_failed", webhook_id=push.webhook_id, error=str(exc))
            return
        if attempt.status == "failed":
            log.warning(
                "push_failed",
                webhook_id=push.webhook_id,
                endpoint=redact_url(push.endpoint),
                attempts=push.attempts + 1,
                result=attempt.result,
            )

    def _outcome(
        self,
        push: PushJob,
        attempted_at: str,
        duration_ms: int,
        status: int | None,
        error: str | None,
        kept: bytes,
        retry_after: float | None,
    ) -> PushAttempt:
        response = kept[:RESPONSE_KEPT].decode("utf-8", "replace") if status is not None else None

        def attempt(status_after: str, next_attempt_at: str | None = None) -> PushAttempt:
            return PushAttempt(
                attempted_at=attempted_at,
                duration_ms=duration_ms,
                http_status=status,
                error=error,
                response=response,
                status=status_after,
                next_attempt_at=next_attempt_at,
            )

        if status is not None and 200 <= status < 300:
            return attempt("delivered")
        if status == GONE:
            return attempt("failed")
        delay = retry_delay(push.retry_step, self.schedule, retry_after)
        if delay is None:
            return attempt("failed")
        next_at = format_time(datetime.now(UTC) + timedelta(seconds=delay))
        return attempt("pending", next_at)

    async def _disable(self, url: str, body: bytes) -> None:
        reason = "410 Gone: the endpoint asked for no more pushes"
        self.disabled[url] = reason
        log.error(
            "push_endpoint_disabled",
            endpoint=redact_url(url),
            detail=reason + "; retry or recover a push (POST /v1/pushes/...) to enable it again",
            response=body[:200].decode("utf-8", "replace"),
        )
        try:
            await self.store.disable_push_endpoint(url, format_time(datetime.now(UTC)), reason)
        except Exception as exc:
            log.error("push_disable_failed", endpoint=redact_url(url), error=str(exc))
