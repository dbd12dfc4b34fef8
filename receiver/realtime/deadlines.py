"""Decides registrations' deadlines as they fall due: each once (met when delivered by then,
missed otherwise), by the store's rules (rules.decide_deadlines), which log a miss as a
`message.deadline_missed` change for the stream.

It sleeps until the soonest deadline, and is poked when a registration sets an earlier one.
With several instances each keeps the same schedule; the store hands a due deadline to one.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog

from receiver.engine import parse_time
from receiver.store import Store, StoreUnavailable
from receiver.store.base import utcnow

log = structlog.get_logger("receiver.realtime")

# The longest sleep between looks at the soonest deadline: another instance's registrations
# set deadlines this one is not told of.
MAX_SLEEP = 30.0
RETRY_AFTER_ERROR = 5.0
BATCH = 500


class DeadlineKeeper:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """A deadline was set: look again at which is soonest."""
        self._poked.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="receiver-deadlines")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> int:
        """Decide every deadline due now; the number missed."""
        missed = 0
        while True:
            found = await self.store.decide_deadlines(utcnow(), BATCH)
            missed += len(found)
            for provider, message_id in found:
                log.info("deadline_missed", provider=provider, message_id=message_id)
            if len(found) < BATCH:
                return missed

    async def _run(self) -> None:
        while True:
            self._poked.clear()
            sleep = MAX_SLEEP
            try:
                soonest = await self.store.next_deadline()
                if soonest is not None and soonest <= utcnow():
                    await self.run_once()
                    continue
            except StoreUnavailable as exc:
                log.warning("deadlines_unavailable", error=str(exc))
                soonest, sleep = None, RETRY_AFTER_ERROR
            if soonest is not None:
                try:
                    until = (parse_time(soonest) - datetime.now(UTC)).total_seconds()
                except (ValueError, OverflowError):  # NEVER, or a time past what it can say
                    until = MAX_SLEEP
                # A little after it, so "now" is past it when the store decides.
                sleep = min(sleep, max(until + 0.005, 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), sleep)
