"""The API's shapes, each declared once (msgspec Structs): what a request may hold, and what an
answer holds. From these come the decoding of requests with their checks (receiver/api/),
the encoding of answers, the schemas of GET /openapi.json (receiver/api/openapi.py) and the
field lists of docs/api.md (tests/test_schemas.py holds the page to them).

msgspec was measured against pydantic and the hand-written code before (bench/schemas.py):
it decodes a 1,000-message registration batch and encodes a 1,000-message page several
times faster than either. A field's description is its `Meta(description=...)`; a request
field's sentence when it is wrong is `Meta(extra={"invalid": ...})`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

from receiver.engine import Outcome, Status

__all__ = [
    "ChangeData",
    "Error",
    "Event",
    "Message",
    "MessageEvents",
    "MessagePage",
    "Push",
    "PushDetail",
    "PushPage",
    "PushPayload",
    "Recovered",
    "Registered",
    "RegisteredBatch",
    "Registration",
    "RegistrationConflict",
    "Stats",
    "encode",
    "openapi_schemas",
]

Schema = dict[str, Any]

# One encoder for every answer: compact UTF-8 JSON, as the service has always written it.
encode = msgspec.json.Encoder().encode


class Error(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Every failure: a stable `error_code`, a message for people, details."""

    error_code: Annotated[str, Meta(pattern="^[a-z_]+$")]
    message: Annotated[str, Meta(min_length=1)]
    # Where there is more to say: the offending `parameter`, `field` or `index`, the `allowed`
    # values, a `limit`. Left out when there is nothing.
    details: dict[str, Any] = msgspec.field(default_factory=dict)


# -- POST /v1/messages ------------------------------------------------------------------------

MAX_BATCH = 1000
MAX_ID_LENGTH = 256
MAX_NUMBER_LENGTH = 64
MAX_METADATA_BYTES = 4096
# A non-Twilio account is what its callbacks record: a signed URL's label (1-64 characters).
MAX_ACCOUNT_LENGTH = 64
MAX_SENT_AT_LENGTH = 64
# A concatenated SMS has at most 255 segments (its UDH counts them in one byte); a part's id is
# a provider's message id.
MAX_PARTS = 255
MAX_PART_ID_LENGTH = MAX_ID_LENGTH
# The longest deadline a registration may give as a duration.
MAX_DEADLINE = 30 * 86400.0


def _text(limit: int) -> Meta:
    """Text with something in it: at most `limit` characters, not only spaces (kept stripped).
    A wrong one is refused as "<field> must be a non-empty string of at most <limit>
    characters". (The pattern is the document's: decoding checks it by stripping, which costs
    less than a regular expression per field.)"""
    return Meta(min_length=1, max_length=limit, extra_json_schema={"pattern": r"\S"})


Id = Annotated[str, _text(MAX_ID_LENGTH)]
Number = Annotated[str, _text(MAX_NUMBER_LENGTH)]
Account = Annotated[str, _text(MAX_ACCOUNT_LENGTH)]
SentAt = Annotated[str, _text(MAX_SENT_AT_LENGTH)]


