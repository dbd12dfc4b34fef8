"""Delivers the planned callbacks to the configured URLs, the way a provider's webhook sender does.

One background task on the simulator's event loop. Each message's pushes go out one after the
other in their planned order (so a planned reordering is the order the receiver sees); pushes of
different messages go out concurrently, up to `concurrency`. A push answered 5xx or 429, or not
answered at all, is retried with doubling back-off (simulated seconds) up to `max_attempts`;
another 4xx is final, as with real providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import structlog

from receiver.simulator import mesms, standard, telecom23, twilio
from receiver.simulator.model import Push, SimMessage
from receiver.simulator.state import Simulator

log = structlog.get_logger("receiver.simulator")

Builder = Callable[[Simulator, str, list[tuple[SimMessage, Push]]], tuple[dict[str, str], bytes]]
BUILDERS: dict[str, Builder] = {
    "twilio": twilio.push_request,
    "telecom23": telecom23.push_request,
    "mesms": mesms.push_request,
    "standard": standard.push_request,
}


@dataclass
class _Job:
    message: SimMessage
    index: int  # into message.plan
    generation: int
    attempt: int = 1

    @property
    def push(self) -> Push:
        return self.message.plan[self.index]


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    job: _Job = field(compare=False)


class Pusher:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.pending = 0  # planned pushes not yet delivered or given up
        self.in_flight = 0  # push requests under way
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, messages: list[SimMessage]) -> None:
        for message in messages:
            if message.plan:
                self.pending += len(message.plan)
                self._schedule(_Job(message, 0, self._generation), message.plan[0].due)
        self._wake.set()

    def wake(self) -> None:
        """Look at the queue again (say, the speed changed, so due times moved in real time)."""
        self._wake.set()

    def clear(self) -> None:
        """Drop every planned push; requests under way finish but schedule nothing more."""
        self._generation += 1
        self._heap.clear()
        self.pending = 0
        self._wake.set()

    def _schedule(self, job: _Job, at: float) -> None:
        heapq.heappush(self._heap, _Due(at, next(self._seq), job))

    async def run(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            try:
                await self._dispatch(client)
            finally:
                # Shutting down: stop the pushes under way before their client closes.
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch(self, client: httpx.AsyncClient) -> None:
        """Start each push when it is due, as many at once as `concurrency` allows."""
        slots_for = self.sim.config.concurrency
        slots = asyncio.Semaphore(slots_for)
        while True:
            if self.sim.config.concurrency != slots_for:
                # A new limit applies to requests started from now on.
                slots_for = self.sim.config.concurrency
                slots = asyncio.Semaphore(slots_for)
            now = self.sim.clock.now()
            due: list[_Job] = []
            while self._heap and self._heap[0].at <= now and len(due) < 10_000:
                due.append(heapq.heappop(self._heap).job)
            if due:
                for batch in self._batches(due):
                    await slots.acquire()
                    task = asyncio.create_task(self._deliver(client, batch, slots))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                continue
            timeout = self.sim.clock.real_seconds(self._heap[0].at - now) if self._heap else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _batches(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Group due pushes that one request may carry (telecom23 arrays, me-sms reports)."""
        groups: dict[tuple[str, str | None, str | None], list[_Job]] = {}
        for job in jobs:
            message = job.message
            key = (message.provider, self.sim.callback_url(message), message.send_id)
            groups.setdefault(key, []).append(job)
        batches: list[list[_Job]] = []
        for (provider, _url, _send), group in groups.items():
            size = self.sim.config.batch_size.get(provider, 1)
            batches += [group[i : i + size] for i in range(0, len(group), size)]
        return batches

    async def _post(
        self, client: httpx.AsyncClient, provider: str, url: str, jobs: list[_Job]
    ) -> str:
        """Build and send one push; its answer: the HTTP status, or "error" when none came."""
        sim = self.sim
        try:
            headers, body = BUILDERS[provider](sim, url, [(j.message, j.push) for j in jobs])
        except Exception:
            # A simulator bug: say so, and count it rather than stall `pending` for ever.
            log.exception("push_build_failed", provider=provider)
            return "simulator_error"
        try:
            response = await client.post(
                url, content=body, headers=headers, timeout=sim.config.push_timeout
            )
        except httpx.HTTPError:
            return "error"
        return str(response.status_code)

    async def _deliver(
        self, client: httpx.AsyncClient, jobs: list[_Job], slots: asyncio.Semaphore
    ) -> None:
        sim = self.sim
        message = jobs[0].message
        provider = message.provider
        url = sim.callback_url(message)
        answer: str
        self.in_flight += 1
        try:
            if url is None:  # the target was removed after the message was planned
                answer = "no_target"
            else:
                answer = await self._post(client, provider, url, jobs)
        finally:
            self.in_flight -= 1
            slots.release()
        if jobs[0].generation != self._generation:
            return
        sim.stats.pushed(provider, answer)
        retry = answer in ("error", "429") or answer.startswith("5")
        for job in jobs:
            job.message.attempts += 1
            if retry and job.attempt < sim.config.max_attempts:
                backoff = sim.config.retry_base * 2 ** (job.attempt - 1)
                job.attempt += 1
                self._schedule(job, sim.clock.now() + backoff)
                continue
            if answer.startswith("2"):
                job.message.delivered.append(job.push.status)
                sim.stats.pushes_succeeded += 1
            else:
                job.message.gave_up += 1
                sim.stats.pushes_gave_up += 1
            self.pending -= 1
            following = job.index + 1
            if following < len(job.message.plan):
                next_job = _Job(job.message, following, job.generation)
                self._schedule(next_job, job.message.plan[following].due)
        self._wake.set()
