"""The control API under /_sim/: configure, create messages, read what happened, inject faults.

JSON in and out; errors are {"error": text, "code": machine_code}. It has no auth: the
simulator is a test and demo tool, bound to loopback by default.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.simulator.api import PollTarget, json_body
from receiver.simulator.config import ConfigError, update_config
from receiver.simulator.model import API_PROVIDERS, iso
from receiver.simulator.pusher import Pusher
from receiver.simulator.state import Fault, Simulator, parse_create

FAULT_KINDS = ("rate_limit", "outage", "unauthorized", "clear")


def fail(status: int, text: str, code: str) -> JSONResponse:
    return JSONResponse({"error": text, "code": code}, status_code=status)


async def _object(request: Request) -> dict[str, Any]:
    try:
        data = await json_body(request)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError("the body must be a JSON object")
    return data


async def get_config(request: Request) -> Response:
    return JSONResponse(request.state.sim.config.as_json())


async def post_config(request: Request) -> Response:
    sim: Simulator = request.state.sim
    try:
        sim.config = update_config(sim.config, await _object(request))
    except ConfigError as exc:
        return fail(400, str(exc), "invalid_config")
    if sim.config.speed != sim.clock.speed:
        sim.clock.set_speed(sim.config.speed)
    request.state.pusher.wake()
    return JSONResponse(sim.config.as_json())


async def create_messages(request: Request) -> Response:
    sim: Simulator = request.state.sim
    try:
        made = sim.create(**parse_create(await _object(request), sim.config.realism))
    except ConfigError as exc:
        return fail(400, str(exc), "invalid_request")
    request.state.pusher.add(made)
    return JSONResponse(
        {"created": len(made), "message_ids": [m.message_id for m in made]}, status_code=201
    )


async def list_messages(request: Request) -> Response:
    sim: Simulator = request.state.sim
    query = request.query_params
    try:
        offset = int(query.get("offset", "0"))
        limit = int(query.get("limit", "100000"))
    except ValueError:
        return fail(400, "offset and limit must be whole numbers", "invalid_parameter")
    if offset < 0 or limit < 1:
        return fail(400, "offset must be >= 0 and limit >= 1", "invalid_parameter")
    selected = [
        m
        for m in sim.messages.values()
        if all(
            query.get(key) in (None, value)
            for key, value in (
                ("provider", m.provider),
                ("source", m.source),
                ("send_id", m.send_id),
            )
        )
    ]
    now = sim.clock.now()
    page = [m.as_json(now) for m in selected[offset : offset + limit]]
    return JSONResponse({"total": len(selected), "messages": page})


async def get_message(request: Request) -> Response:
    sim: Simulator = request.state.sim
    message = sim.messages.get(request.path_params["message_id"])
    if message is None:
        return fail(404, "no such message", "not_found")
    return JSONResponse(message.as_json(sim.clock.now()))


async def stats(request: Request) -> Response:
    sim: Simulator = request.state.sim
    pusher: Pusher = request.state.pusher
    s = sim.stats
    by_provider: Counter[str] = Counter()
    for endpoint, n in s.requests.items():
        by_provider[endpoint.split(".")[0]] += n
    polled: list[PollTarget] = [*sim.messages.values(), *sim.mesms_sends.values()]
    return JSONResponse(
        {
            "now": iso(sim.clock.now()),
            "speed": sim.clock.speed,
            "messages": len(sim.messages),
            "requests": dict(s.requests),
            "requests_by_provider": dict(by_provider),
            "responses": {k: dict(v) for k, v in s.responses.items()},
            "deliveries": {
                "attempts": dict(s.push_attempts),
                "answers": {k: dict(v) for k, v in s.push_answers.items()},
                "succeeded": s.pushes_succeeded,
                "gave_up": s.pushes_gave_up,
            },
            "pending": pusher.pending,
            "in_flight": pusher.in_flight,
            "max_concurrent_polls": max((p.max_concurrent_polls for p in polled), default=0),
        }
    )


async def get_faults(request: Request) -> Response:
    sim: Simulator = request.state.sim
    return JSONResponse({p: f.as_json() for p, f in sim.faults.items()})


def _count(data: dict[str, Any], key: str, default: int, hi: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise ConfigError(f"{key} must be a whole number from 0 to {hi}")
    return value


async def post_faults(request: Request) -> Response:
    """Inject a fault into a provider's API: {"provider", "kind", ...}; see the README."""
    sim: Simulator = request.state.sim
    try:
        data = await _object(request)
        provider, kind = data.get("provider"), data.get("kind")
        if kind not in FAULT_KINDS:
            raise ConfigError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if kind == "clear" and provider is None:
            sim.faults.clear()
            return JSONResponse({})
        if provider not in API_PROVIDERS:
            raise ConfigError(f"provider must be one of {', '.join(API_PROVIDERS)}")
        fault = sim.fault(provider)
        if kind == "clear":
            sim.faults[provider] = fault = Fault()
        elif kind == "unauthorized":
            fault.unauthorized = True
        elif kind == "rate_limit":
            fault.rate_limited = _count(data, "count", 1, 10**6)
            fault.retry_after = _count(data, "retry_after", 1, 86_400)
        else:
            status = _count(data, "status", 503, 599)
            if status < 500:
                raise ConfigError("status must be a 5xx")
            fault.outage_status = status
            if "seconds" in data:
                seconds = data["seconds"]
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    raise ConfigError("seconds must be a number")
                fault.outage_until = time.monotonic() + max(0.0, float(seconds))
            else:
                fault.outage_requests = _count(data, "count", 1, 10**6)
    except ConfigError as exc:
        return fail(400, str(exc), "invalid_fault")
    return JSONResponse({p: f.as_json() for p, f in sim.faults.items()})


async def reset(request: Request) -> Response:
    sim: Simulator = request.state.sim
    try:
        data = await _object(request) if await request.body() else {}
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError("seed must be a whole number")
        if set(data) - {"seed"}:
            raise ConfigError("reset takes only seed")
    except ConfigError as exc:
        return fail(400, str(exc), "invalid_request")
    request.state.pusher.clear()
    sim.reset(seed)
    return JSONResponse({"seed": sim.config.seed})


def routes() -> list[Route]:
    return [
        Route("/_sim/config", get_config, methods=["GET"]),
        Route("/_sim/config", post_config, methods=["POST"]),
        Route("/_sim/messages", create_messages, methods=["POST"]),
        Route("/_sim/messages", list_messages, methods=["GET"]),
        Route("/_sim/messages/{message_id}", get_message, methods=["GET"]),
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/faults", get_faults, methods=["GET"]),
        Route("/_sim/faults", post_faults, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ]
