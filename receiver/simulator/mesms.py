"""Simulated me-sms: send, per-recipient status with cursor pagination, and pushed reports."""

from __future__ import annotations

import hmac
import json
import re
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.simulator.api import json_body, pause, polling, provider_endpoint
from receiver.simulator.model import Push, SimMessage, iso, status_time
from receiver.simulator.state import MAX_CREATE, Simulator

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
_MSISDN = re.compile(r"(66|0)([0-9]{8,9})")
_ERRORS = {
    "unauthorized": ("Missing or invalid API key", "UNAUTHORIZED"),
    "not_found": ("Resource not found", "NOT_FOUND"),
    "rate_limited": ("Rate limit exceeded", "RATE_LIMITED"),
    "unavailable": ("Service unavailable", "SERVICE_UNAVAILABLE"),
}


def error(status: int, kind: str, text: str, headers: dict[str, str] | None) -> Response:
    message, code = _ERRORS[kind]
    return fail(status, message, code, headers)


def fail(status: int, text: str, code: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": text, "code": code}, status_code=status, headers=headers)


def authorized(request: Request, sim: Simulator) -> bool:
    return hmac.compare_digest(
        request.headers.get("x-api-key", ""), sim.config.accounts.mesms_api_key
    )


def normalize(msisdn: str) -> str | None:
    """66XXXXXXXXX as me-sms reports it, from either accepted form; None if neither."""
    match = _MSISDN.fullmatch(msisdn)
    return "66" + match.group(2) if match else None


async def send(request: Request, sim: Simulator) -> Response:
    await pause(sim)
    try:
        data = await json_body(request)
    except ValueError:
        return fail(400, "Invalid JSON body", "INVALID_PARAMETERS")
    if not isinstance(data, dict):
        return fail(400, "Invalid JSON body", "INVALID_PARAMETERS")
    msisdns, content = data.get("msisdns"), data.get("content")
    sender = data.get("sender")
    if not isinstance(msisdns, list) or not msisdns:
        return fail(400, "msisdns is required", "INVALID_PARAMETERS")
    if len(msisdns) > MAX_CREATE:
        return fail(400, f"At most {MAX_CREATE} numbers per request", "INVALID_PARAMETERS")
    numbers = [normalize(n) if isinstance(n, str) else None for n in msisdns]
    if None in numbers:
        return fail(400, "msisdns must be 66XXXXXXXXX or 0XXXXXXXXX", "INVALID_PARAMETERS")
    if not isinstance(content, str) or not content:
        return fail(400, "content is required", "INVALID_PARAMETERS")
    if sender is not None and (not isinstance(sender, str) or not sender):
        return fail(400, "sender must be a sender name", "INVALID_PARAMETERS")
    unique = list(dict.fromkeys(n for n in numbers if n))  # one report per number
    made = sim.create(
        "mesms", len(unique), to=unique, sender=sender, body=content, per_send=len(unique)
    )
    request.state.pusher.add(made)
    send_id = made[0].send_id
    return JSONResponse(
        {"uuid": send_id, "status": "pending", "total": len(made), "credits": len(made)}
    )


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        return None
    return int(raw)


def recipient(message: SimMessage, now: float) -> dict[str, Any]:
    changed, status = message.status_at(now)
    return {
        "msisdn": message.to,
        "status": status,
        "updatedAt": iso(changed),
        "errorCode": message.error_at(now),
    }


async def recipients(request: Request, sim: Simulator) -> Response:
    """A page of recipients after the cursor `after` (a recipient's 1-based position)."""
    send_ = sim.mesms_sends.get(request.path_params["uuid"])
    if send_ is None:
        await pause(sim)
        return fail(404, "SMS not found", "NOT_FOUND")
    after = _int_param(request, "after", 0, 0, 10**9)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    wanted = request.query_params.get("status")
    if after is None or limit is None:
        return fail(400, f"after must be >= 0 and limit 1 to {MAX_LIMIT}", "INVALID_PARAMETERS")
    if wanted is not None and wanted not in send_.recipients[0].flavor.canonical:
        return fail(400, "unknown status filter", "INVALID_PARAMETERS")
    async with polling(sim, send_):
        now = sim.clock.now()
        page: list[dict[str, Any]] = []
        cursor, more = after, False
        summary: Counter[str] = Counter()
        for position, message in enumerate(send_.recipients, start=1):
            item = recipient(message, now)
            summary[item["status"]] += 1
            if position <= after or (wanted and item["status"] != wanted):
                continue
            if len(page) == limit:
                more = True
                continue
            page.append(item)
            message.status_requests += 1
            cursor = position
        return JSONResponse(
            {
                "data": page,
                "nextCursor": cursor,
                "hasMore": more,
                "summary": [{"status": s, "count": n} for s, n in sorted(summary.items())],
            }
        )


def push_request(
    sim: Simulator, url: str, jobs: list[tuple[SimMessage, Push]]
) -> tuple[dict[str, str], bytes]:
    """A report for one send: its recipients' new statuses (or one flat recipient)."""
    items = [
        {
            "msisdn": message.to,
            "status": push.status,
            "updatedAt": iso(status_time(message, push.status)),
            "errorCode": message.error_code if push.status in message.flavor.failures else None,
        }
        for message, push in jobs
    ]
    send_id = jobs[0][0].send_id
    payload: dict[str, Any]
    if sim.config.mesms_flat and len(items) == 1:
        payload = {"uuid": send_id, **items[0]}
    else:
        payload = {"uuid": send_id, "recipients": items}
    return {"Content-Type": "application/json"}, json.dumps(payload).encode()


def routes() -> list[Route]:
    return [
        Route(
            "/api/v2/sms/send",
            provider_endpoint("mesms", "send", send, authorized, error),
            methods=["POST"],
        ),
        Route(
            "/api/v2/sms/{uuid}/recipients",
            provider_endpoint("mesms", "recipients", recipients, authorized, error),
            methods=["GET"],
        ),
    ]
