"""The status model: canonical statuses, their ranks and the transition rule.

Pure functions with no I/O, so the rules are tested with plain calls and shared by every store.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Status(StrEnum):
    REGISTERED = "registered"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    UNCONFIRMED = "unconfirmed"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    CANCELED = "canceled"
    DELIVERED = "delivered"


class Outcome(StrEnum):
    """What an event did to its message; stored with every event."""

    APPLIED = "applied"  # moved the message to a higher-ranked status
    DUPLICATE = "duplicate"  # the message already has this status
    REGRESSION = "regression"  # lower rank than the current status: dropped
    CONFLICT = "conflict"  # another status of the same rank: dropped, first one wins
    PENDING_UNKNOWN = "pending_unknown"  # message not known yet: held until it is registered
    UNMAPPED = "unmapped"  # provider status with no canonical meaning: kept raw, not applied


RANK: Final = MappingProxyType(
    {
        Status.REGISTERED: 0,
        Status.QUEUED: 1,
        Status.SENDING: 2,
        Status.SENT: 3,
        Status.UNCONFIRMED: 4,
        Status.UNDELIVERED: 5,
        Status.FAILED: 5,
        Status.EXPIRED: 5,
        Status.REJECTED: 5,
        Status.CANCELED: 5,
        Status.DELIVERED: 6,
    }
)

# Nobody will tell us more once a message reaches one of these (polling stops), though a later
# report of higher rank still moves it on: positive evidence wins.
FINAL_RANK: Final = RANK[Status.UNCONFIRMED]
FINAL_STATUSES: Final = frozenset(s for s, r in RANK.items() if r >= FINAL_RANK)

# The statuses that count as "reached the handset", for delivery rates.
DELIVERED_STATUSES: Final = frozenset({Status.DELIVERED})


def parse_status(value: str) -> Status | None:
    """The canonical status named by `value` (case-insensitive), or None."""
    try:
        return Status(value.strip().lower())
    except ValueError:
        return None


def is_final(status: Status | str) -> bool:
    return RANK[Status(status)] >= FINAL_RANK


def decide(current: Status | str | None, new: Status | str | None) -> Outcome:
    """The outcome of an event reporting `new` for a message whose status is `current`.

    `current` is None when the message is not known; `new` is None when the provider's status
    has no canonical meaning. The rule is monotonic in rank, so any order of the same events
    ends in the same status: the highest-ranked one, and the first to arrive among equals.
    """
    if new is None:
        return Outcome.UNMAPPED
    new = Status(new)
    if current is None:
        return Outcome.APPLIED
    current = Status(current)
    if new == current:
        return Outcome.DUPLICATE
    if RANK[new] > RANK[current]:
        return Outcome.APPLIED
    if RANK[new] < RANK[current]:
        return Outcome.REGRESSION
    return Outcome.CONFLICT