# The fields are checked in this order, and the first wrong one is the answer's error (with the
# message's `index` in a batch, and the `field`). To add a field: one line here, with its type,
# limits and description (OpenAPI follows; tests/test_schemas.py asks for it in docs/api.md),
# then one entry in receiver/api/registration.py's CHECKS: what else it must be, and where it
# goes in the store's Registration.
class Registration(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One message the app sent."""

    provider: Annotated[str, Meta(description="a provider's name")]
    message_id: Id
    sent_at: Annotated[
        SentAt | None,
        Meta(
            description="when the app sent it; one older than RECEIVER_POLL_MAX_AGE is kept, "
            "but the message's maximum age counts from its registration instead, and the "
            "answer's `warnings` say so",
            extra_json_schema={"format": "date-time"},
        ),
    ] = None
    metadata: Annotated[
        dict[str, Any] | None,
        Meta(
            description=f"at most {MAX_METADATA_BYTES} bytes as JSON",
            extra={"invalid": f"must be a JSON object of at most {MAX_METADATA_BYTES} bytes"},
        ),
    ] = None
    parts: (
        Annotated[
            list[Annotated[str, _text(MAX_PART_ID_LENGTH)]],
            Meta(
                min_length=1,
                max_length=MAX_PARTS,
                extra_json_schema={"uniqueItems": True},
                description="a multipart message: the provider's ids of its segments, in "
                "order; message_id is the app's id for the whole, or the first segment's (no "
                "other segment's); each part's DLRs are folded into the message's status",
            ),
        ]
        | None
    ) = None
    to: Number | None = None
    from_: Number | None = msgspec.field(default=None, name="from")
    account: Annotated[
        Account | None,
        Meta(
            description="the account the message was sent from: for twilio the account SID "
            "(AC and 32 hex digits; a subaccount's, so polling asks under it), for the others "
            f"at most {MAX_ACCOUNT_LENGTH} characters; fills or corrects the stored one",
        ),
    ] = None
    deadline: Annotated[
        str | float | None,
        Meta(
            description="when it must be delivered by: a duration after sent_at (after the "
            "registration when there is none), as seconds or text such as 30s, or an ISO 8601 "
            "time; past it undelivered, the message shows deadline_missed and a "
            "message.deadline_missed change goes out, once",
        ),
    ] = None


class RegistrationBatch(msgspec.Struct, forbid_unknown_fields=True):
    """A batch of messages the app sent (or the list alone)."""

    messages: Annotated[list[Registration], Meta(min_length=1, max_length=MAX_BATCH)]


# -- the answers --------------------------------------------------------------------------------
# The store gives them as dicts (store/answers.py), encoded as they are (the fastest way); these
# declare them for the document and the docs, and tests/test_schemas.py decodes real answers
# against them (strict: every field, its type, nothing else).

Count = Annotated[int, Meta(ge=0)]
Time = Annotated[str, Meta(description="ISO 8601 UTC, like 2026-11-25T10:00:00.000Z")]
Cursor = Annotated[str | None, Meta(description="pass back as `cursor`")]
FinalVia = Literal["callback", "poll", "timeout"]


class Poll(msgspec.Struct, forbid_unknown_fields=True):
    """Polling for a late DLR: requests made about this message, the last one's time and
    result, and when the next is due (null once final)."""

    attempts: Count
    last_polled_at: str | None
    last_result: str | None
    next_poll_at: str | None


class Parts(msgspec.Struct, forbid_unknown_fields=True):
    """A multipart message's parts by status; `pending` is every part neither delivered nor
    failed."""

    total: Count
    delivered: Count
    failed: Count
    pending: Count


class Message(msgspec.Struct, forbid_unknown_fields=True):
    """One message: its status and what is known of it. The fields an export row has, in the
    same order, and its polling."""

    provider: str
    message_id: str
    status: Status
    provider_status: str | None
    error_code: str | None
    final: bool
    final_via: FinalVia | None
    to: str | None
    from_: str | None = msgspec.field(name="from")
    account: str | None
    registered: bool
    metadata: dict[str, Any] | None
    created_at: Time
    updated_at: Time
    sent_at: str | None
    final_at: str | None
    final_reason: Annotated[
        str | None, Meta(description="Why the receiver gave the message up as `unconfirmed`.")
    ]
    poll: Poll
    deadline: Annotated[
        str | None, Meta(description="The registration's deadline for delivery (null: none).")
    ]
    deadline_missed: Annotated[
        bool, Meta(description="Not delivered by its deadline (decided once, at the deadline).")
    ]
    parts: (
        Annotated[
            Parts,
            Meta(description="A multipart message only: its parts (segments) by status."),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class Event(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One status report about a message, and what it did."""

    id: int
    source: Literal["callback", "poll", "timeout", "repair"]
    provider_status: str
    status: Status | None
    previous_status: Status | None = None
    outcome: Outcome
    error_code: str | None = None
    event_time: str | None = None
    received_at: Time
    resolved_at: str | None = None
    dedupe_key: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: str | None = None
    part: (
        Annotated[
            str,
            Meta(
                description="A multipart message's history only: the event was about this part "
                "(its provider id); `status`, `previous_status` and `outcome` are the part's. The "
                "message's own events (the changes its parts made) have none.",
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class MessageEvents(msgspec.Struct, forbid_unknown_fields=True):
    """A message with its whole history, oldest event first."""

    message: Message
    events: list[Event]


class MessagePage(msgspec.Struct, forbid_unknown_fields=True):
    """One page of messages, newest first."""

    messages: list[Message]
    next_cursor: Cursor


ByStatus = msgspec.defstruct(
    "ByStatus",
    [(status.value, Count) for status in Status],
    forbid_unknown_fields=True,
)
ByStatus.__doc__ = "Messages per status, every status named."


class TimeToFinal(msgspec.Struct, forbid_unknown_fields=True):
    """Seconds from sent to final, of the messages that have both times."""

    count: Count
    median: float | None
    p95: float | None


class Stats(msgspec.Struct, forbid_unknown_fields=True):
    """Counts, delivery rate and time to final, of a window (and provider)."""

    total: Count
    by_status: ByStatus  # type: ignore[valid-type]
    final: Count
    delivered: Count
    delivery_rate: Annotated[float, Meta(ge=0, le=1)] | None
    time_to_final_seconds: TimeToFinal


class Registered(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """What registering one message did."""

    provider: str
    message_id: str
    created: bool
    status: Status
    pending_applied: Count
    warnings: Annotated[
        list[Annotated[str, Meta(min_length=1)]],
        Meta(
            min_length=1,
            description="present only when there is something to say: sentences about this "
            "registration, such as a sent_at already older than RECEIVER_POLL_MAX_AGE",
        ),
    ] = msgspec.field(default_factory=list)


# What the store answers when a registration contradicts what it keeps (a 409 for one message).
ConflictCode = Literal[
    "parts_differ",
    "message_not_multipart",
    "part_of_another_message",
    "part_is_a_message",
    "message_is_a_part",  # a message of one part registered under a part's id
]
CONFLICTS: tuple[str, ...] = get_args(ConflictCode)


class RegistrationConflict(msgspec.Struct, forbid_unknown_fields=True):
    """A registration of a batch that contradicts what is kept (a multipart message's parts);
    nothing of it was written."""

    provider: str
    message_id: str
    created: Literal[False]
    error_code: ConflictCode
    message: Annotated[str, Meta(min_length=1)]


class RegisteredBatch(msgspec.Struct, forbid_unknown_fields=True):
    """What registering a batch did, message by message: each a Registered, or a
    RegistrationConflict (the document says so; msgspec declares one of them)."""

    messages: list[Registered]
    created: Count


# -- a change: the stream's data, and a push ---------------------------------------------------


class ChangeData(msgspec.Struct, forbid_unknown_fields=True):
    """One change of one message, as apps receive it: a push's `data` and the stream's `data:`
    (receiver/changes.py builds it). `status` is the status the change left the message in;
    `final_via` and `final_at` only go with a final one; `previous_status` is null for a
    message a callback created."""

    provider: str
    message_id: str
    status: Status
    previous_status: Status | None
    provider_status: str | None
    error_code: str | None
    final: bool
    final_via: FinalVia | None
    to: str | None
    account: str | None
    metadata: dict[str, Any] | None
    sent_at: str | None
    final_at: str | None


PushType = Literal["message.status_changed", "message.deadline_missed"]


class PushPayload(msgspec.Struct, forbid_unknown_fields=True):
    """What a push to the app says (RECEIVER_PUSH_URL): a Standard Webhooks payload. Ignore a
    `type` you do not know, and answer it 2xx."""

    type: PushType
    timestamp: Annotated[str, Meta(description="when the change was recorded, ISO 8601 UTC")]
    data: ChangeData


# -- the push outbox (GET /v1/pushes, ...) -----------------------------------------------------

PushStatus = Literal["pending", "delivered", "failed"]


class Push(msgspec.Struct, forbid_unknown_fields=True):
    """One push owed to the app, and how sending it went."""

    id: Annotated[str, Meta(description="the webhook-id, the same at every attempt")]
    type: Annotated[str, Meta(description="message.status_changed, ...")]
    endpoint: Annotated[str, Meta(description="the URL it is pushed to")]
    provider: str | None
    message_id: str | None
    status: PushStatus
    attempt_count: Count
    created_at: Time
    next_attempt_at: Annotated[str | None, Meta(description="when it is tried next (pending)")]
    last_attempt_at: str | None
    last_result: Annotated[
        str | None,
        Meta(description="http_<status>, timeout, network_error or endpoint_disabled"),
    ]
    delivered_at: str | None


class PushAttempt(msgspec.Struct, forbid_unknown_fields=True):
    """One attempt at a push."""

    attempted_at: Time
    http_status: int | None
    error: Literal["timeout", "network_error"] | None
    duration_ms: Count
    response: Annotated[str | None, Meta(description="the first 2 KB of the answer's body")]


class PushDetail(Push, forbid_unknown_fields=True):
    """A push with the body sent and every attempt at it, oldest first."""

    payload: Annotated[str, Meta(description="the JSON body sent (the PushPayload schema)")]
    attempts: list[PushAttempt]


class PushPage(msgspec.Struct, forbid_unknown_fields=True):
    """One page of pushes, newest first."""

    pushes: list[Push]
    next_cursor: Cursor


class Recovered(msgspec.Struct, forbid_unknown_fields=True):
    """How many failed pushes were queued again."""

    recovered: Count


def openapi_schemas(*types: Any) -> dict[str, Schema]:
    """The OpenAPI components of these declarations (and of those they hold), by name."""
    _, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    for schema in components.values():
        # The title repeats the name; "default" describes a request, never an answer.
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("default", None)
            prop.pop("title", None)
    return components
