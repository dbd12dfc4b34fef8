"""Simulated messages: each one's status timeline, its final status and its callback plan.

Everything is decided when a message is created, from the simulator's seeded random.Random, so a
run with the same seed and the same requests makes the same messages and the same pushes.
Times are simulated unix seconds (see Clock).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

PROVIDERS = ("twilio", "telecom23", "mesms", "standard")
# Providers with an API of their own (send and status endpoints); "standard" sources only push.
API_PROVIDERS = ("twilio", "telecom23", "mesms")

PushKind = Literal["normal", "duplicate", "late"]


@dataclass(frozen=True)
class Flavor:
    """How one provider's statuses move: initial -> [intermediate] -> final."""

    initial: str
    intermediate: str | None
    delivered: str
    failures: tuple[str, ...]
    # Finals reached straight from the initial status (refused before reaching the carrier).
    direct: frozenset[str]
    # Raw status -> canonical receiver status; also the set of statuses the provider reports.
    canonical: Mapping[str, str]

    def final_candidates(self) -> tuple[str, ...]:
        return (self.delivered, *self.failures)


_CANONICAL_STATUSES = (
    *("queued", "sending", "sent", "unconfirmed", "undelivered", "failed", "expired"),
    *("rejected", "canceled", "delivered"),
)

FLAVORS: Mapping[str, Flavor] = MappingProxyType(
    {
        "twilio": Flavor(
            initial="queued",
            intermediate="sent",
            delivered="delivered",
            failures=("undelivered", "failed"),
            direct=frozenset({"failed", "canceled"}),
            canonical=MappingProxyType(
                {
                    "accepted": "queued",
                    "scheduled": "queued",
                    "queued": "queued",
                    "sending": "sending",
                    "sent": "sent",
                    "delivered": "delivered",
                    "read": "delivered",
                    "undelivered": "undelivered",
                    "failed": "failed",
                    "canceled": "canceled",
                }
            ),
        ),
        "telecom23": Flavor(
            initial="ACCEPTD",
            intermediate="ENROUTE",
            delivered="DELIVRD",
            failures=("UNDELIV", "REJECTD", "EXPIRED", "DELETED", "UNKNOWN"),
            direct=frozenset({"REJECTD"}),
            canonical=MappingProxyType(
                {
                    "ACCEPTD": "queued",
                    "pending": "queued",
                    "ENROUTE": "sent",
                    "sent": "sent",
                    "DELIVRD": "delivered",
                    "UNDELIV": "undelivered",
                    "REJECTD": "rejected",
                    "DELETED": "failed",
                    "EXPIRED": "expired",
                    "UNKNOWN": "unconfirmed",
                }
            ),
        ),
        "mesms": Flavor(
            initial="pending",
            intermediate=None,
            delivered="success",
            failures=("failed", "invalid", "blocked", "expired", "timeout"),
            direct=frozenset(),
            canonical=MappingProxyType(
                {
                    "pending": "queued",
                    "success": "delivered",
                    "failed": "undelivered",
                    "invalid": "rejected",
                    "blocked": "rejected",
                    "expired": "expired",
                    "timeout": "unconfirmed",
                }
            ),
        ),
        "standard": Flavor(
            initial="queued",
            intermediate="sent",
            delivered="delivered",
            failures=("undelivered", "failed", "expired", "rejected"),
            direct=frozenset({"rejected", "canceled"}),
            canonical=MappingProxyType({s: s for s in _CANONICAL_STATUSES}),
        ),
    }
)

# Carrier error codes a failed message carries, per provider (delivered ones carry none).
ERROR_CODES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "twilio": ("30003", "30005", "30006", "30007", "30008"),
        "telecom23": ("001", "005", "011", "034", "069"),
        "mesms": ("PHONE_OFF", "NO_SIGNAL", "INVALID_NUMBER", "BLOCKLISTED", "NO_REPORT"),
        "standard": ("E100", "E200", "E300"),
    }
)
DELIVERED_CODE = {"telecom23": "000"}


