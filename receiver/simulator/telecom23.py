"""Simulated 23 Telecom: send, per-message status, and delivery reports (DLRs) pushed as JSON
(one report, or an array of up to 100) or as a form, optionally signed."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.simulator.api import json_body, pause, polling, provider_endpoint
from receiver.simulator.model import Push, SimMessage, iso, status_time
from receiver.simulator.signing import telecom23_signature
from receiver.simulator.state import Simulator

MAX_RECIPIENTS = 100
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_ERRORS = {
    "unauthorized": "UNAUTHORIZED",
    "not_found": "NOT_FOUND",
    "rate_limited": "RATE_LIMITED",
    "unavailable": "SERVICE_UNAVAILABLE",
}


def error(status: int, kind: str, text: str, headers: dict[str, str] | None) -> Response:
    return fail(status, _ERRORS[kind], text, headers)


def fail(
    status: int, code: str, description: str, headers: dict[str, str] | None = None
) -> Response:
    body = {"status": False, "error_code": code, "description": description}
    return JSONResponse(body, status_code=status, headers=headers)


def authorized(request: Request, sim: Simulator) -> bool:
    return hmac.compare_digest(
        request.headers.get("x-api-key", ""), sim.config.accounts.telecom23_api_key
    )


async def send(request: Request, sim: Simulator) -> Response:
    await pause(sim)
    try:
        data = await json_body(request)
    except ValueError:
        return fail(400, "INVALID_BODY", "Cannot parse request body")
    if not isinstance(data, dict):
        return fail(400, "INVALID_BODY", "Cannot parse request body")
    to, text, sender = data.get("to"), data.get("message"), data.get("sender_id")
    if not isinstance(to, list) or not to:
        return fail(400, "INVALID_TO", "Missing or empty to array")
    if len(to) > MAX_RECIPIENTS:
        return fail(400, "TOO_MANY_RECIPIENTS", f"At most {MAX_RECIPIENTS} recipients")
    if not all(isinstance(n, str) and _E164.fullmatch(n) for n in to):
        return fail(400, "INVALID_TO", "Every recipient must be an E.164 number")
    if not isinstance(text, str) or not text:
        return fail(400, "INVALID_MESSAGE", "Missing or empty message")
    if not isinstance(sender, str) or not sender or len(sender) > 15:
        return fail(400, "INVALID_SENDER", "Missing or empty sender_id")
    gsm = text.isascii()
    n = segments(text, gsm)
    made = sim.create("telecom23", len(to), to=to, sender=sender, body=text, segments=n)
    request.state.pusher.add(made)
    # One entry per segment, each with its own id; one result per recipient (its first's id).
    accepted = [{"dnis": m.to, "message_id": m.message_id, "segment_num": m.segment} for m in made]
    results = [
        {"dnis": m.to, "message_id": m.message_id, "segments": n, "status": "accepted"}
        for m in made
        if m.segment == 1
    ]
    summary = {
        "total_recipients": len(results),
        "total_segments": len(made),
        "total_cost": round(0.0085 * len(made), 4),
        "encoding": "GSM-7" if gsm else "UCS-2",
        "accepted_count": len(made),
        "blocked_count": 0,
        "queue_error_count": 0,
        "config_error_count": 0,
        "db_error_count": 0,
    }
    return JSONResponse(
        {"status": True, "messages": accepted, "results": results, "summary": summary}
    )


def segments(text: str, gsm: bool) -> int:
    """How many segments the text goes out as: 160 GSM-7 characters (70 UCS-2) fit one; a
    longer text is split into segments of 153 (67), the rest of each carrying the header
    that joins them on the handset."""
    single, each = (160, 153) if gsm else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // each)


def _status_code(message: SimMessage, status: str) -> str | None:
    if status == message.flavor.delivered:
        return "000"
    return message.error_code if status in message.flavor.failures else None


async def status(request: Request, sim: Simulator) -> Response:
    message = sim.messages.get(request.path_params["message_id"])
    if message is None or message.provider != "telecom23":
        await pause(sim)
        return fail(404, "NOT_FOUND", "Message not found")
    async with polling(sim, message):
        changed, current = message.status_at(sim.clock.now())
        final = current in message.flavor.final_candidates()
        return JSONResponse(
            {
                "message_id": message.message_id,
                "recipient": message.to,
                "status": current,
                "status_code": _status_code(message, current),
                "created_at": iso(message.created),
                "delivered_at": iso(changed) if final else None,
            }
        )


def report(sim: Simulator, message: SimMessage, push: Push) -> dict[str, Any]:
    """One DLR; with field variants on, some use the alternative names the gateway also sends."""
    variant = sim.config.telecom23_field_variants and int(push.delivery_id[-2:], 16) % 2 == 1
    fields: dict[str, Any] = {
        "client_message_id" if variant else "message_id": message.message_id,
        "status": push.status,
    }
    code = _status_code(message, push.status)
    if code is not None:
        fields["status_code"] = code
    fields["recipient" if variant else "dnis"] = message.to
    fields["sender_id"] = message.sender
    fields["delivered_at" if variant else "done_date"] = iso(status_time(message, push.status))
    fields["segments"] = 1
    return fields


def push_request(
    sim: Simulator, url: str, jobs: list[tuple[SimMessage, Push]]
) -> tuple[dict[str, str], bytes]:
    reports = [report(sim, message, push) for message, push in jobs]
    if sim.config.telecom23_format == "form":
        (flat,) = reports
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        body = urlencode({k: str(v) for k, v in flat.items()}).encode()
    else:
        headers = {"Content-Type": "application/json"}
        payload: Any = reports if sim.config.batch_size["telecom23"] > 1 else reports[0]
        body = json.dumps(payload).encode()
    secret = sim.config.accounts.telecom23_webhook_secret
    if secret:
        headers["X-Telecom23-Signature"] = telecom23_signature(secret, body)
    return headers, body


def routes() -> list[Route]:
    return [
        Route(
            "/api/v1/sms/send",
            provider_endpoint("telecom23", "send", send, authorized, error),
            methods=["POST"],
        ),
        Route(
            "/api/v1/sms/status/{message_id}",
            provider_endpoint("telecom23", "status", status, authorized, error),
            methods=["GET"],
        ),
    ]
