"""Twilio: status callbacks signed with X-Twilio-Signature (form or JSON with bodySHA256)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

from receiver.engine import Status, format_time
from receiver.env import SettingsError, read_str
from receiver.providers import fields
from receiver.providers.base import (
    CallbackRejected,
    InboundRequest,
    ProviderSettings,
    StatusEvent,
    poll_env_vars,
)
from receiver.providers.form import parse_form
from receiver.providers.twilio_signature import body_hash_param, validate

# Twilio's MessageStatus values and what they mean here (README: "Twilio").
STATUS_MAP: Final[Mapping[str, Status]] = MappingProxyType(
    {
        "accepted": Status.QUEUED,
        "scheduled": Status.QUEUED,
        "queued": Status.QUEUED,
        "sending": Status.SENDING,
        "sent": Status.SENT,
        "delivered": Status.DELIVERED,
        "read": Status.DELIVERED,
        "undelivered": Status.UNDELIVERED,
        "failed": Status.FAILED,
        "canceled": Status.CANCELED,
    }
)

# A status callback has about 15 fields; an unauthenticated body with thousands would cost
# parsing and signing time on the event loop before being refused.
MAX_FIELDS = 200

# Request headers kept in the event history (never the signature's secret inputs).
KEPT_HEADERS: Final = ("content-type", "user-agent", "i-twilio-idempotency-token")


def _dlr_done_date(raw: str | None) -> str | None:
    """RawDlrDoneDate (YYMMDDhhmm, UTC) as the receiver keeps times, or None."""
    moment = fields.smpp_time(raw) if raw and len(raw) == 10 else None
    return format_time(moment) if moment else None


def parse_accounts(raw: str) -> tuple[tuple[str, str], ...]:
    """TWILIO_ACCOUNTS: comma-separated AccountSid:auth_token pairs."""
    pairs: list[tuple[str, str]] = []
    for item in raw.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        sid, sep, token = item.partition(":")
        sid, token = sid.strip(), token.strip()
        if not sep or not sid.startswith("AC") or not token:
            raise SettingsError(
                "TWILIO_ACCOUNTS must be comma-separated AccountSid:auth_token pairs "
                f"(AC...:token); got an item starting {item[:6]!r}"
            )
        pairs.append((sid, token))
    return tuple(pairs)


class TwilioProvider:
    name: ClassVar[str] = "twilio"
    status_map: ClassVar[Mapping[str, Status]] = STATUS_MAP
    callback_path: ClassVar[str] = "sms-status"
    env_vars: ClassVar[tuple[str, ...]] = (
        "TWILIO_AUTH_TOKEN",
        "TWILIO_AUTH_TOKEN_SECONDARY",
        "TWILIO_ACCOUNTS",
        "TWILIO_API_BASE",
        "TWILIO_ACCOUNT_SID",
        *poll_env_vars("TWILIO"),
    )
    signed_url: ClassVar[bool] = False

    def __init__(self, settings: ProviderSettings) -> None:
        env = settings.provider_env
        self.auth_token = read_str(env, "TWILIO_AUTH_TOKEN")
        self.auth_token_secondary = read_str(env, "TWILIO_AUTH_TOKEN_SECONDARY")
        self.accounts = parse_accounts(env.get("TWILIO_ACCOUNTS", ""))
        self._tokens_by_account: dict[str | None, list[str]] = {}

    def tokens_for(self, account_sid: str | None) -> list[str]:
        """Auth tokens to try for a callback from `account_sid`, most likely first.

        A subaccount listed in TWILIO_ACCOUNTS uses its own token(s) (list a SID twice to rotate
        its token); any other account uses TWILIO_AUTH_TOKEN. The secondary token is accepted
        for every account while a rotation is under way.
        """
        tokens = [tok for sid, tok in self.accounts if sid == account_sid]
        if not tokens and self.auth_token:
            tokens.append(self.auth_token)
        if self.auth_token_secondary:
            tokens.append(self.auth_token_secondary)
        return tokens

    def _tokens(self, account: str | None) -> list[str]:
        # Memoised: the hot path should not rebuild lists.
        tokens = self._tokens_by_account.get(account)
        if tokens is None:
            tokens = self.tokens_for(account)
            if len(self._tokens_by_account) < 1024:  # AccountSid is attacker-chosen: cap it
                self._tokens_by_account[account] = tokens
        return tokens

    @property
    def configured(self) -> bool:
        return bool(self.auth_token or self.accounts)

    @property
    def message_providers(self) -> tuple[str, ...]:
        return (self.name,)

    def read_callback(self, request: InboundRequest) -> list[StatusEvent]:
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise CallbackRejected(403, "signature_missing", "X-Twilio-Signature header missing")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackRejected(403, "signature_invalid", "signature check failed") from None

        # The account is read before the signature is checked only to choose which token to
        # try; the signature then proves it.
        json_variant = body_hash_param(request.url) is not None
        params: dict[str, list[str]] | None = None
        fields: dict[str, str] | None
        if json_variant:
            fields = _json_fields(text)
        else:
            try:
                params = parse_form(text, MAX_FIELDS)
            except ValueError:  # more fields than any status callback has
                raise CallbackRejected(
                    403, "signature_invalid", f"more than {MAX_FIELDS} form fields"
                ) from None
            fields = {name: values[0] for name, values in params.items()}
        account = fields.get("AccountSid") if fields is not None else None

        tokens = self._tokens(account)
        if not tokens:
            raise CallbackRejected(
                403, "provider_not_configured", "no Twilio auth token is configured"
            )
        body = request.body if json_variant else None
        if not validate(request.url, params, body, signature, tokens):
            raise CallbackRejected(403, "signature_invalid", "signature check failed")
        if fields is None:
            raise CallbackRejected(400, "invalid_body", "body is not a JSON object")

        message_id = fields.get("MessageSid") or fields.get("SmsSid")
        raw_status = fields.get("MessageStatus") or fields.get("SmsStatus")
        if not message_id or not raw_status:
            raise CallbackRejected(
                400, "missing_field", "a Twilio status callback needs MessageSid and MessageStatus"
            )
        raw_status = raw_status.strip().lower()
        return [
            StatusEvent(
                provider=self.name,
                message_id=message_id,
                provider_status=raw_status,
                status=STATUS_MAP.get(raw_status),
                account=account,
                to_number=fields.get("To") or None,
                from_number=fields.get("From") or None,
                error_code=fields.get("ErrorCode") or None,
                event_time=_dlr_done_date(fields.get("RawDlrDoneDate")),
                dedupe_key=request.headers.get("i-twilio-idempotency-token"),
                body=text,
                headers={h: v for h in KEPT_HEADERS if (v := request.headers.get(h)) is not None},
            )
        ]


def _json_fields(text: str) -> dict[str, str] | None:
    """Top-level scalar fields of a JSON object body, as strings; None if it is not one."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # parsed before the signature check: expect anything
        return None
    if not isinstance(data, dict):
        return None
    fields = {
        str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float) and v != ""
    }
    try:
        # JSON escapes can spell lone surrogates ("\ud800"), which no database can store.
        for key, value in fields.items():
            key.encode("utf-8")
            value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return fields