@dataclass
class Realism:
    """How untidy the callbacks are. Probabilities are per message unless said otherwise."""

    duplicate: float = 0.0  # per push: delivered a second time (same delivery id)
    reorder: float = 0.0  # the message's pushes go out in a shuffled order
    late_sent: float = 0.0  # the non-final status is pushed again after the final one
    drop_all: float = 0.0  # no callback at all for the message
    drop_final: float = 0.0  # the final callback never comes
    delay: tuple[float, float] = (0.0, 2.0)  # simulated seconds from status change to push
    delivered: float = 0.9  # share of messages that end delivered; failures share the rest


@dataclass
class Timing:
    """Simulated seconds between a message's status changes."""

    sent_after: tuple[float, float] = (0.5, 3.0)
    final_after: tuple[float, float] = (1.0, 30.0)


@dataclass(frozen=True)
class Push:
    """One callback the provider will deliver (retries of it keep its delivery_id)."""

    status: str
    due: float  # simulated unix time
    delivery_id: str
    kind: PushKind = "normal"
    order: int = 0  # position in the plan before any reordering


@dataclass
class SimMessage:
    """A message the simulator 'sent': its timeline, its plan, and what became of the pushes."""

    provider: str  # twilio, telecom23, mesms or standard
    message_id: str  # the id the receiver tracks (mesms: "<uuid>:<msisdn>")
    to: str
    sender: str
    created: float
    timeline: list[tuple[float, str]]  # (simulated time, raw status), in order
    error_code: str | None
    plan: list[Push]
    flavor_name: str  # whose raw statuses the timeline uses (a standard source may borrow one)
    body: str = "simulated message"
    source: str | None = None  # standard: the source name
    status_provider: str | None = None  # standard: raw statuses of this provider
    send_id: str | None = None  # mesms: the send's uuid
    callback_url: str | None = None  # per-message callback (Twilio's StatusCallback)
    account: str | None = None  # twilio: the account SID it was sent from
    dropped: str | None = None  # "all", "final" or None
    late_sent: bool = False
    reordered: bool = False
    duplicates: int = 0
    delivered: list[str] = field(default_factory=list)  # statuses acknowledged with 2xx
    attempts: int = 0
    gave_up: int = 0
    status_requests: int = 0  # status-endpoint requests that reached this message
    polls_in_flight: int = 0
    max_concurrent_polls: int = 0  # most status requests for it in progress at once
    # One segment of a multipart (concatenated) message: its number (from 1), how many the
    # message has, and the first segment's id, which names the message; each segment's fate
    # is its own.
    segment: int = 1
    segments: int = 1
    first_segment: str | None = None

    @property
    def flavor(self) -> Flavor:
        return FLAVORS[self.flavor_name]

    @property
    def final(self) -> str:
        return self.timeline[-1][1]

    @property
    def final_at(self) -> float:
        return self.timeline[-1][0]

    def canonical(self, raw: str) -> str:
        return self.flavor.canonical[raw]

    def status_at(self, now: float) -> tuple[float, str]:
        """(when it changed, raw status) as of simulated time `now`."""
        current = self.timeline[0]
        for entry in self.timeline:
            if entry[0] > now:
                break
            current = entry
        return current

    def error_at(self, now: float) -> str | None:
        raw = self.status_at(now)[1]
        if raw == self.flavor.delivered:
            return DELIVERED_CODE.get(self.flavor_name)
        return self.error_code if raw == self.final and raw in self.flavor.failures else None

    def as_json(self, now: float) -> dict[str, Any]:
        current = self.status_at(now)[1]
        return {
            "provider": self.provider,
            "message_id": self.message_id,
            "source": self.source,
            "status_provider": self.status_provider,
            "send_id": self.send_id,
            "account": self.account,
            "to": self.to,
            "from": self.sender,
            "created_at": iso(self.created),
            "final": {
                "provider_status": self.final,
                "status": self.canonical(self.final),
                "at": iso(self.final_at),
                "error_code": self.error_code if self.final in self.flavor.failures else None,
            },
            "current": {"provider_status": current, "status": self.canonical(current)},
            "timeline": [{"at": iso(t), "provider_status": s} for t, s in self.timeline],
            "plan": [
                {"provider_status": p.status, "kind": p.kind, "order": p.order} for p in self.plan
            ],
            "dropped": self.dropped,
            "late_sent": self.late_sent,
            "reordered": self.reordered,
            "duplicates": self.duplicates,
            "delivered": self.delivered,
            "attempts": self.attempts,
            "gave_up": self.gave_up,
            "status_requests": self.status_requests,
            "max_concurrent_polls": self.max_concurrent_polls,
            **(
                {
                    "segment": self.segment,
                    "segments": self.segments,
                    "first_segment": self.first_segment,
                }
                if self.segments > 1
                else {}
            ),
        }


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def hex_id(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def choose_final(
    rng: random.Random, flavor: Flavor, realism: Realism, outcomes: Mapping[str, float] | None
) -> str:
    if outcomes:
        statuses = list(outcomes)
        return rng.choices(statuses, weights=[outcomes[s] for s in statuses])[0]
    if rng.random() < realism.delivered:
        return flavor.delivered
    return rng.choice(flavor.failures)


def plan_timeline(
    rng: random.Random, flavor: Flavor, created: float, final: str, timing: Timing
) -> list[tuple[float, str]]:
    timeline = [(created, flavor.initial)]
    if final == flavor.initial:
        return timeline
    t = created
    if flavor.intermediate and final not in flavor.direct:
        t += rng.uniform(*timing.sent_after)
        timeline.append((t, flavor.intermediate))
        if final == flavor.intermediate:
            return timeline
    t += rng.uniform(*timing.final_after)
    timeline.append((t, final))
    return timeline


def plan_pushes(
    rng: random.Random, message: SimMessage, realism: Realism
) -> tuple[list[Push], dict[str, Any]]:
    """The callbacks for a message's timeline, untidied as `realism` says."""
    flavor = message.flavor
    changes = message.timeline[1:]  # the initial status is the send's answer, never pushed

    def push(at: float, status: str, kind: PushKind = "normal") -> Push:
        return Push(status, at + rng.uniform(*realism.delay), "msg_" + hex_id(rng, 24), kind)

    pushes = [push(at, status) for at, status in changes]
    drop_all = rng.random() < realism.drop_all
    drop_final = rng.random() < realism.drop_final
    late = rng.random() < realism.late_sent
    reorder = rng.random() < realism.reorder
    dropped: str | None = None
    if drop_all and pushes:
        pushes, dropped = [], "all"
    elif drop_final and pushes and message.final in flavor.final_candidates():
        pushes, dropped = pushes[:-1], "final"
    non_final = flavor.intermediate or flavor.initial
    late_sent = late and dropped is None and bool(pushes) and message.final != non_final
    if late_sent:
        pushes.append(push(pushes[-1].due, non_final, "late"))
    planned: list[Push] = []
    duplicates = 0
    for p in pushes:
        planned.append(p)
        if rng.random() < realism.duplicate:
            planned.append(
                Push(p.status, p.due + rng.uniform(*realism.delay), p.delivery_id, "duplicate")
            )
            duplicates += 1
    planned = [dataclasses.replace(p, order=i) for i, p in enumerate(planned)]
    reordered = False
    if reorder and len({p.status for p in planned}) > 1:
        original = [p.status for p in planned]
        rng.shuffle(planned)
        if [p.status for p in planned] == original:
            # Make sure "reordered" means a different order of statuses, not a no-op shuffle.
            i = next(
                i for i in range(len(planned) - 1) if planned[i].status != planned[i + 1].status
            )
            planned[i], planned[i + 1] = planned[i + 1], planned[i]
        reordered = True
    return planned, {
        "dropped": dropped,
        "late_sent": late_sent,
        "reordered": reordered,
        "duplicates": duplicates,
    }


class Clock:
    """Simulated unix time: wall-clock time at start, then running `speed` times as fast."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._sim0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._sim0 + (time.monotonic() - self._mono0) * self.speed

    def set_speed(self, speed: float) -> None:
        self._sim0, self._mono0 = self.now(), time.monotonic()
        self.speed = speed

    def real_seconds(self, sim_seconds: float) -> float:
        return max(0.0, sim_seconds / self.speed)


def status_time(message: SimMessage, status: str) -> float:
    """When the message reached `status` (a late push re-reports an earlier change)."""
    return next((t for t, s in message.timeline if s == status), message.final_at)
