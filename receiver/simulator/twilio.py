"""Simulated Twilio: the Messages resource (create, fetch) and signed status callbacks."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.simulator.api import pause, polling, provider_endpoint
from receiver.simulator.config import ConfigError
from receiver.simulator.model import Push, SimMessage, status_time
from receiver.simulator.signing import twilio_signature
from receiver.simulator.state import Simulator

API_VERSION = "2010-04-01"
_ERRORS = {
    "unauthorized": (20003, "Authenticate"),
    "not_found": (20404, "The requested resource was not found"),
    "rate_limited": (20429, "Too Many Requests"),
    "unavailable": (20500, "Internal Server Error"),
}
_ERROR_MESSAGES = {
    "30003": "Unreachable destination handset",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered",
    "30008": "Unknown error",
}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _error_body(code: int, message: str, status: int, headers: dict[str, str] | None) -> Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


def error(status: int, kind: str, text: str, headers: dict[str, str] | None) -> Response:
    code, message = _ERRORS[kind]
    return _error_body(code, message, status, headers)


def invalid(code: int, message: str) -> Response:
    return _error_body(code, message, 400, None)


def _tokens(sim: Simulator) -> dict[str, str]:
    """Each simulated account's auth token, by SID: the main account and its subaccount."""
    accounts = sim.config.accounts
    return {
        accounts.twilio_account_sid: accounts.twilio_auth_token,
        accounts.twilio_subaccount_sid: accounts.twilio_subaccount_token,
    }


def authorized(request: Request, sim: Simulator) -> bool:
    """HTTP basic auth with an account SID and its auth token, for that account's path, or the
    main account's for its subaccount's path too (as Twilio's v2010 API allows); a subaccount's
    credentials reach only its own."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    accounts = sim.config.accounts
    token = _tokens(sim).get(user)
    reachable = {user}
    if user == accounts.twilio_account_sid:
        reachable.add(accounts.twilio_subaccount_sid)
    return (
        scheme.lower() == "basic"
        and token is not None
        and hmac.compare_digest(password, token)
        and request.path_params.get("account_sid") in reachable
    )


def account_of(sim: Simulator, message: SimMessage) -> str:
    """The account the message was sent from."""
    return message.account or sim.config.accounts.twilio_account_sid


def rfc2822(t: float) -> str:
    g = time.gmtime(t)
    return (
        f"{_DAYS[g.tm_wday]}, {g.tm_mday:02d} {_MONTHS[g.tm_mon - 1]} {g.tm_year} "
        f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"
    )


def resource(sim: Simulator, message: SimMessage) -> dict[str, Any]:
    """The Message resource as Twilio's API shows it at this simulated moment."""
    now = sim.clock.now()
    changed, status = message.status_at(now)
    sent = next((t for t, s in message.timeline if s == "sent" and t <= now), None)
    error_code = message.error_at(now)
    account = account_of(sim, message)
    uri = f"/{API_VERSION}/Accounts/{account}/Messages/{message.message_id}.json"
    return {
        "sid": message.message_id,
        "account_sid": account,
        "messaging_service_sid": None,
        "from": message.sender,
        "to": message.to,
        "body": message.body,
        "status": status,
        "direction": "outbound-api",
        "api_version": API_VERSION,
        "num_segments": "1",
        "num_media": "0",
        "price": None,
        "price_unit": "USD",
        "error_code": int(error_code) if error_code else None,
        "error_message": _ERROR_MESSAGES.get(error_code or "") if error_code else None,
        "date_created": rfc2822(message.created),
        "date_sent": rfc2822(sent) if sent is not None else None,
        "date_updated": rfc2822(changed),
        "uri": uri,
        "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
    }


async def create_message(request: Request, sim: Simulator) -> Response:
    await pause(sim)
    # Parsed here rather than with request.form(), which needs python-multipart.
    fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    if not fields.get("To"):
        return invalid(21604, "A 'To' phone number is required.")
    if not fields.get("From") and not fields.get("MessagingServiceSid"):
        return invalid(21603, "A 'From' phone number is required.")
    if not fields.get("Body"):
        return invalid(21602, "Message body is required.")
    callback = fields.get("StatusCallback")
    if callback and not callback.startswith(("http://", "https://")):
        return invalid(21609, "Invalid StatusCallback URL.")
    try:
        (message,) = sim.create(
            "twilio",
            1,
            to=[fields["To"]],
            sender=fields.get("From"),
            body=fields["Body"],
            callback_url=callback or None,
            account=request.path_params["account_sid"],
        )
    except ConfigError as exc:
        return invalid(21600, str(exc))
    request.state.pusher.add([message])
    return JSONResponse(resource(sim, message), status_code=201)


async def fetch_message(request: Request, sim: Simulator) -> Response:
    message = sim.messages.get(request.path_params["sid"])
    # Under another account (the main one's, for a subaccount's message) it does not exist.
    if (
        message is None
        or message.provider != "twilio"
        or account_of(sim, message) != request.path_params["account_sid"]
    ):
        await pause(sim)
        return error(404, "not_found", "", None)
    async with polling(sim, message):
        return JSONResponse(resource(sim, message))


def push_request(
    sim: Simulator, url: str, jobs: list[tuple[SimMessage, Push]]
) -> tuple[dict[str, str], bytes]:
    """A status callback, form-encoded and signed as Twilio signs (one message per request)."""
    ((message, push),) = jobs
    params = [
        ("SmsSid", message.message_id),
        ("SmsStatus", push.status),
        ("MessageStatus", push.status),
        ("To", message.to),
        ("MessageSid", message.message_id),
        ("AccountSid", account_of(sim, message)),
        ("From", message.sender),
        ("ApiVersion", API_VERSION),
    ]
    if push.status in ("failed", "undelivered") and message.error_code:
        params.append(("ErrorCode", message.error_code))
    if push.status in ("delivered", "undelivered"):
        done = time.strftime("%y%m%d%H%M", time.gmtime(status_time(message, push.status)))
        params.append(("RawDlrDoneDate", done))
    # Signed with the token of the account the message was sent from.
    accounts = sim.config.accounts
    token = _tokens(sim).get(account_of(sim, message), accounts.twilio_auth_token)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signature(token, url, params),
        "I-Twilio-Idempotency-Token": push.delivery_id,
        "User-Agent": "TwilioProxy/1.1",
    }
    return headers, urlencode(params).encode()


def routes() -> list[Route]:
    base = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages"
    return [
        Route(
            base + ".json",
            provider_endpoint("twilio", "send", create_message, authorized, error),
            methods=["POST"],
        ),
        Route(
            base + "/{sid}.json",
            provider_endpoint("twilio", "status", fetch_message, authorized, error),
            methods=["GET"],
        ),
    ]
