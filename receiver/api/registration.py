"""Reading POST /v1/messages' body against its declaration, receiver.schemas.Registration.

A body msgspec decodes as declared (types, limits, no unknown field) only has what the
declaration cannot say checked after (CHECKS: a provider this service has, a time that parses,
metadata's size, a Twilio account SID, a deadline). Any other body is read again as plain JSON
and checked field by field in the declared order, so that its error is the first wrong field's,
with the same code, message and details as ever: that path is for mistakes, and can be slow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import msgspec.inspect

from receiver import schemas
from receiver.api import realtime as realtime_api
from receiver.api.errors import ApiError
from receiver.api.parts import parts_field
from receiver.api.query import parse_time
from receiver.polling.twilio import ACCOUNT_SID
from receiver.schemas import MAX_BATCH, MAX_METADATA_BYTES, encode
from receiver.store import Registration

__all__ = ["CHECKS", "FIELDS", "decode_registrations", "unknown_field"]

# The declared fields, in the order they are checked.
_DECLARED = msgspec.structs.fields(schemas.Registration)
# Their names as the JSON has them, as the answer to an unknown one lists them.
FIELDS = sorted(field.encode_name for field in _DECLARED)

_ONE = msgspec.json.Decoder(schemas.Registration)
_BATCH = msgspec.json.Decoder(schemas.RegistrationBatch)
_LIST = msgspec.json.Decoder(list[schemas.Registration])
_BLANK = re.compile(rb"[ \t\r\n]*")


def unknown_field(name: str, allowed: list[str], **where: Any) -> ApiError:
    return ApiError(
        400,
        "invalid_message",
        f"unknown field {name!r}; the fields are {', '.join(allowed)}",
        **where,
        field=name,
        allowed=allowed,
    )


def decode_registrations(body: bytes, providers: list[str]) -> tuple[list[Registration], bool]:
    """The registrations of one message (a JSON object) or of a batch (`{"messages": [...]}`
    or a JSON array), and whether it was one; ApiError for the first thing wrong."""
    try:
        items, single = _decode(body)
        typed = True
    except msgspec.MsgspecError:
        items, single = _parse(body)
        typed = False
    return [_registration(item, i, providers, typed) for i, item in enumerate(items)], single


def _decode(body: bytes) -> tuple[list[Any], bool]:
    """The declared Structs, when the body is as declared; MsgspecError otherwise."""
    blank = _BLANK.match(body)
    start = blank.end() if blank else 0
    if body[start : start + 1] == b"[":
        items = _LIST.decode(body)
        if not 1 <= len(items) <= MAX_BATCH:
            raise msgspec.ValidationError("an empty list, or too many messages")
        return items, False
    try:
        return _BATCH.decode(body).messages, False
    except msgspec.ValidationError:
        return [_ONE.decode(body)], True


def _parse(body: bytes) -> tuple[list[Any], bool]:
    """The body's messages as plain JSON, after the checks of the body as a whole."""
    try:
        payload = json.loads(body)
        # Python parses more than it can serve back (an answer would fail on every later
        # read): NaN, Infinity, 1e400 and lone surrogates are refused here, as I-JSON does.
        json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, RecursionError):  # RecursionError: nesting too deep to parse
        raise ApiError(400, "invalid_json", "the body must be JSON") from None
    single = isinstance(payload, dict) and "messages" not in payload
    if isinstance(payload, dict) and not single and set(payload) != {"messages"}:
        raise unknown_field(sorted(set(payload) - {"messages"})[0], ["messages"])
    items = (
        [payload] if single else (payload.get("messages") if isinstance(payload, dict) else payload)
    )
    if not isinstance(items, list) or not items:
        raise ApiError(400, "invalid_message", "send a message object or a non-empty list")
    if len(items) > MAX_BATCH:
        raise ApiError(
            400, "batch_too_large", f"at most {MAX_BATCH} messages per request", limit=MAX_BATCH
        )
    return items, single


def _registration(item: Any, index: int, providers: list[str], typed: bool) -> Registration:
    if not typed:
        if not isinstance(item, dict):
            raise ApiError(
                400, "invalid_message", "each message must be a JSON object", index=index
            )
        unknown = sorted(set(item) - set(FIELDS))
        if unknown:
            raise unknown_field(unknown[0], FIELDS, index=index)
    found: dict[str, Any] = {}
    where = _Where(index, providers, found, typed)
    for attr, name, check in _ORDER:
        where.attr, where.name = attr, name
        check(getattr(item, attr) if typed else item.get(name), where)
    return Registration(**found)


# -- what the declaration cannot say -----------------------------------------------------------


