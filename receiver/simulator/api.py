"""What every simulated provider API does before answering: count, refuse on faults, check auth."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from receiver.simulator.state import Simulator

# (status, kind, human text, extra headers) -> the provider's own error response; kinds are
# unauthorized, not_found, rate_limited, unavailable.
ErrorFn = Callable[[int, str, str, dict[str, str] | None], Response]
Handler = Callable[[Request, Simulator], Awaitable[Response]]
AuthFn = Callable[[Request, Simulator], bool]


class PollTarget(Protocol):
    status_requests: int
    polls_in_flight: int
    max_concurrent_polls: int


def provider_endpoint(
    provider: str, name: str, handler: Handler, authorized: AuthFn, error: ErrorFn
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint for one provider API call, counted in the stats under provider.name."""
    key = f"{provider}.{name}"

    async def endpoint(request: Request) -> Response:
        sim: Simulator = request.state.sim
        sim.stats.requests[key] += 1
        response = refusal(sim, provider, request, authorized, error)
        if response is None:
            response = await handler(request, sim)
        else:
            await pause(sim)
        sim.stats.answered(key, response.status_code)
        return response

    endpoint.__name__ = f"{provider}_{name}"
    return endpoint


def refusal(
    sim: Simulator, provider: str, request: Request, authorized: AuthFn, error: ErrorFn
) -> Response | None:
    fault = sim.faults.get(provider)
    if (fault and fault.unauthorized) or not authorized(request, sim):
        return error(401, "unauthorized", "authentication failed", None)
    if fault is None:
        return None
    if fault.outage_requests > 0 or fault.outage_until > time.monotonic():
        fault.outage_requests = max(0, fault.outage_requests - 1)
        return error(fault.outage_status, "unavailable", "service unavailable", None)
    if fault.rate_limited > 0:
        fault.rate_limited -= 1
        headers = {"Retry-After": str(fault.retry_after)}
        return error(429, "rate_limited", "too many requests", headers)
    return None


async def pause(sim: Simulator) -> None:
    """The configured API latency, so overlapping requests are observable."""
    if sim.config.api_latency:
        await asyncio.sleep(sim.config.api_latency)


async def json_body(request: Request) -> Any:
    """The parsed JSON body, or ValueError."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the body is not valid JSON") from None


@asynccontextmanager
async def polling(sim: Simulator, *targets: PollTarget) -> AsyncIterator[None]:
    """Count a status request against its message(s) and note how many overlap in time."""
    for target in targets:
        target.status_requests += 1
        target.polls_in_flight += 1
        target.max_concurrent_polls = max(target.max_concurrent_polls, target.polls_in_flight)
    try:
        await pause(sim)
        yield
    finally:
        for target in targets:
            target.polls_in_flight -= 1
