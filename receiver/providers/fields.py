"""Reading provider bodies: JSON or form records, tolerant times, bounded text.

Only authenticated bodies get here, but a provider's gateway can still send anything, so every
reader answers CallbackRejected(400) with a reason rather than raising something else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from receiver.engine import format_time
from receiver.providers.base import CallbackRejected

MAX_TEXT = 256  # ids, statuses, numbers, codes: anything longer is not a real value
MAX_FORM_FIELDS = 200


def records(body: bytes, content_type: str | None, *, max_records: int) -> list[dict[str, Any]]:
    """The body as a list of records: a JSON object, a JSON array of objects, or a form."""
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark is not content
    except UnicodeDecodeError:
        raise CallbackRejected(400, "invalid_body", "the body is not UTF-8") from None
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    # A body that starts like JSON is read as JSON whatever its label: `curl -d` and many
    # HTTP clients label every body a form, and no form starts with "{" or "[".
    looks_json = text.lstrip()[:1] in ("{", "[")
    if not looks_json and not media_type.endswith("json"):
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            raise CallbackRejected(400, "invalid_body", "too many form fields") from None
        form: dict[str, Any] = {}
        for key, value in pairs:
            form.setdefault(key, value)  # a repeated key: the first value counts
        if not form:
            raise CallbackRejected(400, "invalid_body", "the body is empty")
        return [form]
    try:
        data = loads(text)
    except (ValueError, RecursionError):
        raise CallbackRejected(400, "invalid_body", "the body is not valid JSON") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise CallbackRejected(400, "invalid_body", "the body is an empty list")
    if len(items) > max_records:
        raise CallbackRejected(
            400, "too_many_records", f"at most {max_records} reports in one request"
        )
    if not all(isinstance(item, dict) for item in items):
        raise CallbackRejected(400, "invalid_body", "expected a JSON object or a list of objects")
    return items


def record_body(body: bytes, records: list[dict[str, Any]], index: int) -> str:
    """What to keep as one record's raw body: the body itself, or the record of a batch."""
    if len(records) == 1:
        return body.decode("utf-8")
    return json_text(records[index])


def json_text(value: Any) -> str:
    """Compact JSON, for keeping one part of a batch as its own raw body."""
    # ASCII escapes: a lone surrogate ("\ud800") in an unused field stays storable text.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def text(
    record: Mapping[str, Any], *names: str, required: bool = False, what: str = ""
) -> str | None:
    """The first of `names` present in `record` with a usable value, as bounded clean text.

    Whole numbers are accepted as text (some gateways send "000" as 0). A required field (an
    id, a status) that is unusable -- another type, too long, control characters, unpaired
    surrogates -- is CallbackRejected(400); an unusable optional one is left out, so one odd
    cosmetic field does not lose a whole report (the raw body keeps it).
    """
    for name in names:
        value = record.get(name)
        if value is None or value == "":
            continue
        cleaned, problem = _clean(value)
        if cleaned is not None:
            return cleaned
        if required and problem:
            raise CallbackRejected(400, "invalid_field", f"{name} {problem}")
    if required:
        raise CallbackRejected(
            400, "missing_field", f"{what or names[0]} is missing (one of: {', '.join(names)})"
        )
    return None


def _clean(value: Any) -> tuple[str | None, str | None]:
    """(the value as clean text, None) or (None, what is wrong with it; None if just blank)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, "must be text"  # floats too: 1e16 would become the id "1e+16"
    text = " ".join(str(value).split())  # newlines, tabs and odd spaces become one space
    if not text:
        return None, None
    if len(text) > MAX_TEXT:
        return None, f"is longer than {MAX_TEXT} characters"
    if not text.isprintable():
        return None, "holds control characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # "\ud800" in JSON: no database can store it
        return None, "is not valid text"
    return text, None


def loads(text: str) -> Any:
    """json.loads, refusing NaN and Infinity (not JSON, and no status report has them)."""
    return json.loads(text, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# SMPP DLR "done date", by length: strptime alone would read 10 digits as hhmmss too.
_SMPP_FORMATS = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}


def smpp_time(value: str) -> datetime | None:
    """SMPP's DLR "done date", YYMMDDhhmm or YYMMDDhhmmss, read as UTC; None if not one."""
    fmt = _SMPP_FORMATS.get(len(value))
    if fmt is None or not (value.isascii() and value.isdigit()):  # "²" is a digit to isdigit()
        return None
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    except ValueError:
        return None


def iso_time(value: str | None) -> str | None:
    """A provider's timestamp as the receiver keeps times (engine.format_time), or None.

    Accepts ISO 8601 with Z or an offset, "YYYY-MM-DD hh:mm:ss" (read as UTC), SMPP's done
    date, and Unix seconds. A time we cannot read is left out, not guessed; the raw body
    keeps it.
    """
    moment = _parse_time(value) if value and value.isascii() else None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return format_time(moment)
    except OverflowError:  # year 1 or 9999 with an offset
        return None


def _parse_time(value: str) -> datetime | None:
    if value.isdigit():  # fromisoformat would read bare digits as an ISO basic date
        if len(value) == 10 and value[0] == "1":
            # Unix seconds (2001-2033); an SMPP date starting with 1 would be from the 2010s.
            return datetime.fromtimestamp(int(value), UTC)
        return smpp_time(value)
    try:  # ISO 8601, and also "YYYY-MM-DD hh:mm[:ss]" (Python 3.11 reads both)
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