class _Where:
    """A field being checked: the message's index, the field's names, the service's providers,
    what the fields before it gave (the store Registration's arguments), and whether the value
    was decoded as declared (else it is plain JSON, its type and limits not yet checked)."""

    __slots__ = ("attr", "found", "index", "name", "providers", "typed")

    def __init__(
        self, index: int, providers: list[str], found: dict[str, Any], typed: bool
    ) -> None:
        self.index, self.attr, self.name = index, "", ""
        self.providers, self.found, self.typed = providers, found, typed

    def invalid(self, message: str) -> ApiError:
        return ApiError(400, "invalid_message", message, index=self.index, field=self.name)

    def text(self, value: Any) -> str | None:
        """A declared text field's value, stripped (schemas._text: limits, not only spaces)."""
        if value is None:
            return None
        if not self.typed:
            try:
                msgspec.convert(value, _TYPES[self.attr])
            except msgspec.ValidationError:
                raise self._not_text() from None
        text: str = value.strip()
        if not text:
            raise self._not_text()
        return text

    def _not_text(self) -> ApiError:
        limit = _text_limit(_TYPES[self.attr])
        return self.invalid(f"{self.name} must be a non-empty string of at most {limit} characters")


_TYPES = {field.name: field.type for field in _DECLARED}
# A field's check: raise where.invalid(...), or set the store Registration's arguments.
Check = Callable[[Any, _Where], None]


def _text_limit(declared: Any) -> int | None:
    """The max_length of the text a declared type holds."""

    def find(kind: Any) -> int | None:
        if isinstance(kind, msgspec.inspect.StrType):
            return kind.max_length
        if isinstance(kind, msgspec.inspect.Metadata):
            return find(kind.type)
        if isinstance(kind, msgspec.inspect.UnionType):
            return next((n for t in kind.types if (n := find(t)) is not None), None)
        return None

    return find(msgspec.inspect.type_info(declared))


def _text(store_name: str, required: bool = False) -> Check:
    def check(value: Any, where: _Where) -> None:
        text = where.text(value)
        if text is None and required:
            raise where.invalid(f"{where.name} is required")
        where.found[store_name] = text

    return check


def _provider(value: Any, where: _Where) -> None:
    if not isinstance(value, str) or value not in where.providers:
        raise where.invalid(f"provider must be one of {sorted(where.providers)}")
    where.found["provider"] = value


def _sent_at(value: Any, where: _Where) -> None:
    text = where.text(value)
    try:
        where.found["sent_at"] = parse_time(text, "sent_at") if text else None
    except ApiError as exc:
        raise where.invalid(exc.message) from None


def _metadata(value: Any, where: _Where) -> None:
    if value is not None and (
        not isinstance(value, dict) or _metadata_bytes(value) > MAX_METADATA_BYTES
    ):
        raise where.invalid(f"metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes")
    where.found["metadata"] = value


def _metadata_bytes(value: dict[str, Any]) -> int:
    """The metadata's size as the limit has always counted it: json.dumps' (ASCII escapes, a
    space after each separator). That is at most 3 times msgspec's compact UTF-8 (a character
    of 2 to 4 bytes escapes to 6 or 12, a separator gains a space), so a small object is known
    to be within the limit without the slower json.dumps."""
    compact = len(encode(value))
    if 3 * compact <= MAX_METADATA_BYTES:
        return compact
    return len(json.dumps(value).encode())


def _parts(value: Any, where: _Where) -> None:
    """A multipart message's parts (receiver/api/parts.py checks them, typed or not)."""
    where.found["parts"] = parts_field({"parts": value}, where.index, where.found["message_id"])


def _account(value: Any, where: _Where) -> None:
    """For Twilio an account SID (polling asks under it); for the others, declared text (their
    callbacks' signed-URL label)."""
    if where.found["provider"] != "twilio":
        where.found["account"] = where.text(value)
        return
    if value is not None and (not isinstance(value, str) or not ACCOUNT_SID.fullmatch(value)):
        raise where.invalid(
            "account must be the Twilio account SID the message was sent from: AC and 32 hex digits"
        )
    where.found["account"] = value


def _deadline(value: Any, where: _Where) -> None:
    if value is not None:  # deadline or deadline_after
        where.found.update(realtime_api.deadline_field({"deadline": value}, where.index))


# Each declared field's check, by its name in schemas.Registration: what else it must be, and
# the store Registration's arguments it gives (into where.found).
CHECKS: Mapping[str, Check] = {
    "provider": _provider,
    "message_id": _text("message_id", required=True),
    "sent_at": _sent_at,
    "metadata": _metadata,
    "parts": _parts,
    "to": _text("to_number"),
    "from_": _text("from_number"),
    "account": _account,
    "deadline": _deadline,
}
assert set(CHECKS) == {field.name for field in _DECLARED}, "a declared field without its check"
_ORDER = [(field.name, field.encode_name, CHECKS[field.name]) for field in _DECLARED]
